"""A listening stream socket: bind, listen, accept (SPEC §2)."""

from __future__ import annotations

import errno
import socket
import sys

from ._deadline import Deadline
from ._resource import SocketResource, discard
from ._sockio import (
    SocketFile,
    bound_socket,
    error_for,
    local_address,
    scheme_for,
    set_nodelay,
    translate_errors,
)
from ._sockopts import SocketOptions
from ._sockopts import apply as apply_options
from ._static import final
from ._tlsopt import server_context_for
from .address import Address
from .connection import Connection
from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._sockopts import Keepalive

__all__ = ["Listener", "listen"]

# accept() failures that concern only the one client that went away before we
# took it; the listener itself is fine (trio, socketserver do the same).
RETRY_ACCEPT_ERRNOS = frozenset(
    code
    for code in (
        getattr(errno, name, None)
        for name in (
            "ECONNABORTED",
            "EPROTO",
            "EPERM",
            "ENOPROTOOPT",
            "EHOSTUNREACH",
            "ENETUNREACH",
            "EOPNOTSUPP",
            "ENONET",
            "EINTR",
        )
    )
    if code is not None
)


# Linux gives an accepted socket blocking mode whatever the listener's; BSD and
# macOS copy the listener's O_NONBLOCK, which Python's socket object would not know.
_INHERITS_NONBLOCK = not sys.platform.startswith("linux")


def listen(
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
    """Bind and listen on a stream address; port 0 picks a free port.

    A Unix socket file left by a dead server is replaced; ``unix_mode`` sets
    the file's permissions. ``fd:N`` (or ``systemd:``) adopts an inherited
    listening socket.

    The socket options (as ``connect``'s, plus ``ipv6_only``: ``[::]`` and
    ``:PORT`` are dual-stack unless it is true) are set on the listening
    socket before it binds; accepted connections inherit them from it, so
    keepalive costs nothing per client.

    Raises:
        AddressError: a malformed or non-stream address.
        AddressInUse: the port is taken, or a live server listens on the path.
        UsageError, NetworkError: an option that does not fit, or that the system refused.
    """
    target = Address.parse(address)
    if not target.is_stream:
        raise UsageError(f"listen needs a stream address, not {target} (see open_datagram)")
    options = SocketOptions.of(
        keepalive=keepalive,
        bind_device=bind_device,
        rcvbuf=rcvbuf,
        sndbuf=sndbuf,
        ttl=ttl,
        hop_limit=hop_limit,
        ipv6_only=ipv6_only,
    )
    context = server_context_for(target, tls)
    if target.scheme == "fd":
        # An inherited socket (systemd, a parent): TLS wraps it like any other.
        with translate_errors("adopt", target):
            sock = socket.socket(fileno=target.fd)
        try:
            apply_options(sock, options.without("ipv6_only"))  # bound already: too late for it
        except BaseException:
            sock.detach()  # not ours to close on a usage error
            raise
        listener = Listener(sock)
        listener.tls_context = context
        return listener
    sock, socket_file = bound_socket(
        target, reuse_port=reuse_port, unix_mode=unix_mode, options=options
    )
    try:
        with translate_errors("listen", target):
            sock.listen(backlog)
        listener = Listener(sock, address=target, socket_file=socket_file)
        listener.tls_context = context
        return listener
    except BaseException:
        discard(sock, socket_file)
        raise


@final
class Listener(SocketResource):
    """A socket that accepts stream connections.

    ``address`` is the bound address with the real port, ready to print or to
    pass to ``connect``.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        address: Address | None = None,
        socket_file: SocketFile | None = None,
    ) -> None:
        self._sock = sock
        self._like = address or scheme_for(sock)
        self._socket_file = socket_file
        self._closed = False
        self.tls_context: Any = None  # an ssl.SSLContext: accept() runs the handshake
        bound = local_address(sock, self._like)
        self.address: Address = bound if bound is not None else self._like

    @classmethod
    def from_socket(cls, sock: socket.socket) -> Listener:
        """Wrap a socket that is already listening (systemd, a test, another library)."""
        return cls(sock)

    def __repr__(self) -> str:
        return f"<Listener {'closed' if self._closed else self.address}>"

    def accept(self, timeout: float | None = None, *, handshake: bool = True) -> Connection:
        """Wait for the next client (and, on TLS, run the handshake).

        ``handshake=False`` leaves a TLS handshake to ``Connection.start_tls``,
        so a server's accept loop never waits on a slow client's handshake.

        Raises:
            Timeout: none came within ``timeout``.
            TLSError: the client's TLS handshake failed.
        """
        if self._closed:
            raise UsageError("accept on a closed listener")
        deadline = Deadline(timeout)
        while True:
            try:
                with translate_errors("accept", self.address, timeout):
                    # timeout=0 polls: take a waiting client or fail at once.
                    # Set only when it changes: each settimeout is a system call.
                    mode = 0.0 if timeout == 0 else deadline.remaining()
                    if self._sock.gettimeout() != mode:  # no system call to read it
                        self._sock.settimeout(mode)
                    sock, peername = self._sock.accept()
            except OSError as exc:
                if exc.errno in RETRY_ACCEPT_ERRNOS:
                    continue
                raise
            conn = self._connection(sock, peername)
            if self.tls_context is not None and handshake:
                conn.start_tls(self.tls_context)
            return conn

    def accept_waiting(self) -> Connection | None:
        """The next client if one is waiting, else None; never blocks, no TLS handshake.

        A server's accept loop calls this once its selector says the socket is
        readable: no deadline to keep, so none is made (connections per second).

        Raises:
            NetworkError: accept failed for a reason other than a vanished client
                (out of descriptors: ``errno`` says which).
        """
        if self._closed:
            raise UsageError("accept on a closed listener")
        sock = self._sock
        if sock.gettimeout() != 0.0:
            sock.setblocking(False)
        while True:
            try:
                client, peername = sock.accept()
            except (BlockingIOError, InterruptedError):
                return None  # another worker took it, or it went away
            except OSError as exc:
                if exc.errno in RETRY_ACCEPT_ERRNOS:
                    continue
                raise error_for(exc, "accept", str(self.address), None) from exc
            return self._connection(client, peername)

    def _connection(self, sock: socket.socket, peername: Any) -> Connection:
        if _INHERITS_NONBLOCK:
            sock.settimeout(None)  # BSD accept() copies O_NONBLOCK from the listener
        set_nodelay(sock)
        return Connection(sock, address=self._like, peername=peername)
