"""``Server``: a concurrent server in one of three models, with workers (SPEC §4).

The models are strategies, not socketserver's mixin-by-class matrix: the
server binds, checks the handler against the model, and hands the socket to
the runner of its model (``threaded``, ``forking``, ``asynchronous``, or
``datagram`` for datagram sockets). ``workers=N`` puts a supervisor in front
that forks N such runners sharing the socket (``workers``).

Every model runner takes its lifecycle from the same ground-floor modules:
``lifecycle`` (the stop request and the grace period), ``accept`` (the accept
loop and what an accept failure means), ``admission`` (allow/deny and the
connection limit) and ``idle`` (idle deadlines), so a relay (a handler that
opens TO and copies) gets every model, workers, limits and logs for free.

Shutdown is graceful: SIGTERM or SIGINT (or ``shutdown()``) stops accepting at
once, lets open connections finish for up to ``grace`` seconds, then closes
them; a second SIGINT closes everything at once. Loops are woken by a
socketpair, never by polling.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import handlers
from .._sockio import bound_socket, local_address, translate_errors
from .._sockopts import DATAGRAM_OPTIONS, LISTEN_OPTIONS, SocketOptions, join_groups
from .._sockopts import apply as apply_options
from .._tlsopt import server_context_for
from ..address import Address
from ..datagram import DatagramEndpoint, open_datagram
from ..errors import UsageError
from ..handlers.base import MODELS, Handler
from ..listener import Listener, listen
from .admission import Admission
from .lifecycle import Stopper

if TYPE_CHECKING:
    from .._sockopts import Keepalive, Membership

__all__ = ["Server"]

_REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


def _adopt_inherited(address: Address) -> socket.socket:
    """The socket systemd (or any parent) passed as ``fd:N``.

    Raises:
        UsageError: LISTEN_PID names another process, or N is not among LISTEN_FDS.
    """
    pid = os.environ.get("LISTEN_PID")
    count = os.environ.get("LISTEN_FDS")
    if pid is not None and pid != str(os.getpid()):
        raise UsageError(
            f"LISTEN_PID is {pid}, not this process ({os.getpid()}): "
            "the inherited sockets are not for us"
        )
    if count is not None and not 3 <= address.fd < 3 + int(count):
        raise UsageError(f"fd:{address.fd} is not among the {count} inherited sockets (3..)")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # as sd_listen_fds(unset=1): not for our children
    with translate_errors("adopt", address):
        return socket.socket(fileno=address.fd)


class Server:
    """A concurrent server: ``Server(address, handler, model=...)`` then ``serve_forever()``.

    ``handler`` is a built-in name (``"echo"``, ``"ack"``, ...), a ``Handler``
    (a relay is one: ``socketeer.relay``), or a function: ``def f(conn)`` for
    thread/fork, ``async def f(conn)`` for async, ``def f(data, sender,
    endpoint)`` on a datagram socket. The socket is bound at construction, so
    ``server.address`` has the real port. ``once`` serves one client, then
    returns when it is done.

    Socket options are those of ``listen`` and, on a datagram address,
    ``open_datagram``, set on the listening socket. ``keepalive`` is on by
    default (``DEFAULT_KEEPALIVE``: 60 s idle, 10 s interval, 6 probes) so
    idle clients behind a NAT or load balancer keep their mapping and dead
    ones are noticed; accepted sockets inherit it from the listening socket
    in every model, so it costs no system call per client. ``keepalive=False``
    turns it off.

    Raises:
        UsageError: the handler does not fit the model or socket kind, or an
            option does not fit the socket; ``accept_proxy_protocol`` with TLS
            or a handler that takes the socket itself.
        AddressError, AddressInUse: as ``listen``.
    """

    def __init__(
        self,
        address: str | Address,
        handler: str | Handler | Callable[..., Any],
        *,
        model: str = "thread",
        workers: int = 1,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        grace: float = 5.0,
        backlog: int = 1024,
        handler_args: Iterable[str] = (),
        tls: object | None = None,
        once: bool = False,
        keepalive: bool | Keepalive | tuple[int, int, int] = True,
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
        accept_proxy_protocol: bool = False,
    ) -> None:
        if model not in MODELS:
            raise UsageError(f"unknown model {model!r}: use one of {', '.join(MODELS)}")
        if workers < 0:
            raise UsageError("workers must be >= 0 (0 = one per CPU)")
        if once and workers > 1:
            raise UsageError("once serves one client: it needs workers=1")
        self.model = model
        self.workers = workers or os.cpu_count() or 1
        self.admission = Admission(allow, deny, max_connections)
        self.idle_timeout = idle_timeout
        self.grace = grace
        self.backlog = backlog
        self.once = once
        self.handler = handlers.resolve(handler, list(handler_args))
        target = Address.parse(address)
        #: The options set on every socket this server listens on (workers' too).
        self.socket_options = SocketOptions.of(
            keepalive=keepalive,
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
        if target.is_stream and target.scheme != "fd":  # fd:N: known once adopted
            self.socket_options.check_stream(target)
        self.tls_context: Any = server_context_for(target, tls)
        if self.tls_context is not None and self.handler.takes_socket:
            raise UsageError(
                f"handler {self.handler.name} hands the socket to a program: it cannot run over TLS"
            )
        #: Each client starts with a PROXY v1/v2 header naming the real client
        #: (a load balancer in front): read before the handler runs (``proxied``).
        self.accept_proxy_protocol = accept_proxy_protocol
        if accept_proxy_protocol:
            self._check_proxy_protocol(target)
        self.listener: Listener | None = None
        self.endpoint: DatagramEndpoint | None = None
        self.reserved: socket.socket | None = None  # workers + SO_REUSEPORT: holds the port
        self.prepared: list[socket.socket] = []  # sockets for workers not yet started
        self.per_worker_sockets = False  # SO_REUSEPORT: each worker its own socket
        self._bind(target)
        self.datagram = target.is_datagram or self.endpoint is not None
        try:
            if self.datagram and self.tls_context is not None:
                raise UsageError(f"TLS needs a stream socket, not {self.address}")
            self.handler.check(model=model, workers=self.workers, datagram=self.datagram)
            self.handler.configure(idle_timeout=idle_timeout)
        except BaseException:
            self.close()
            raise
        self.stopper = Stopper()

    def _check_proxy_protocol(self, target: Address) -> None:
        """The header is read into a ``Connection``'s buffer: only handlers that read
        through one can take it, and only before any TLS (none here yet)."""
        if not target.is_stream:
            raise UsageError("accept_proxy_protocol needs a stream address")
        if self.tls_context is not None:
            raise UsageError(
                "accept_proxy_protocol with TLS is not supported by serve yet: "
                "terminate TLS in front, or use relay --accept-proxy-protocol"
            )
        if self.handler.takes_socket or getattr(self.handler, "raw_socket", False):
            raise UsageError(
                f"handler {self.handler.name} takes the socket itself: for a PROXY header "
                "in front of a program use relay --accept-proxy-protocol ... exec:PROGRAM"
            )

    def _bind(self, target: Address) -> None:
        options = self.socket_options
        if target.scheme == "fd":
            sock = _adopt_inherited(target)
            try:
                apply_options(sock, options.without("ipv6_only", "join"))  # bound already
                if sock.type == socket.SOCK_DGRAM:
                    join_groups(sock, options)  # joined after the bind, as always
                else:
                    options.check_stream(target)
            except BaseException:
                sock.detach()  # the inherited descriptor is not ours to close
                raise
            if sock.type == socket.SOCK_DGRAM:
                self.endpoint = DatagramEndpoint.from_socket(sock)
                self.address = self.endpoint.local or target
            else:
                self.listener = Listener.from_socket(sock)
                self.listener.tls_context = self.tls_context  # TLS on an inherited socket
                self.address = self.listener.address
            return
        if target.is_datagram and self.workers > 1 and target.is_inet and _REUSE_PORT:
            # A socket per worker in one SO_REUSEPORT group: the kernel hashes
            # senders over them. No socket holds the port without reading it
            # (it would take its share of the datagrams); the workers do.
            first, _ = bound_socket(target, reuse_port=True, options=options)
            bound_at = local_address(first, target)
            assert bound_at is not None
            self.address = bound_at
            self.per_worker_sockets = True
            self.prepared = [first]
            try:
                self.prepared += [self.worker_socket() for _ in range(self.workers - 1)]
            except BaseException:
                self.close()
                raise
            return
        if target.is_datagram:
            self.endpoint = open_datagram(bind=target, **options.kwargs(*DATAGRAM_OPTIONS))
            assert self.endpoint.local is not None
            self.address = self.endpoint.local
            return
        if self.workers > 1 and target.is_inet and _REUSE_PORT:
            # Each worker binds its own socket to the port (the kernel spreads
            # connections evenly); this bound, never-listening socket holds the
            # port for the group while workers come and go.
            self.reserved, _ = bound_socket(target, reuse_port=True, options=options)
            reserved_at = local_address(self.reserved, target)
            assert reserved_at is not None
            self.address = reserved_at
            self.per_worker_sockets = True
            try:
                self.prepared = [self.worker_socket() for _ in range(self.workers)]
            except BaseException:
                self.close()
                raise
            return
        self.listener = listen(
            target,
            backlog=self.backlog,
            tls=self.tls_context,
            **options.kwargs(*LISTEN_OPTIONS),
        )
        self.address = self.listener.address

    def worker_socket(self) -> socket.socket:
        """One worker's socket of the SO_REUSEPORT group on ``address`` (listening, for streams)."""
        sock, _ = bound_socket(self.address, reuse_port=True, options=self.socket_options)
        if self.address.is_datagram:
            return sock
        try:
            with translate_errors("listen", self.address):
                sock.listen(self.backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def adopt_worker_socket(self, sock: socket.socket) -> None:
        """In a worker: serve on its own socket of the group."""
        if self.address.is_datagram:
            self.endpoint = DatagramEndpoint(sock, like=self.address)
        else:
            self.listener = Listener(sock, address=self.address)
            self.listener.tls_context = self.tls_context

    @property
    def max_connections(self) -> int | None:
        return self.admission.max_connections

    @property
    def access(self) -> Any:
        """The allow/deny lists (``socketeer.access.AccessList``)."""
        return self.admission.access

    # -- running ------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT or ``shutdown()`` (or, with ``once``, until the one
        client is done); then stop gracefully and return.
        """
        try:
            if self.workers > 1:
                from .workers import Supervisor

                Supervisor(self).run()
            else:
                self.run_one()
        finally:
            self.close()

    def run_one(self) -> None:
        """Serve in this process with the chosen model (a worker calls this)."""
        if self.endpoint is not None:
            from .datagram import serve_datagrams

            serve_datagrams(self)
        elif self.model == "thread":
            from .threaded import ThreadRunner

            ThreadRunner(self).run()
        elif self.model == "fork":
            from .forking import ForkRunner

            ForkRunner(self).run()
        else:
            from .asynchronous import AsyncRunner

            AsyncRunner(self).run()

    def shutdown(self, *, now: bool = False) -> None:
        """Ask ``serve_forever`` to stop (from another thread or a signal handler)."""
        self.stopper.stop(forced=now)

    def screens(self, open_connections: int) -> bool:
        """Whether the next client must be looked at (lists, the limit, ``once``)."""
        return self.once or self.admission.needs_peer(open_connections)

    def admit(
        self,
        peer: Address | None,
        open_connections: int,
        make_room: Callable[[Address | None], bool] | None = None,
    ) -> bool:
        """Whether to serve this client; logs the reason when not (``admission``)."""
        if self.admission.admit(peer, open_connections, make_room):
            if self.once:
                self.stopper.stop_accepting()  # this is the one
            return True
        return False

    def close(self) -> None:
        """Release the socket (and its file); idempotent."""
        if self.listener is not None:
            self.listener.close()
        if self.endpoint is not None:
            self.endpoint.close()
        if self.reserved is not None:
            self.reserved.close()
        for sock in getattr(self, "prepared", ()):
            sock.close()
        self.prepared = []
        stopper = getattr(self, "stopper", None)
        if stopper is not None:
            stopper.close()
        self.handler.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
