"""One receive buffer behind every "read until" (STYLE R4, after h11's).

``take_*`` return ``None`` while the data is incomplete; the caller reads more
and asks again. A delimiter search resumes where the last one stopped, so a
line that arrives one byte at a time costs O(n), not O(n²).
"""

from __future__ import annotations

from .errors import FrameTooLarge


class ReceiveBuffer:
    """Bytes received but not yet handed to the application."""

    __slots__ = ("_data", "_scan_delim", "_scan_from")

    def __init__(self) -> None:
        self._data = bytearray()
        self._scan_delim = b""
        self._scan_from = 0

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._data += data

    def unread(self, data: bytes | bytearray | memoryview) -> None:
        """Put ``data`` back in front: bytes a caller read past what it wanted."""
        self._data[:0] = data
        self._scan_from = 0

    def _consume(self, n: int) -> bytes:
        out = bytes(self._data[:n])
        del self._data[:n]  # CPython moves a start offset: cheap for a prefix
        self._scan_from = 0
        return out

    def peek(self, n: int) -> bytes | None:
        """The first ``n`` bytes without consuming them, or None if fewer are here."""
        if len(self._data) < n:
            return None
        return bytes(self._data[:n])

    def discard(self, n: int) -> None:
        self._consume(min(n, len(self._data)))

    def take_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of whatever is buffered (b"" when empty)."""
        return self._consume(min(max_bytes, len(self._data)))

    def take_all(self) -> bytes:
        return self._consume(len(self._data))

    def take_exactly(self, n: int) -> bytes | None:
        if len(self._data) < n:
            return None
        return self._consume(n)

    def take_until(self, delimiter: bytes, max_bytes: int) -> bytes | None:
        """Everything up to and including ``delimiter``, or None if it has not arrived.

        Raises:
            FrameTooLarge: ``max_bytes`` are buffered (or the delimiter ends past
                them) and the delimiter does not end within them.
        """
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        start = self._scan_from if delimiter == self._scan_delim else 0
        found = self._data.find(delimiter, start)
        if found < 0:
            if len(self._data) >= max_bytes:
                raise FrameTooLarge(f"no {delimiter!r} within {max_bytes} bytes (the limit)")
            # Resume next time just before the end, where a split delimiter may start.
            self._scan_delim = delimiter
            self._scan_from = max(0, len(self._data) - len(delimiter) + 1)
            return None
        end = found + len(delimiter)
        if end > max_bytes:
            raise FrameTooLarge(f"no {delimiter!r} within {max_bytes} bytes (the limit)")
        return self._consume(end)
