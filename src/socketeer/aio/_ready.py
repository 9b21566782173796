"""Waiting on the loop for one descriptor to become readable or writable.

For code that drives a raw non-blocking socket itself (a connect in progress,
a stepped TLS handshake, the relay's set-up): one future, one reader or
writer callback, removed again however the wait ends.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .._flow import would_block
from ..errors import Timeout

__all__ = ["fd_ready", "handshake", "send_all"]


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


async def send_all(sock: Any, data: bytes | memoryview) -> None:
    """All of ``data`` into a non-blocking socket (plain or TLS), waiting when it is full.

    Raises:
        OSError: as ``send`` does (the caller names where).
    """
    view = memoryview(data)
    blocked = would_block()
    fd = sock.fileno()
    while view:
        try:
            sent = sock.send(view)
        except blocked:
            await fd_ready(fd, write=True)
            continue
        view = view[sent:]


async def handshake(stepped: Any) -> None:
    """Drive a ``tls.SteppedHandshake`` on the loop until it is done.

    Raises:
        TLSError: the handshake failed. Timeout: its deadline passed (socket closed).
    """
    fd = stepped.sock.fileno()
    while not stepped.step():
        try:
            await fd_ready(fd, write=stepped.wants_write, deadline=stepped.deadline)
        except Timeout:
            raise stepped.expire() from None
