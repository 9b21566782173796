"""Names for the type checker that cost nothing when the program runs.

``typing`` takes longer to import than all of ``socketeer --version``, and
the client commands use nothing of it at run time; modules on their path
import ``final`` from here and guard every other typing name with
``TYPE_CHECKING``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import final
else:

    def final(cls):  # type: ignore[no-untyped-def]  # the checker sees typing.final
        """``typing.final`` at run time: it only marks the class."""
        return cls


__all__ = ["final"]
