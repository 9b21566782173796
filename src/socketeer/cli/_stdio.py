"""Standard input and output as the CLI uses them: raw bytes, no buffering surprises."""

from __future__ import annotations

import os
import select

READ_SIZE = 65536


def read_stdin(fd: int = 0) -> bytes:
    """One read from stdin (b"" at EOF, also when stdin is closed)."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return _retry_read(fd)
    except OSError:
        return b""  # stdin closed (EBADF) or unreadable: nothing more will come


def _retry_read(fd: int) -> bytes:
    select.select([fd], [], [])
    return read_stdin(fd)


def write_stdout(data: bytes | memoryview, fd: int = 1) -> None:
    """Write all of ``data`` to stdout, waiting if it was left non-blocking by someone.

    Raises:
        BrokenPipeError: the reader of stdout went away.
    """
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


def to_crlf(data: bytes, after_cr: bool) -> tuple[bytes, bool]:
    """LF line ends as CRLF (``ncat -C``), leaving existing CRLF alone.

    ``after_cr`` says the previous chunk ended in CR, so a leading LF is
    already half of a CRLF. Returns the data and whether it ends in CR.
    """
    if not data:
        return data, after_cr
    out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if after_cr and data.startswith(b"\n"):
        out = out[1:]
    return out, data.endswith(b"\r")
