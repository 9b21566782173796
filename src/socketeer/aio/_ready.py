"""Waiting on the loop for one descriptor to become readable or writable.

For code that drives a raw non-blocking socket itself (a connect in progress,
a stepped TLS handshake, the relay's set-up): one future, one reader or
writer callback, removed again however the wait ends.
"""

from __future__ import annotations

import asyncio
import time

from ..errors import Timeout

__all__ = ["fd_ready"]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def fd_ready(fd: int, *, write: bool = False, deadline: float | None = None) -> None:
    """Wait until ``fd`` is readable (or writable).

    Raises:
        Timeout: ``deadline`` (``time.monotonic()``) came first.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    if write:
        loop.add_writer(fd, _wake, waiter)
    else:
        loop.add_reader(fd, _wake, waiter)
    try:
        if deadline is None:
            await waiter
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("timed out")
        try:
            await asyncio.wait_for(waiter, left)
        except (asyncio.TimeoutError, TimeoutError):
            raise Timeout("timed out") from None
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
