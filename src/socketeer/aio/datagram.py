"""``aio.DatagramEndpoint``: the asyncio twin of ``socketeer.DatagramEndpoint``."""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import TYPE_CHECKING, Any, final

from .._deadline import Deadline
from .._resource import AsyncResource
from .._sockio import SocketFile, address_of, error_for, resolve, translate_errors
from ..address import Address
from ..datagram import open_datagram as open_blocking
from ..errors import UsageError
from .connection import _wait

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._sockopts import Membership

__all__ = ["DatagramEndpoint", "open_datagram"]

# Datagrams waiting for recv(); beyond this the oldest are dropped, as a full
# socket buffer would drop them.
QUEUE_LIMIT = 1024


async def open_datagram(
    address: str | Address | None = None,
    *,
    bind: str | Address | None = None,
    timeout: float | None = None,
    bind_device: str | None = None,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    ttl: int | None = None,
    hop_limit: int | None = None,
    ipv6_only: bool | None = None,
    broadcast: bool = False,
    join: Iterable[str | Membership] | str | Membership = (),
    multicast_ttl: int | None = None,
    multicast_loop: bool | None = None,
) -> DatagramEndpoint:
    """As ``socketeer.open_datagram`` (the same socket options), on the running loop."""
    blocking = open_blocking(
        address,
        bind=bind,
        timeout=timeout,
        bind_device=bind_device,
        rcvbuf=rcvbuf,
        sndbuf=sndbuf,
        ttl=ttl,
        hop_limit=hop_limit,
        ipv6_only=ipv6_only,
        broadcast=broadcast,
        join=join,
        multicast_ttl=multicast_ttl,
        multicast_loop=multicast_loop,
    )
    loop = asyncio.get_running_loop()
    local, peer, like = blocking.local, blocking.peer, blocking.like
    sock, socket_file = blocking.detach()
    sock.setblocking(False)
    transport, protocol = await loop.create_datagram_endpoint(_DatagramProtocol, sock=sock)
    return DatagramEndpoint(
        transport,
        protocol,
        local=local,
        peer=peer,
        like=like,
        socket_file=socket_file,
        timeout=timeout,
        sock=sock,
    )


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: collections.deque[tuple[bytes, Any]] = collections.deque(maxlen=QUEUE_LIMIT)
        self.error: OSError | None = None
        self.waiter: asyncio.Future[None] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.append((data, addr))
        self._wake()

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


@final
class DatagramEndpoint(AsyncResource):
    """A datagram socket on an event loop."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: _DatagramProtocol,
        *,
        local: Address | None,
        peer: Address | None,
        like: Address,
        socket_file: SocketFile | None,
        timeout: float | None,
        sock: socket.socket,
    ) -> None:
        self._transport = transport
        self._sock = sock
        self._protocol = protocol
        self._like = like
        self._socket_file = socket_file
        self._closed = False
        self.local = local
        self.peer = peer
        self.timeout = timeout

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("I/O on a closed datagram endpoint")

    def _raise_error(self, where: Address | None) -> None:
        error, self._protocol.error = self._protocol.error, None
        if error is not None:
            raise error_for(error, "recv", str(where), None) from error

    async def send(
        self,
        data: bytes | bytearray | memoryview,
        to: str | Address | None = None,
    ) -> None:
        """Send one datagram, to ``to`` or else to the connected peer."""
        self._check_open()
        dest = Address.parse(to) if to is not None else self.peer
        if dest is None:
            raise UsageError("send needs a destination: this endpoint is not connected")
        self._raise_error(dest)
        with translate_errors("send", dest):
            if to is None:
                self._transport.sendto(bytes(data))
            else:
                sockaddr = resolve(dest, passive=False)[0].sockaddr
                try:
                    # Straight to the socket: uvloop mangles abstract Unix addresses.
                    self._sock.sendto(data, sockaddr)
                except BlockingIOError:
                    self._transport.sendto(bytes(data), sockaddr)
        self._raise_error(dest)

    async def recv(self, timeout: float | None = None) -> tuple[bytes, Address | None]:
        """The next datagram and its sender."""
        self._check_open()
        limit = self.timeout if timeout is None else timeout
        deadline = Deadline(limit)
        where = self.peer or self.local
        while not self._protocol.queue:
            self._raise_error(where)
            self._protocol.waiter = asyncio.get_running_loop().create_future()
            with translate_errors("recv", where, limit):
                await _wait(self._protocol.waiter, deadline)
        data, sender = self._protocol.queue.popleft()
        return data, address_of(sender, self._like) if sender else None

    def _release(self) -> None:
        self._transport.close()
        if self._socket_file is not None:
            self._socket_file.remove()
