"""``socketeer COMMAND ...``: dispatch, and the one place errors are reported.

Each command lives in its own module, imported only when it runs, and the
parser (``parser``) only when there is a command line to parse: ``socketeer
--version`` imports neither. Every failure ends here as one line,
``socketeer: error: WHAT: DETAIL``, and the error's exit code (SPEC §5);
``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys

from .. import __version__
from ..errors import SocketeerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks clean up."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failure, 2 usage, 130 SIGINT)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == ["--version"]:  # the common question, answered without argparse
        print(f"socketeer {__version__}")
        return 0
    debug = "--debug" in args_list
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from .parser import COMMANDS, build_parser

        # The command is the first word that is not an option: build its options
        # alone; none (``socketeer --help``) builds none; an unknown word builds
        # everything, for argparse's own message.
        named = next((word for word in args_list if not word.startswith("-")), "")
        only = named if named in COMMANDS or not named else None
        args = build_parser(only).parse_args(args_list)
        if args.command == "connect":
            from .connect import run
        elif args.command == "listen":
            from .listen import run
        elif args.command == "serve":
            from .serve import run
        elif args.command == "bench":
            from .bench import run
        elif args.command == "completion":
            from .completion import run
        else:
            from .relay import run
        return int(run(args))
    except SocketeerError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"socketeer: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED
    except BrokenPipeError:
        # stdout went away (`socketeer connect ... | head`): nothing left to do.
        _silence_stdout()
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass
