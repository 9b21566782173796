"""``Server``: a concurrent server in one of three models, with workers (SPEC §4).

The models are strategies, not socketserver's mixin-by-class matrix: the
server binds, checks the handler against the model, and hands the socket to
the runner of its model (``threaded``, ``forking``, ``asynchronous``, or
``datagram`` for datagram sockets). ``workers=N`` puts a supervisor in front
that forks N such runners sharing the socket (``workers``).

Shutdown is graceful: SIGTERM or SIGINT (or ``shutdown()``) stops accepting at
once, lets open connections finish for up to ``grace`` seconds, then closes
them; a second SIGINT closes everything at once. Loops are woken by a
socketpair, never by polling.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from .. import handlers
from .._sockio import translate_errors
from ..access import AccessList
from ..address import Address
from ..datagram import DatagramEndpoint, open_datagram
from ..errors import UsageError
from ..handlers.base import MODELS, Handler
from ..listener import Listener, listen
from . import _log

__all__ = ["Server"]

# accept() failures that mean "out of resources for now": log, back off, retry.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF = 0.1


class Stopper:
    """The stop request: flags plus a socketpair that wakes whatever loop waits."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self.stopping = False  # graceful: stop accepting, let connections finish
        self.forced = False  # now: close everything
        self._previous: dict[int, Any] = {}
        self._closed = False

    def requested(self) -> bool:
        """Whether a stop was asked for (a call, so loops re-read it)."""
        return self.stopping

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe is already a wake-up
            self._writer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass

    def wait(self, timeout: float | None = None) -> None:
        """Block until woken (a signal, a stop, a child's exit) or ``timeout``."""
        import select

        select.select([self._reader], [], [], timeout)
        self.drain()

    def stop(self, forced: bool = False) -> None:
        if self.stopping and not forced:
            return
        self.forced = self.forced or forced
        self.stopping = True
        self.wake()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # First SIGTERM/SIGINT: graceful. A second SIGINT: at once.
        self.stop(forced=self.stopping and signum == signal.SIGINT)

    def install_signals(self, extra: Iterable[int] = ()) -> None:
        """Route SIGTERM and SIGINT (and ``extra``, e.g. SIGCHLD) here; main thread only."""
        if threading.current_thread() is not threading.main_thread():
            return
        for main_signal in (signal.SIGTERM, signal.SIGINT):
            self._previous[main_signal] = signal.signal(main_signal, self._on_signal)
        for signum in extra:
            self._previous[signum] = signal.signal(signum, lambda s, f: self.wake())

    def restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.restore_signals()
        self._reader.close()
        self._writer.close()


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

    ``handler`` is a built-in name (``"echo"``, ``"ack"``, ...), a ``Handler``,
    or a function: ``def f(conn)`` for thread/fork, ``async def f(conn)`` for
    async, ``def f(data, sender, endpoint)`` on a datagram socket. The socket
    is bound at construction, so ``server.address`` has the real port.

    Raises:
        UsageError: the handler does not fit the model or socket kind.
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
    ) -> None:
        if model not in MODELS:
            raise UsageError(f"unknown model {model!r}: use one of {', '.join(MODELS)}")
        if workers < 0:
            raise UsageError("workers must be >= 0 (0 = one per CPU)")
        if max_connections is not None and max_connections < 1:
            raise UsageError("max_connections must be at least 1")
        self.model = model
        self.workers = workers or os.cpu_count() or 1
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.access = AccessList(allow, deny)
        self.grace = grace
        self.backlog = backlog
        self.handler = handlers.resolve(handler, list(handler_args))
        target = Address.parse(address)
        self.tls_context: Any = None
        if target.is_tls or tls not in (None, False):
            import ssl

            from ..tls import TLSConfig, server_context

            self.tls_context = (
                tls
                if isinstance(tls, ssl.SSLContext)
                else server_context(tls if isinstance(tls, TLSConfig) else TLSConfig())
            )
            if self.handler.takes_socket:
                raise UsageError(
                    f"handler {self.handler.name} hands the socket to a program: "
                    "it cannot run over TLS"
                )
        self.listener: Listener | None = None
        self.endpoint: DatagramEndpoint | None = None
        self.reserved: socket.socket | None = None  # workers + SO_REUSEPORT: holds the port
        self._bind(target)
        self.datagram = self.endpoint is not None
        try:
            self.handler.check(model=model, workers=self.workers, datagram=self.datagram)
        except BaseException:
            self.close()
            raise
        self.stopper = Stopper()

    def _bind(self, target: Address) -> None:
        if target.scheme == "fd":
            sock = _adopt_inherited(target)
            if sock.type == socket.SOCK_DGRAM:
                self.endpoint = DatagramEndpoint.from_socket(sock)
                self.address = self.endpoint.local or target
            else:
                self.listener = Listener.from_socket(sock)
                self.address = self.listener.address
            return
        if target.is_datagram:
            self.endpoint = open_datagram(bind=target)
            assert self.endpoint.local is not None
            self.address = self.endpoint.local
            return
        if self.workers > 1 and target.is_inet and hasattr(socket, "SO_REUSEPORT"):
            # Each worker binds its own socket to the port (the kernel spreads
            # connections evenly); this bound, never-listening socket holds the
            # port for the group while workers come and go.
            from .._sockio import bound_socket, local_address

            self.reserved, _ = bound_socket(target, reuse_port=True)
            reserved_at = local_address(self.reserved, target)
            assert reserved_at is not None
            self.address = reserved_at
            return
        self.listener = listen(target, backlog=self.backlog, tls=self.tls_context)
        self.address = self.listener.address

    # -- running ------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT or ``shutdown()``; then stop gracefully and return."""
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

    def admit(self, peer: Address | None, open_connections: int) -> bool:
        """Whether to serve this client; logs the reason when not."""
        if not self.access.permits(peer):
            _log.refused(peer, "denied by --allow/--deny")
            return False
        if self.max_connections is not None and open_connections >= self.max_connections:
            _log.refused(peer, f"{self.max_connections} connections open (max_connections)")
            return False
        return True

    def close(self) -> None:
        """Release the socket (and its file); idempotent."""
        if self.listener is not None:
            self.listener.close()
        if self.endpoint is not None:
            self.endpoint.close()
        if self.reserved is not None:
            self.reserved.close()
        stopper = getattr(self, "stopper", None)
        if stopper is not None:
            stopper.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(predicate: Callable[[], bool], seconds: float, stopper: Stopper) -> bool:
    """Wait up to ``seconds`` for ``predicate``, waking on the stopper; True if it held."""
    import selectors

    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(stopper.fileno(), selectors.EVENT_READ)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or stopper.forced:
                return predicate()
            selector.select(left)  # whoever changes the predicate wakes the stopper
            stopper.drain()
    return True
