"""What a server handler is: one object that knows how to serve each kind of socket.

A handler serves a stream connection with ``serve`` (thread and fork models,
a blocking ``Connection``) and ``serve_async`` (async model, an
``aio.Connection``), and a datagram with ``datagram``. ``check`` rejects, at
start-up and with a clear message, a model or socket kind it cannot serve.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..address import Address
from ..errors import UsageError

if TYPE_CHECKING:
    from ..aio import Connection as AsyncConnection
    from ..connection import Connection
    from ..datagram import DatagramEndpoint

MODELS = ("fork", "thread", "async")


class Handler:
    """Base class: override what the handler supports."""

    name = "handler"
    #: Models this handler can run under.
    models: tuple[str, ...] = MODELS
    #: Whether it serves datagram sockets.
    datagrams = False
    #: Whether its connections share state, so all must live in one process.
    shared_state = False
    #: Whether it hands the socket itself to someone else (exec): the async
    #: model must then not read a byte from it.
    takes_socket = False

    def check(self, *, model: str, workers: int, datagram: bool) -> None:
        """Raise ``UsageError`` if this handler cannot serve that configuration."""
        if datagram and not self.datagrams:
            raise UsageError(f"handler {self.name} does not serve datagram sockets")
        if model not in self.models:
            supported = " or ".join(self.models)
            raise UsageError(f"handler {self.name} needs the {supported} model, not {model}")
        if self.shared_state and workers != 1:
            raise UsageError(
                f"handler {self.name} shares state between connections: it needs workers=1"
            )

    def configure(self, *, idle_timeout: float | None) -> None:
        """Learn the server's settings that the handler applies itself (a relay's idle timer)."""

    def serve(self, conn: Connection) -> None:
        raise UsageError(f"handler {self.name} cannot run under the thread or fork model")

    async def serve_async(self, conn: AsyncConnection) -> None:
        raise UsageError(f"handler {self.name} cannot run under the async model")

    def datagram(self, data: bytes, sender: Address | None, endpoint: DatagramEndpoint) -> None:
        raise UsageError(f"handler {self.name} does not serve datagram sockets")

    def datagram_reply(self) -> Callable[[memoryview], Any] | None:
        """A function from a datagram to its reply (None: no reply), for the fast path.

        Handlers that need no sender and no endpoint (echo, discard, ack) give
        one, and the datagram server then builds no ``bytes`` and no
        ``Address`` per datagram; None means "call ``datagram`` instead".
        The view is only valid during the call.
        """
        return None

    async def serve_socket_async(
        self, sock: socket.socket, local: Address | None, peer: Address | None
    ) -> None:
        """Serve the raw accepted socket (async model, handlers with ``takes_socket``)."""
        raise UsageError(f"handler {self.name} does not take raw sockets")

    def fast_protocol(self) -> Any:
        """An asyncio protocol class that serves a connection by itself (async model).

        Built-in handlers with no per-connection logic (echo, discard) skip the
        ``aio.Connection`` layer this way; None means "use serve_async".
        """
        return None

    def close(self) -> None:
        """Stop whatever the handler started (programs of ``exec``) at shutdown."""
