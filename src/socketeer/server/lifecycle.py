"""The stop request every runner shares: a flag set, and a socketpair that wakes loops.

Loops never poll to notice a stop: signals, ``Server.shutdown()`` and a
connection that ends during shutdown all write a byte to the stopper's
socketpair, which every waiting loop has registered.

Three levels:

- ``accepting`` ends when no more clients are wanted: a stop was asked for,
  or a ``once`` server has its one client;
- ``stopping`` (SIGTERM, the first SIGINT, ``shutdown()``) starts the grace
  period: open connections get ``grace`` seconds to finish;
- ``forced`` (a second SIGINT, ``shutdown(now=True)``) cuts them at once.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

__all__ = ["Stopper", "settle", "wait_until"]


class Stopper:
    """The stop request: flags plus a socketpair that wakes whatever loop waits."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self.stopping = False  # graceful: stop accepting, let connections finish
        self.forced = False  # now: close everything
        self.enough_clients = False  # a once server has its client
        self._previous: dict[int, Any] = {}
        self._previous_wakeup: int | None = None  # the wake-up descriptor before ours
        self._closed = False

    @property
    def accepting(self) -> bool:
        """Whether the accept loop should go on."""
        return not (self.stopping or self.enough_clients)

    def requested(self) -> bool:
        """Whether a stop was asked for (a call, so loops re-read it)."""
        return self.stopping

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # a full socketpair is already a wake-up
            self._writer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass

    def wait(self, timeout: float | None = None) -> None:
        """Block until woken (a signal, a stop, a child's exit) or ``timeout``."""
        import select

        select.select([self._reader], [], [], timeout)
        self.drain()

    def stop(self, forced: bool = False) -> None:
        if self.stopping and not forced:
            return
        self.forced = self.forced or forced
        self.stopping = True
        self.wake()

    def stop_accepting(self) -> None:
        """No more clients, but no grace period either (``once``: the one client runs on)."""
        self.enough_clients = True
        self.wake()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # First SIGTERM/SIGINT: graceful. A second SIGINT: at once.
        self.stop(forced=self.stopping and signum == signal.SIGINT)

    def install_signals(self, extra: Iterable[int] = ()) -> None:
        """Route SIGTERM and SIGINT (and ``extra``, e.g. SIGCHLD) here; main thread only.

        The kernel may deliver a signal to any thread, and Python runs the
        handler only in the main thread, once it runs again: a main thread
        asleep in ``select`` while a worker thread took the signal would sleep
        on. So the socketpair is also the wake-up descriptor, which the C
        handler writes in whatever thread the signal landed, waking the loop,
        which then runs the handler.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_wakeup = signal.set_wakeup_fd(
            self._writer.fileno(), warn_on_full_buffer=False
        )
        for main_signal in (signal.SIGTERM, signal.SIGINT):
            self._previous[main_signal] = signal.signal(main_signal, self._on_signal)
        for signum in extra:
            self._previous[signum] = signal.signal(signum, lambda s, f: self.wake())

    def restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._previous_wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._previous_wakeup = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.restore_signals()
        self._reader.close()
        self._writer.close()


def _wait(done: Callable[[], bool], stopper: Stopper, deadline: Callable[[], float | None]) -> bool:
    """Wait until ``done()``, waking on the stopper, until ``deadline()`` (monotonic; None:
    no limit yet) or a forced stop; True if it held."""
    with selectors.DefaultSelector() as selector:
        selector.register(stopper.fileno(), selectors.EVENT_READ)
        while not done():
            if stopper.forced:
                return done()
            at = deadline()
            left = None if at is None else at - time.monotonic()
            if left is not None and left <= 0:
                return done()
            selector.select(left)  # whoever changes ``done`` wakes the stopper
            stopper.drain()
    return True


def wait_until(predicate: Callable[[], bool], seconds: float, stopper: Stopper) -> bool:
    """Wait up to ``seconds`` for ``predicate``, waking on the stopper; True if it held."""
    at = time.monotonic() + seconds
    return _wait(predicate, stopper, lambda: at)


def settle(finished: Callable[[], bool], grace: float, stopper: Stopper) -> bool:
    """Wait for the open connections to end: without limit until a stop is asked for
    (``once``), then for ``grace`` seconds; a forced stop ends the wait. True if they ended.
    """
    grace_ends: list[float] = []  # set when the stop is first seen

    def deadline() -> float | None:
        if not stopper.stopping:
            return None
        if not grace_ends:
            grace_ends.append(time.monotonic() + grace)
        return grace_ends[0]

    return _wait(finished, stopper, deadline)
