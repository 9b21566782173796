"""Raw copies of a session's traffic: ``-o FILE``, ``--output-in FILE``, ``--output-out FILE``.

``-o`` writes both directions to one file, each chunk as it is sent or
received, in the order that happened (as ``ncat -o`` does): nothing marks
which way a chunk went, so use ``--output-in``/``--output-out`` (or
``--hexdump``) to tell them apart. "Sent" is what socketeer queued for the
peer, after ``--crlf``; "received" is what arrived, ``--send-only`` included.
The files are opened before any connection is made, so a bad path fails
first, as a usage error.
"""

from __future__ import annotations

import os

from ..errors import UsageError
from ._options import SessionOptions


class Capture:
    """The capture files of one command; ``sent``/``received`` are cheap when there are none."""

    def __init__(self, options: SessionOptions) -> None:
        self._both: int | None = None
        self._in: int | None = None
        self._out: int | None = None
        paths = [p for p in (options.output, options.output_in, options.output_out) if p]
        if len(set(map(os.path.abspath, paths))) != len(paths):
            raise UsageError("-o, --output-in and --output-out must name different files")
        try:
            self._both = self._open(options.output, "-o")
            self._in = self._open(options.output_in, "--output-in")
            self._out = self._open(options.output_out, "--output-out")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open(path: str | None, flag: str) -> int | None:
        if not path:
            return None
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UsageError(f"cannot write {flag} file: {path}: {exc.strerror}") from None

    @property
    def active(self) -> bool:
        return self._both is not None or self._in is not None or self._out is not None

    def sent(self, data: bytes | memoryview) -> None:
        self._write(self._out, data)
        self._write(self._both, data)

    def received(self, data: bytes | memoryview) -> None:
        self._write(self._in, data)
        self._write(self._both, data)

    @staticmethod
    def _write(fd: int | None, data: bytes | memoryview) -> None:
        if fd is None:
            return
        from ._stdio import write_stdout

        try:
            write_stdout(data, fd)  # all of it; a regular file never blocks
        except OSError as exc:  # a full disk, a pipe whose reader left
            from ..errors import SocketeerError

            raise SocketeerError(f"cannot write capture file: {exc.strerror}") from None

    def close(self) -> None:
        for name in ("_both", "_in", "_out"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)
