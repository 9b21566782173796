"""Idle timeouts for the blocking models: one deadline per connection, one thread per process.

A connection registers once with the time it last moved a byte and what to
do when it has been idle too long. The watcher sleeps until the earliest
deadline, never on a fixed tick: when a deadline comes, a connection that
moved bytes since is simply put back with its new deadline (last activity +
timeout), so a busy connection costs one heap operation per timeout period,
not one per byte, and an idle process wakes no one.

The event loop (async model) does the same with ``loop.call_at``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["IdleWatch", "Watched"]


class Watched(Protocol):
    """What the watcher needs of a connection."""

    @property
    def last_activity(self) -> float: ...  # time.monotonic() of the last byte moved

    @property
    def finished(self) -> bool: ...  # ended by itself: forget it


class IdleWatch:
    """A heap of (deadline, connection) served by one daemon thread, started on first use."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._heap: list[tuple[float, int, Watched, Callable[[], None]]] = []
        self._order = itertools.count()  # ties: never compare connections
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, item: Watched, on_idle: Callable[[], None]) -> None:
        """Call ``on_idle`` once ``item`` has moved no byte for ``timeout`` seconds."""
        deadline = item.last_activity + self.timeout
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="socketeer-idle", daemon=True
                )
                self._thread.start()
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._order), item, on_idle))
            if earliest:
                self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                if not self._heap:
                    self._changed.wait()
                    continue
                deadline, _, item, on_idle = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._changed.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                if item.finished:
                    continue
                due = item.last_activity + self.timeout
                if due > now:  # it moved bytes since: its deadline moved too
                    heapq.heappush(self._heap, (due, next(self._order), item, on_idle))
                    continue
                self._changed.release()
                try:
                    on_idle()
                finally:
                    self._changed.acquire()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._heap.clear()
            self._changed.notify()
