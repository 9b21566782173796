"""Helper threads that leave SIGTERM and SIGINT to the main thread.

The kernel delivers a process signal to any thread that does not block it.
Python runs its handler in the main thread only, and only once that thread
runs again: a main thread asleep in ``select`` on the stopper's socketpair
would sleep on while a copying thread took the signal. So every thread a
joined relay or a tunnel starts blocks them first (threads it starts inherit
the mask), and the signal reaches the one thread that waits for it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["quiet_thread"]

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _quiet(target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    target(*args)


def quiet_thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    """A daemon thread (not started) to run ``target(*args)`` with SIGINT and SIGTERM blocked."""
    return threading.Thread(target=_quiet, args=(target, args), daemon=True)
