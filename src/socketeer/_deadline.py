"""One deadline per public call (STYLE R7).

A ``timeout`` in socketeer budgets the whole call, not each system call inside
it: ``recv_line(timeout=2)`` fails after two seconds even if the peer trickles
one byte a second.
"""

from __future__ import annotations

import time

from .errors import Timeout


class Deadline:
    """A point in monotonic time after which an operation has failed."""

    __slots__ = ("_at", "_seconds")

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {seconds!r}")
        self._seconds = seconds
        self._at = None if seconds is None else time.monotonic() + seconds

    @property
    def seconds(self) -> float | None:
        return self._seconds

    def remaining(self) -> float | None:
        """Seconds left (None = no limit).

        Raises:
            Timeout: the deadline has passed.
        """
        if self._at is None:
            return None
        left = self._at - time.monotonic()
        if left <= 0:
            raise Timeout(f"timed out after {self._seconds:g}s")
        return left

    def expired(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at
