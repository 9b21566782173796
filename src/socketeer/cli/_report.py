"""What the CLI tells a person on stderr: notices, -v detail, warnings and hex dumps.

stdout carries data only (SPEC §5); everything here goes to stderr or to the
``--hexdump`` file.
"""

from __future__ import annotations

import sys

from ..hexdump import HexDumper
from ._options import OutputOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO


class Reporter:
    """stderr output at the level asked for with -v/-vv/-q."""

    def __init__(self, verbose: int = 0, quiet: bool = False, hexdump: str | None = None) -> None:
        self.verbose = 0 if quiet else verbose
        self.quiet = quiet
        self._dumper = HexDumper() if hexdump else None
        self._dump_file: TextIO | None = None
        if hexdump == "-":
            self._dump_file = sys.stderr
        elif hexdump:
            try:
                self._dump_file = open(hexdump, "w", encoding="ascii")  # noqa: SIM115
            except OSError as exc:
                from ..errors import UsageError

                raise UsageError(f"cannot write hex dump: {hexdump}: {exc.strerror}") from None
        # A relay's pairs dump from their own threads: one chunk's lines stay together.
        self._dump_lock: Any = None
        if self._dumper is not None:
            import threading

            self._dump_lock = threading.Lock()

    @classmethod
    def from_output(cls, output: OutputOptions) -> Reporter:
        return cls(output.verbose, output.quiet, output.hexdump)

    @staticmethod
    def _say(message: str) -> None:
        print(f"socketeer: {message}", file=sys.stderr, flush=True)

    def notice(self, message: str) -> None:
        """Shown unless -q (e.g. ``listening on ADDRESS``)."""
        if not self.quiet:
            self._say(message)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self._say(f"warning: {message}")

    def info(self, message: str) -> None:
        """Shown with -v."""
        if self.verbose >= 1:
            self._say(message)

    def debug(self, message: str) -> None:
        """Shown with -vv."""
        if self.verbose >= 2:
            self._say(message)

    @property
    def dumps(self) -> bool:
        """Whether ``--hexdump`` was asked for."""
        return self._dumper is not None

    def dump(self, data: bytes, marker: str) -> None:
        """Dump one chunk, ``>`` sent (client to TO) or ``<`` received; safe from any thread."""
        if self._dumper is None:
            return
        with self._dump_lock:
            if self._dump_file is not None:
                self._dump_file.write(self._dumper.dump(data, marker))
                self._dump_file.flush()

    def close(self) -> None:
        if self._dump_file is not None and self._dump_file is not sys.stderr:
            self._dump_file.close()
        self._dump_file = None
