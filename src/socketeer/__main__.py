"""``python -m socketeer``: the same as the ``socketeer`` command."""

import sys

from .cli.main import main

sys.exit(main())
