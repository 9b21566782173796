"""Message framing, sans I/O: lines and length-prefixed frames (SPEC §2).

A frame is a 4-byte big-endian length followed by that many bytes of payload.
A line ends with ``\\n``; a ``\\r`` before it is dropped too, so CRLF peers
(telnet, ncat -C) read the same.

The functions work on a ``ReceiveBuffer`` and return ``None`` for "need more
bytes"; the blocking and asyncio connections both sit on them, and
``FrameDecoder``/``LineDecoder`` wrap them for code that feeds bytes by hand.
Limits are enforced here, so every layer gets them.
"""

from __future__ import annotations

import struct

from ._buffer import ReceiveBuffer
from .errors import ConnectionClosed, FrameTooLarge

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "FrameDecoder",
    "LineDecoder",
    "encode_frame",
    "encode_line",
    "strip_eol",
    "take_frame",
    "take_line",
]

HEADER: Final = struct.Struct("!I")
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
DEFAULT_MAX_LINE: Final = 64 * 1024
_MAX_LENGTH: Final = 2**32 - 1


def encode_frame(payload: bytes | bytearray | memoryview, max_size: int = _MAX_LENGTH) -> bytes:
    """The payload with its length header.

    Raises:
        FrameTooLarge: the payload is longer than ``max_size`` (or than 4 GiB - 1).
    """
    size = len(payload)
    if size > min(max_size, _MAX_LENGTH):
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_size}")
    return HEADER.pack(size) + bytes(payload)


def take_frame(buffer: ReceiveBuffer, max_size: int = DEFAULT_MAX_FRAME) -> bytes | None:
    """The next frame's payload, or None until all of it has arrived.

    Raises:
        FrameTooLarge: the header announces more than ``max_size`` bytes; the
            header stays in the buffer, since the stream cannot be resynchronised.
    """
    header = buffer.peek(HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_size}")
    if len(buffer) < HEADER.size + size:
        return None
    buffer.discard(HEADER.size)
    return buffer.take_exactly(size)


def encode_line(line: bytes | str) -> bytes:
    """A line with its newline (``str`` is encoded as UTF-8)."""
    data = line.encode() if isinstance(line, str) else bytes(line)
    return data if data.endswith(b"\n") else data + b"\n"


def strip_eol(line: bytes) -> bytes:
    """The line without its ``\\n`` or ``\\r\\n``."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def take_line(buffer: ReceiveBuffer, max_bytes: int = DEFAULT_MAX_LINE) -> bytes | None:
    """The next line without its end-of-line, or None until it has arrived.

    Raises:
        FrameTooLarge: no newline within ``max_bytes``.
    """
    line = buffer.take_until(b"\n", max_bytes)
    return None if line is None else strip_eol(line)


def closed_error(buffer: ReceiveBuffer, what: str) -> ConnectionClosed:
    """The error for an EOF that arrived while ``what`` was incomplete."""
    partial = buffer.take_all()
    where = f"after {len(partial)} bytes of a {what}" if partial else f"before a {what}"
    return ConnectionClosed(f"connection closed {where}", partial=partial)


class _Decoder:
    def __init__(self) -> None:
        self._buffer = ReceiveBuffer()
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` means the peer closed (EOF)."""
        if self._eof and data:
            raise ValueError("data fed after EOF")
        if not data:
            self._eof = True
        self._buffer.feed(data)

    def _end(self, what: str) -> None:
        if self._eof and self._buffer:
            raise closed_error(self._buffer, what)


class FrameDecoder(_Decoder):
    """Length-prefixed frames from bytes fed in any pieces."""

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__()
        self.max_size = max_size

    def next_frame(self) -> bytes | None:
        """The next payload; None for "need more" (or a clean EOF, see ``at_eof``).

        Raises:
            FrameTooLarge: a header announces more than ``max_size``.
            ConnectionClosed: EOF in the middle of a frame (``partial`` holds it).
        """
        frame = take_frame(self._buffer, self.max_size)
        if frame is None:
            self._end("frame")
        return frame

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buffer


class LineDecoder(_Decoder):
    """Lines (without end-of-line) from bytes fed in any pieces."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_LINE) -> None:
        super().__init__()
        self.max_bytes = max_bytes

    def next_line(self) -> bytes | None:
        """The next line; None for "need more" (or a clean EOF, see ``at_eof``).

        Raises:
            FrameTooLarge: no newline within ``max_bytes``.
            ConnectionClosed: EOF in the middle of a line (``partial`` holds it).
        """
        line = take_line(self._buffer, self.max_bytes)
        if line is None:
            self._end("line")
        return line

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buffer
