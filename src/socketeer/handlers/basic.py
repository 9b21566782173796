"""``echo``, ``discard`` and ``ack`` (the tutorial's server), for streams and datagrams."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._sockio import translate_errors
from ..address import Address
from ..aio._protocol import shared_read_buffer
from .base import Handler

if TYPE_CHECKING:
    from ..aio import Connection as AsyncConnection
    from ..connection import Connection
    from ..datagram import DatagramEndpoint

ACK = b"I got your message\n"


def print_line(text: bytes) -> None:
    """One ``write`` per line: threads and forked children share stdout."""
    os.write(1, text + b"\n")


class Echo(Handler):
    """Sends every byte (or datagram) back."""

    name = "echo"
    datagrams = True

    def serve(self, conn: Connection) -> None:
        # The thread and fork models' fast path: the bare socket, as
        # socketserver would do it. With many threads sharing the GIL every
        # Python call per message shows (0.44x of socketserver at 16
        # connections through Connection.recv/send, 1.0x like this).
        sock = conn.socket
        if sock.gettimeout() != conn.timeout:  # the idle timeout, as Connection applies it
            sock.settimeout(conn.timeout)
        moved = 0
        try:
            with translate_errors("echo", conn.peer or conn.local, conn.timeout):
                if early := conn.take_buffered():  # behind a PROXY header (counted in)
                    sock.sendall(early)
                    conn.bytes_sent += len(early)
                while data := sock.recv(65536):
                    sock.sendall(data)
                    moved += len(data)
        finally:
            conn.bytes_received += moved
            conn.bytes_sent += moved

    async def serve_async(self, conn: AsyncConnection) -> None:
        while data := await conn.recv():
            await conn.send(data)

    def datagram(self, data: bytes, sender: Address | None, endpoint: DatagramEndpoint) -> None:
        if sender is not None:
            endpoint.send(data, to=sender)

    def datagram_reply(self) -> Callable[[memoryview], Any]:
        return _same

    def fast_protocol(self) -> Any:
        return EchoProtocol


class Discard(Handler):
    """Reads and drops."""

    name = "discard"
    datagrams = True

    def serve(self, conn: Connection) -> None:
        sock = conn.socket
        if sock.gettimeout() != conn.timeout:
            sock.settimeout(conn.timeout)
        conn.take_buffered()  # bytes behind a PROXY header: received, counted, dropped
        moved = 0
        try:
            with translate_errors("discard", conn.peer or conn.local, conn.timeout):
                while data := sock.recv(65536):
                    moved += len(data)
        finally:
            conn.bytes_received += moved

    async def serve_async(self, conn: AsyncConnection) -> None:
        while await conn.recv():
            pass

    def datagram(self, data: bytes, sender: Address | None, endpoint: DatagramEndpoint) -> None:
        pass

    def datagram_reply(self) -> Callable[[memoryview], Any]:
        return _nothing

    def fast_protocol(self) -> Any:
        return DiscardProtocol


class Ack(Handler):
    """The tutorial's server: print ``Here is the message: LINE``, answer ``I got your message``."""

    name = "ack"
    datagrams = True

    def serve(self, conn: Connection) -> None:
        for line in conn:
            print_line(b"Here is the message: " + line)
            conn.send(ACK)

    async def serve_async(self, conn: AsyncConnection) -> None:
        async for line in conn:
            print_line(b"Here is the message: " + line)
            await conn.send(ACK)

    def datagram(self, data: bytes, sender: Address | None, endpoint: DatagramEndpoint) -> None:
        print_line(b"Here is the message: " + data.rstrip(b"\r\n"))
        if sender is not None:
            endpoint.send(ACK, to=sender)

    def datagram_reply(self) -> Callable[[memoryview], Any]:
        return _ack


def _same(data: memoryview) -> memoryview:
    return data


def _nothing(data: memoryview) -> None:
    return None


def _ack(data: memoryview) -> bytes:
    print_line(b"Here is the message: " + bytes(data).rstrip(b"\r\n"))
    return ACK


# -- the async model's fast paths: no Connection object, no task per client ----------


class CountingProtocol(asyncio.BufferedProtocol):
    """Receives into one reusable buffer and counts bytes; the server hooks in via ``on_close``."""

    def __init__(self) -> None:
        self._view = shared_read_buffer()
        self.transport: Any = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.last_activity = 0.0
        self.on_close: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def eof_received(self) -> bool:
        return False  # close our side too: nothing more to answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_close is not None:
            self.on_close(self, exc)


class EchoProtocol(CountingProtocol):
    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        self.bytes_sent += nbytes
        self.transport.write(self._view[:nbytes].tobytes())

    # A client that sends and never reads: once what it has not read fills the
    # transport's write buffer, stop reading from it, so it is held by TCP's
    # flow control instead of growing this process without bound.
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class DiscardProtocol(CountingProtocol):
    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
