"""Child processes of a server (fork-model children, workers): signal them, reap them."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import MutableMapping

__all__ = ["kill_and_reap", "signal_all"]


def signal_all(children: MutableMapping[int, float], signum: int) -> None:
    """Send ``signum`` to every child still listed (one already gone is no error)."""
    for pid in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_and_reap(children: MutableMapping[int, float]) -> None:
    """SIGKILL what is left and wait for each, so no zombie outlives the server."""
    signal_all(children, signal.SIGKILL)
    while children:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            children.clear()
            return
        children.pop(pid, None)
