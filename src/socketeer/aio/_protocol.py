"""The asyncio protocol under ``aio.Connection``: a ``ReceiveBuffer`` and flow control.

The same ``ReceiveBuffer`` and ``framing`` functions as the blocking layer sit
on top, so lines, frames and limits behave identically.
"""

from __future__ import annotations

import asyncio
import threading
from typing import cast

from .._buffer import ReceiveBuffer

READ_CHUNK = 65536
_per_thread = threading.local()


def shared_read_buffer() -> memoryview:
    """One receive area per thread (so per event loop) for every connection on it.

    The loop fills it, and ``buffer_updated`` copies the bytes out before the
    loop can fill it again, so connections need not own 64 KiB each: an idle
    connection then costs little more than its transport.
    """
    view: memoryview | None = getattr(_per_thread, "view", None)
    if view is None:
        view = _per_thread.view = memoryview(bytearray(READ_CHUNK))
    return view


# Stop reading from the socket when this much is buffered and unread; the
# kernel's buffers then fill and TCP slows the sender.
PAUSE_READING_AT = 1 << 20


class StreamProtocol(asyncio.BufferedProtocol):
    """Receives into a buffer and wakes the one reader that waits."""

    def __init__(self) -> None:
        self.buffer = ReceiveBuffer()
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.bytes_received = 0
        self._view = shared_read_buffer()
        self._reader: asyncio.Future[None] | None = None
        self._drainers: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False
        self._closed: asyncio.Future[None] | None = None

    # -- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self._closed = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.buffer.feed(self._view[:nbytes])
        self.bytes_received += nbytes
        if len(self.buffer) >= PAUSE_READING_AT and self.transport is not None:
            self.transport.pause_reading()
            self._read_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return True  # keep the transport open: we may still write (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self._drainers.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self._drainers.clear()

    # -- for the connection ----------------------------------------------------------

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    # Both waiters are made synchronously, before the caller yields to the loop:
    # a callback that runs in between then finds them and wakes them.

    def data_waiter(self) -> asyncio.Future[None] | None:
        """A future done when more bytes, EOF or an error arrive (None: at EOF already)."""
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        if self.eof:
            return None
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_future()
        return self._reader

    def drain_waiter(self) -> asyncio.Future[None] | None:
        """A future done when the transport takes writes again (None: it does now)."""
        if not self._write_paused or self.eof:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._drainers.append(waiter)
        return waiter

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await self._closed
