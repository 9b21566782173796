"""Connecting with the retry policy: the waiting and the log lines ``retry`` leaves out.

Every attempt that fails is logged (a warning: what failed, which attempt,
how long until the next); the last one raises. The wait is a
``threading.Event`` wait, so a relay that is told to stop does not sit out
a long backoff first.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import ConnectError, NetworkError, Timeout
from .retry import RetryPolicy

__all__ = ["dial"]

log = logging.getLogger("socketeer.relay")

T = TypeVar("T")


def dial(
    open_side: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    *,
    stop: threading.Event | None = None,
    draw: Callable[[], float] = random.random,
) -> T | None:
    """``open_side()``, tried again as ``policy`` says; None if ``stop`` was set meanwhile.

    ``what`` starts each log line (empty: the error names its address itself).

    Raises:
        ConnectError: the last attempt failed after retries (the first
            failure is raised as it is when there are none).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return open_side()
        except (NetworkError, Timeout) as exc:
            said = f"{what}: {exc}" if what else str(exc)
            if policy.gives_up_after(attempt):
                if attempt == 1:
                    raise
                log.warning("%s (%s); giving up", said, policy.describe(attempt))
                raise ConnectError(f"gave up after {attempt} attempts: {said}") from exc
            wait = policy.delay_after(attempt, draw())
            log.warning("%s (%s); retrying in %.2fs", said, policy.describe(attempt), wait)
        if stop is None:
            threading.Event().wait(wait)
        elif stop.wait(wait):
            return None
