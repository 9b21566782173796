"""``aio.Listener``: the asyncio twin of ``socketeer.Listener``."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, final

from .._deadline import Deadline
from .._resource import AsyncResource, discard
from .._sockio import SocketFile, translate_errors
from ..address import Address
from ..listener import RETRY_ACCEPT_ERRNOS
from ..listener import listen as listen_blocking
from .connection import Connection, _wait

if TYPE_CHECKING:
    from .._sockopts import Keepalive

__all__ = ["Listener", "listen"]


async def listen(
    address: str | Address,
    *,
    backlog: int = 128,
    reuse_port: bool = False,
    unix_mode: int | None = None,
    tls: object | None = None,
    keepalive: bool | Keepalive | tuple[int, int, int] = False,
    bind_device: str | None = None,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    ttl: int | None = None,
    hop_limit: int | None = None,
    ipv6_only: bool | None = None,
) -> Listener:
    """Bind and listen; as ``socketeer.listen``, the same socket options (binding
    does not block on a literal address).
    """
    blocking = listen_blocking(
        address,
        backlog=backlog,
        reuse_port=reuse_port,
        unix_mode=unix_mode,
        tls=tls,
        keepalive=keepalive,
        bind_device=bind_device,
        rcvbuf=rcvbuf,
        sndbuf=sndbuf,
        ttl=ttl,
        hop_limit=hop_limit,
        ipv6_only=ipv6_only,
    )
    return Listener._adopt(blocking)


@final
class Listener(AsyncResource):
    """A listening socket whose ``accept`` is awaited."""

    def __init__(
        self, sock: socket.socket, address: Address, socket_file: SocketFile | None = None
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._socket_file = socket_file
        self._closed = False
        self.address = address
        self.tls_context: Any = None  # an ssl.SSLContext: accept() runs the handshake

    @classmethod
    def _adopt(cls, blocking: object) -> Listener:
        from ..listener import Listener as BlockingListener

        assert isinstance(blocking, BlockingListener)
        # Take over the socket and its file; the blocking wrapper is dropped.
        address, tls_context = blocking.address, blocking.tls_context
        sock, socket_file = blocking.detach()
        listener = cls(sock, address, socket_file)
        listener.tls_context = tls_context
        return listener

    @classmethod
    def from_socket(cls, sock: socket.socket) -> Listener:
        from ..listener import Listener as BlockingListener

        return cls._adopt(BlockingListener.from_socket(sock))

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    async def accept(self, timeout: float | None = None) -> Connection:
        """Wait for the next client.

        Raises:
            Timeout: none came within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = Deadline(timeout)
        while True:
            try:
                with translate_errors("accept", self.address, timeout):
                    future = asyncio.ensure_future(loop.sock_accept(self._sock))
                    await _wait(future, deadline)
                    sock, _ = future.result()
            except OSError as exc:
                if exc.errno in RETRY_ACCEPT_ERRNOS:
                    continue
                raise
            return await Connection.from_socket(
                sock, address=self.address, tls_server=self.tls_context
            )

    def _release(self) -> None:
        discard(self._sock, self._socket_file)
