"""What every socket-owning object shares: close once, ``closed``, ``with`` / ``async with``."""

from __future__ import annotations

import socket as _socket  # the class below has a `socket` property

from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    from ._sockio import SocketFile

    R = TypeVar("R", bound="Resource")
    A = TypeVar("A", bound="AsyncResource")


class Resource:
    """Closed at most once; a context manager that closes on exit."""

    _closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the socket (and what goes with it); closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:
        raise NotImplementedError

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncResource(Resource):
    """A ``Resource`` that is also an async context manager."""

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class SocketResource(Resource):
    """A ``Resource`` around one socket, perhaps with a socket file to remove on close."""

    _sock: _socket.socket
    _socket_file: SocketFile | None = None
    _kind = "socket"

    @property
    def socket(self) -> _socket.socket:
        """The underlying socket, for options socketeer does not wrap."""
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"I/O on a closed {self._kind}")

    def _release(self) -> None:
        # Close the socket, and remove the socket file this process bound.
        discard(self._sock, self._socket_file)

    def detach(self) -> tuple[_socket.socket, SocketFile | None]:
        """Hand the socket (and its file) to a new owner; this object is closed, they are not.

        Used to move a socket to another layer: the relay's copier, the asyncio
        library.
        """
        self._check_open()
        self._closed = True
        owned, self._socket_file = self._socket_file, None
        return self._sock, owned


def discard(sock: _socket.socket, socket_file: SocketFile | None) -> None:
    """Close a socket and remove its file (also what a failed set-up undoes)."""
    sock.close()
    if socket_file is not None:
        socket_file.remove()
