"""``RelayHandler``: a server handler that opens TO for each client and copies (SPEC §4, §6).

A relay is a ``Server`` with this handler, so it takes the server's accept
loop, admission, models, workers, grace period and connection log as they
are. Per client it runs the same steps in every model:

1. (FROM ``tls://``) the server's TLS handshake — done by the server for the
   blocking models, stepped on the loop for the async one;
2. (``accept_proxy_protocol``) read the PROXY header the load balancer sent;
3. open TO: connect (TLS if ``tls://``) or start the ``exec:`` program;
4. (``proxy_protocol``) send a PROXY header naming the original client: the
   one the received header named, if there was one (chained proxies), else
   the connected peer;
5. copy both ways until both directions are done.

The blocking models copy with ``stream.Pair`` (a thread per direction,
``splice`` on Linux); the async model with ``looped.LoopPair`` (callbacks on
the worker's one loop, no thread or task per pair).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import proxyproto
from .._reach import parse_proxy, prepare_connect
from .._sockio import Target, resolve, translate_errors
from .._sockopts import CONNECT_OPTIONS, DEFAULT_KEEPALIVE, SocketOptions
from .._tlsopt import client_setup_for
from ..address import Address
from ..connection import Connection, connect
from ..errors import NetworkError, SocketeerError, UsageError
from ..handlers.base import Handler
from ..server import _log, proxied
from .endpoints import Endpoint, File, Program, Stdio
from .opened import carried_side, check_descriptor, check_file, is_carried
from .setup import report_set_up_failure
from .stream import HAS_SPLICE, Pair, Side

if TYPE_CHECKING:
    from ..proxy.url import ProxyURL
    from ..server.idle import IdleWatch
    from .retry import RetryPolicy

__all__ = ["RelayHandler"]

_DEFAULT_TO_OPTIONS = SocketOptions(keepalive=DEFAULT_KEEPALIVE)


class RelayHandler(Handler):
    """Open ``target`` for each client and copy both ways.

    ``to_options`` are set on every TO socket before it connects (default:
    keepalive on, ``DEFAULT_KEEPALIVE``); ``proxy`` reaches TO through a SOCKS
    or HTTP proxy (``"env"``: ``ALL_PROXY``, read once, here).

    Raises:
        UsageError: a target that cannot be relayed to, a program that is not
            installed, a PROXY version that does not exist.
    """

    name = "relay"
    raw_socket = True  # the async model hands over the accepted socket (start_async)
    #: Connecting to TO again after a failure (``relay(retry=...)``; the blocking models).
    retry: RetryPolicy | None = None
    announce: Callable[[str], None] | None = None  # told a new pty's path (TO pty:)

    def __init__(
        self,
        target: Endpoint,
        *,
        connect_timeout: float | None = 10.0,
        zero_copy: bool = HAS_SPLICE,
        proxy_protocol: str | None = None,
        accept_proxy_protocol: bool = False,
        observe: Callable[[bytes, str], None] | None = None,
        tls_client: object = None,
        to_options: SocketOptions | None = None,
        proxy: str | ProxyURL | None = None,
    ) -> None:
        if isinstance(target, Address) and target.is_datagram:
            raise UsageError(
                f"{target} is a datagram address: a datagram relay needs datagram "
                "addresses on both sides"
            )
        if isinstance(target, Address) and target.scheme == "systemd":
            raise UsageError(f"TO must be an address to connect to, not {target}")
        if isinstance(target, File):
            check_file(target, writing=True)
        if isinstance(target, Address) and target.scheme == "fd":
            check_descriptor(target.fd)
        if isinstance(target, Program) and shutil.which(target.argv[0]) is None:
            raise UsageError(f"exec: program not found: {target.argv[0]}")
        if proxy_protocol not in (None, "v1", "v2"):
            raise UsageError(f"--proxy-protocol takes v1 or v2, not {proxy_protocol!r}")
        self.target = target
        self.target_name = str(target)
        self.connect_timeout = connect_timeout
        self.zero_copy = zero_copy and HAS_SPLICE
        self.proxy_protocol = proxy_protocol
        self.accept_proxy_protocol = accept_proxy_protocol
        self.observe = _serialised(observe)
        self.tls_setup = (
            client_setup_for(target, tls_client) if isinstance(target, Address) else None
        )
        #: Set on every TO socket before it connects (keepalive, source, ...);
        #: keepalive alone unless told otherwise, as ``relay()`` does.
        self.to_options = to_options if to_options is not None else _DEFAULT_TO_OPTIONS
        #: The same as a ``prepare`` callback (None: nothing to set).
        self.prepare_to = prepare_connect(self.to_options)
        self.proxy: ProxyURL | None = None
        if proxy is not None:
            if not isinstance(target, Address):
                raise UsageError(f"a proxy reaches host:port targets, not {target}")
            self.proxy = parse_proxy(proxy, target)  # "env" is read once, at start
        #: TO's socket addresses, resolved once, when the async model can set a
        #: client up on callbacks alone (see loop_client); None: in a task.
        self.callback_targets = self._callback_targets()
        self.idle_timeout: float | None = None
        self._idle: IdleWatch | None = None
        self._pairs: set[Pair] = set()
        self._lock = threading.Lock()

    def _callback_targets(self) -> list[Target] | None:
        target = self.target
        if not isinstance(target, Address) or self.tls_setup is not None:
            return None
        if self.proxy is not None:
            return None  # the tunnel's handshake waits for the proxy's replies
        if self.accept_proxy_protocol:
            return None  # waits for the client's bytes
        if not (target.is_unix or target.is_ip_literal):
            return None  # a name: looked up per client, off the loop's thread
        return resolve(target, passive=False)

    def check(self, *, model: str, workers: int, datagram: bool) -> None:
        if datagram:
            raise UsageError(
                "a datagram FROM needs a datagram TO (a datagram relay keeps a session per sender)"
            )
        if isinstance(self.target, Stdio) and (model != "thread" or workers != 1):
            raise UsageError("TO - (standard I/O) needs the thread model and one worker")
        if is_carried(self.target) and model == "async":
            raise UsageError(f"TO {self.target} needs --model thread or fork")
        super().check(model=model, workers=workers, datagram=datagram)

    def configure(self, *, idle_timeout: float | None) -> None:
        self.idle_timeout = idle_timeout

    # -- the PROXY header -----------------------------------------------------------

    def _proxy_header(self, source: Address | None, destination: Address | None) -> bytes:
        encode = proxyproto.encode_v1 if self.proxy_protocol == "v1" else proxyproto.encode_v2
        return encode(source, destination)

    @staticmethod
    def _header_names(
        header: proxyproto.ProxyHeader, peer: Address | None, local: Address | None
    ) -> tuple[Address | None, Address | None]:
        """Who the client really is: the header's addresses (a LOCAL header names none)."""
        if header.source is not None:
            return header.source, header.destination
        return peer, local

    # -- blocking models (thread, fork) -----------------------------------------------

    def serve(self, conn: Connection) -> None:
        """One client, in its own thread or child: set up, copy, account."""
        source = conn.peer
        try:
            upstream = self._set_up(conn)
        except SocketeerError as exc:
            report_set_up_failure(source, exc)
            raise
        sock, _ = conn.detach()  # the pair owns the socket now
        client = Side.of_socket(sock, str(source or "client"))
        pair = Pair(client, upstream, zero_copy=self.zero_copy, observe=self.observe)
        with self._lock:
            self._pairs.add(pair)
        watched = self.watch_idle(pair, source)
        try:
            pair.run()
        finally:
            watched.finished = True
            with self._lock:
                self._pairs.discard(pair)
            conn.bytes_received += pair.bytes_up
            conn.bytes_sent += pair.bytes_down
        if pair.error is not None:
            raise pair.error

    def _set_up(self, conn: Connection) -> Side:
        """Steps 2 to 4 for a blocking connection: the PROXY header, TO, what goes first."""
        source, destination = conn.peer, conn.local
        prefix = b""
        if self.accept_proxy_protocol:
            header, prefix = proxied.read_header(conn)
            source, destination = self._header_names(header, source, destination)
        conn.timeout = None  # from here on the idle timer watches the pair
        upstream = self._open_target(source, destination)
        try:
            if prefix:  # bytes that came with the PROXY header belong to the stream
                with translate_errors("send", self.target_name):
                    if upstream.sock is not None:
                        upstream.sock.sendall(prefix)  # through TLS when TO is tls://
                    else:
                        _write_all(upstream.write_fd, prefix)
        except BaseException:
            upstream.close()
            raise
        return upstream

    def watch_idle(self, pair: Pair, peer: Address | None) -> _Watched:
        """Put ``pair`` under the idle timer (if there is one); mark the result finished."""
        watched = _Watched(pair)
        if self.idle_timeout is not None:
            self._idle_watch().watch(watched, lambda: self._idle_out(pair, peer))
        return watched

    def _idle_watch(self) -> IdleWatch:
        if self._idle is None:
            from ..server.idle import IdleWatch

            with self._lock:
                if self._idle is None:
                    assert self.idle_timeout is not None
                    self._idle = IdleWatch(self.idle_timeout)
        return self._idle

    def _idle_out(self, pair: Pair, peer: Address | None) -> None:
        # An idle pair ends as a finished one does (SPEC §6): logged, not an error.
        _log.log.info("idle for %gs: closing %s", self.idle_timeout, peer or "local client")
        pair.abort()

    def _open_target(
        self, source: Address | None, destination: Address | None, *, report: bool = True
    ) -> Side:
        """TO for one client, as a ``Side`` (a connected socket, a program, stdio).

        ``report``: a carried TO logs its own failure when closed (False: the
        caller reports ``Side.failure()``).
        """
        target = self.target
        if isinstance(target, Stdio):
            return Side.of_stdio()
        if isinstance(target, Program) and not target.pty:
            try:
                proc = subprocess.Popen(target.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            except OSError as exc:
                raise NetworkError(f"exec: cannot run {target.argv[0]}: {exc.strerror}") from None
            return Side.of_program(proc, self.target_name)
        if is_carried(target):  # a file, a pty, a program on a pty, an inherited descriptor
            return carried_side(target, at_from=False, announce=self.announce, report=report)
        assert isinstance(target, Address)
        upstream = self._connect(target)
        if self.proxy_protocol is not None:
            upstream.send(self._proxy_header(source, destination))
        sock, _ = upstream.detach()
        return Side.of_socket(sock, self.target_name)

    def _connect(self, target: Address) -> Connection:
        tls = self.tls_setup[1] if self.tls_setup is not None else None

        def attempt() -> Connection:
            return connect(
                target,
                timeout=self.connect_timeout,
                tls=tls,
                proxy=self.proxy,
                **self.to_options.kwargs(*CONNECT_OPTIONS),
            )

        if self.retry is None:
            return attempt()
        from .dial import dial  # --retry: each attempt logged, the client waits

        conn = dial(attempt, self.retry, "")
        assert conn is not None  # no stop event: it connects or raises
        return conn

    # -- the async model ------------------------------------------------------------------

    def start_async(
        self,
        sock: socket.socket,
        peername: Any,
        like: Address,
        tls_context: Any,
        finished: Callable[[int | None, int | None, BaseException | None], None],
    ) -> Any:
        """Serve an accepted socket on the running loop; ``finished`` is called once at the end."""
        from .loop_client import LoopClient

        return LoopClient(self, sock, peername, like, tls_context, finished)

    def close(self) -> None:
        """Cut every pair still open (the end of a grace period, or the server's close)."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.abort()
        # Async clients are cut by their runner, which tracks every connection.
        if self._idle is not None:
            self._idle.close()
            self._idle = None


# -- helpers --------------------------------------------------------------------------


class _Watched:
    """A blocking pair as the idle timer sees it."""

    __slots__ = ("finished", "pair")

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.finished = False

    @property
    def last_activity(self) -> float:
        return self.pair.last_activity


def _serialised(
    observe: Callable[[bytes, str], None] | None,
) -> Callable[[bytes, str], None] | None:
    """Threads (one per direction) share the observer: one dump at a time."""
    if observe is None:
        return None
    lock = threading.Lock()

    def see(data: bytes, marker: str) -> None:
        with lock:
            observe(data, marker)

    return see


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
