"""``--delay S``: stdin a line at a time, S seconds between lines (``nc -i``).

Pure timing logic, no I/O: the stream and datagram loops feed it what they
read, ask it when the next line is due, and take lines once they are. The
first line goes at once; a last line without a newline goes too, after its
pause, when stdin ends.
"""

from __future__ import annotations

from collections import deque


class LinePacer:
    """Lines of stdin, released no closer together than ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._partial = bytearray()
        self._lines: deque[bytes] = deque()
        self._due = float("-inf")

    def feed(self, data: bytes) -> None:
        """Take bytes read from stdin; complete lines queue up."""
        self._partial += data
        start = 0
        while (end := self._partial.find(b"\n", start)) >= 0:
            self._lines.append(bytes(self._partial[start : end + 1]))
            start = end + 1
        del self._partial[:start]

    def end(self) -> None:
        """stdin ended: an unfinished last line is a line too."""
        if self._partial:
            self._lines.append(bytes(self._partial))
            self._partial.clear()

    @property
    def waiting(self) -> bool:
        """Whether complete lines are queued (stdin need not be read meanwhile)."""
        return bool(self._lines)

    def take(self, now: float) -> bytes | None:
        """The next line if it is due at ``now`` (monotonic seconds), else None."""
        if not self._lines or now < self._due:
            return None
        self._due = now + self._delay
        return self._lines.popleft()

    def wait(self, now: float) -> float | None:
        """Seconds until the next line is due (None: no line queued)."""
        if not self._lines:
            return None
        return max(0.0, self._due - now)
