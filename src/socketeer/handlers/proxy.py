"""``socks5`` and ``http-proxy``: proxy servers, relays whose TO each client chooses.

Per client, in every model: the handshake (``proxy.server``, sans I/O),
the target's name resolved once and every address it resolves to checked
against the target rules (so a name cannot dodge an IP rule, and the address
connected to is the one checked: no second lookup to rebind), a connect to
the permitted addresses in turn, the answer, then the relay's copy both ways
(``relay.stream.Pair`` in the blocking models, ``relay.looped.LoopPair`` on
the loop) with its idle timer, byte counts and shutdown.

The target rules refuse nothing by default: a proxy that may reach anything
its host can is an open door into that host's networks. A real deployment
sets ``target_allow`` (or at least ``target_deny`` for loopback, link-local
and private ranges) and ``users``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._deadline import Deadline
from .._flow import would_block
from .._reach import prepare_connect
from .._sockio import connected_socket, error_for, translate_errors
from .._sockopts import DEFAULT_KEEPALIVE, SocketOptions
from ..access import AccessList, Network
from ..address import Address
from ..errors import ConnectError, ProxyRefused, SocketeerError, Timeout, UsageError
from ..proxy import server as wire
from ..proxy.socks import SOCKS5_REPLIES
from ..relay.handler import RelayHandler
from ..relay.loop_client import LoopClient
from ..relay.stream import HAS_SPLICE, Side
from ..server import _log

if TYPE_CHECKING:
    from ..connection import Connection
    from ..relay.looped import LoopPair

__all__ = ["HttpProxy", "ProxyServer", "Socks5Proxy", "TargetRefused", "parse_users"]

#: A client has this long for its whole handshake (a slow one holds a slot).
HANDSHAKE_TIMEOUT = 10.0


class TargetRefused(ProxyRefused):
    """The proxy would not (or could not) open the client's target.

    ``code`` is the SOCKS5 reply that says so, ``http`` the HTTP status and reason.
    """

    def __init__(self, message: str, *, code: int, http: tuple[int, str]) -> None:
        super().__init__(message, code=code, meaning=SOCKS5_REPLIES[code])
        self.http = http


def parse_users(users: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """``{"name": "password"}`` from a mapping or from ``NAME:PASSWORD`` texts (``--user``).

    Raises:
        UsageError: a text without a colon, or with an empty name.
    """
    if isinstance(users, Mapping):
        pairs = list(users.items())
    else:
        pairs = []
        for text in users:
            name, colon, password = text.partition(":")
            if not colon:
                raise UsageError(f"--user takes NAME:PASSWORD, not {text!r}")
            pairs.append((name, password))
    for name, _ in pairs:
        if not name or len(name.encode()) > 255:
            raise UsageError("a proxy user name is 1 to 255 bytes")
    return dict(pairs)


class ProxyServer(RelayHandler):
    """What both proxies share; ``Socks5Proxy`` and ``HttpProxy`` say how to answer.

    ``users`` (a mapping, or ``NAME:PASSWORD`` texts): the logins accepted
    (none: no login asked). ``target_allow``/``target_deny``: where clients
    may connect, as ``AccessList`` reads them (default: anywhere).
    """

    name = "proxy"
    protocol = "proxy"

    def __init__(
        self,
        *,
        users: Mapping[str, str] | Iterable[str] = (),
        target_allow: Iterable[str | Network] = (),
        target_deny: Iterable[str | Network] = (),
        connect_timeout: float | None = 10.0,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        zero_copy: bool = HAS_SPLICE,
    ) -> None:
        # Not RelayHandler.__init__: it checks one fixed TO. These are the
        # attributes its pair machinery (serve, the idle timer, close, and
        # LoopClient) reads; a per-client target has nothing to resolve ahead.
        self.users = parse_users(users) or None
        self.targets = AccessList(target_allow, target_deny)
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.zero_copy = zero_copy and HAS_SPLICE
        self.target: Any = None
        self.target_name = "target"
        self.proxy_protocol = None
        self.accept_proxy_protocol = False
        self.observe = None
        self.tls_setup = None
        self.to_options = SocketOptions(keepalive=DEFAULT_KEEPALIVE)
        self.prepare_to = prepare_connect(self.to_options)
        self.proxy = None
        self.callback_targets = None  # every client is set up in a task
        self.idle_timeout = None
        self._idle = None
        self._pairs = set()
        self._lock = threading.Lock()

    def check(self, *, model: str, workers: int, datagram: bool) -> None:
        if datagram:
            raise UsageError(f"handler {self.name} serves stream sockets only")
        super(RelayHandler, self).check(model=model, workers=workers, datagram=datagram)

    # -- what each protocol says ------------------------------------------------------

    def handshake(self) -> wire.Socks5ServerHandshake | wire.HttpProxyHandshake:
        raise NotImplementedError

    def answer(self, hs: Any, sock: socket.socket) -> None:
        """Queue the success answer (``sock`` is connected to the target)."""
        raise NotImplementedError

    def refuse(self, hs: Any, why: TargetRefused) -> None:
        """Queue the failure answer ``why`` stands for."""
        raise NotImplementedError

    # -- the decisions both layers share --------------------------------------------------

    def permitted(self, host: str, port: int, rows: list[Any]) -> list[Address]:
        """The resolved addresses the target rules let the client reach, in order.

        Raises:
            TargetRefused: every one of them is denied (code 2, HTTP 403).
        """
        found: list[Address] = []
        for row in rows:
            candidate = Address("tcp", row[4][0], port)
            reached = _UNSPECIFIED.get(candidate.host, candidate.host)
            if (
                self.targets.permits(candidate)
                and self.targets.permits(Address("tcp", reached, port))
                and candidate not in found
            ):
                found.append(candidate)
        if not found:
            shown = ", ".join(sorted({row[4][0] for row in rows}))
            where = _authority(host, port)
            raise TargetRefused(
                f"target {where} ({shown}) denied by the target rules",
                code=wire.NOT_ALLOWED,
                http=(403, "Forbidden"),
            )
        return found

    def tunnelled(self, peer: Address | None, hs: Any, sock: socket.socket) -> None:
        """The line that says who went where (with the address actually connected)."""
        host, port = hs.request
        try:
            ip, *_ = sock.getpeername()
        except OSError:
            ip = "?"
        who = f" as user {hs.username!r}" if hs.username is not None else ""
        _log.log.info(
            "%s: %s tunnel to %s (%s)%s",
            peer or "local client",
            self.protocol,
            _authority(host, port),
            ip,
            who,
            extra={"event": "tunnel", "peer": str(peer or "local client")},
        )

    # -- blocking models (thread, fork) ------------------------------------------------------

    def _set_up(self, conn: Connection) -> Side:
        """The handshake, the target, the answer; RelayHandler.serve copies from there."""
        peer = conn.peer
        hs = self.handshake()
        deadline = Deadline(self.handshake_timeout)
        try:
            while wanted := hs.wanted():
                conn.timeout = deadline.remaining()
                data = conn.recv(wanted)
                hs.receive_data(data)
                if out := hs.data_to_send():
                    conn.send(out)
        except ProxyRefused:
            _send_quietly(conn, hs.data_to_send())
            raise
        except Timeout:
            raise Timeout(
                f"no complete {self.protocol} handshake within {self.handshake_timeout:g}s"
            ) from None
        assert hs.request is not None
        host, port = hs.request
        try:
            sock = self._open_blocking(host, port)
        except TargetRefused as why:
            self.refuse(hs, why)
            _send_quietly(conn, hs.data_to_send())
            raise
        try:
            self.answer(hs, sock)
            conn.send(hs.data_to_send())
        except BaseException:
            sock.close()
            raise
        self.tunnelled(peer, hs, sock)
        conn.timeout = None  # from here on the idle timer watches the pair
        return Side.of_socket(sock, _authority(host, port))

    def _open_blocking(self, host: str, port: int) -> socket.socket:
        deadline = Deadline(self.connect_timeout)
        try:
            rows = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except (OSError, ValueError) as exc:  # ValueError: a NUL, an empty IDNA label
            raise _unresolved(host, port, exc) from None
        last: SocketeerError | None = None
        for address in self.permitted(host, port, rows):
            try:
                return connected_socket(address, deadline, prepare=self.prepare_to)
            except (ConnectError, Timeout) as exc:
                last = exc
                if isinstance(exc, Timeout):
                    break
        assert last is not None
        raise _unreachable(host, port, last)

    # -- the async model ------------------------------------------------------------------

    def start_async(
        self,
        sock: socket.socket,
        peername: Any,
        like: Address,
        tls_context: Any,
        finished: Any,
    ) -> Any:
        return _ProxyLoopClient(self, sock, peername, like, tls_context, finished)

    async def open_async(self, host: str, port: int) -> socket.socket:
        from ..aio.connection import connected_socket_async

        loop = asyncio.get_running_loop()
        deadline = Deadline(self.connect_timeout)
        try:
            rows = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError) as exc:  # ValueError: a NUL, an empty IDNA label
            raise _unresolved(host, port, exc) from None
        last: SocketeerError | None = None
        for address in self.permitted(host, port, list(rows)):
            try:
                return await connected_socket_async(address, deadline, prepare=self.prepare_to)
            except (ConnectError, Timeout) as exc:
                last = exc
                if isinstance(exc, Timeout):
                    break
        assert last is not None
        raise _unreachable(host, port, last)


class Socks5Proxy(ProxyServer):
    """``serve ADDRESS socks5``: SOCKS5 CONNECT (RFC 1928), RFC 1929 login with ``users``."""

    name = "socks5"
    protocol = "socks5"

    def handshake(self) -> wire.Socks5ServerHandshake:
        return wire.Socks5ServerHandshake(self.users)

    def answer(self, hs: Any, sock: socket.socket) -> None:
        host, port, *_ = sock.getsockname()
        hs.reply(wire.SUCCEEDED, host, port)

    def refuse(self, hs: Any, why: TargetRefused) -> None:
        hs.reply(why.code)


class HttpProxy(ProxyServer):
    """``serve ADDRESS http-proxy``: HTTP CONNECT only, Basic login (407) with ``users``."""

    name = "http-proxy"
    protocol = "http-proxy"

    def handshake(self) -> wire.HttpProxyHandshake:
        return wire.HttpProxyHandshake(self.users)

    def answer(self, hs: Any, sock: socket.socket) -> None:
        hs.reply(200, "Connection established")

    def refuse(self, hs: Any, why: TargetRefused) -> None:
        hs.reply(*why.http)


class _ProxyLoopClient(LoopClient):
    """The relay's loop client, set up by the proxy handshake instead of a fixed TO."""

    __slots__ = ("handshake_bytes", "target_label")

    async def _set_up(self) -> None:
        handler = self.handler
        assert isinstance(handler, ProxyServer)
        upstream: Any = None
        self.target_label = "target"
        self.handshake_bytes = (0, 0)
        try:
            if self.tls_context is not None:
                from ..aio._ready import handshake
                from ..tls import ServerHandshake

                stepped = ServerHandshake(
                    self.sock, self.tls_context, f"client {self.peer or 'local client'}"
                )
                self.sock = stepped.sock
                await handshake(stepped)
            hs = handler.handshake()
            try:
                self.handshake_bytes = await _drive(self.sock, hs, handler)
            except ProxyRefused:
                await _send_all(self.sock, hs.data_to_send())
                raise
            assert hs.request is not None
            host, port = hs.request
            try:
                upstream = await handler.open_async(host, port)
            except TargetRefused as why:
                handler.refuse(hs, why)
                await _send_all(self.sock, hs.data_to_send())
                raise
            handler.answer(hs, upstream)
            answer = hs.data_to_send()
            await _send_all(self.sock, answer)
            self.handshake_bytes = (self.handshake_bytes[0], self.handshake_bytes[1] + len(answer))
            handler.tunnelled(self.peer, hs, upstream)
            self.target_label = _authority(host, port)
            self._start_pair(upstream)
        except asyncio.CancelledError:
            self._fail(upstream, SocketeerError("closed at shutdown"))
        except SocketeerError as exc:
            self._fail(upstream, exc)
        except OSError as exc:
            self._fail(upstream, error_for(exc, "proxy", "client", None))
        except Exception as exc:  # a bug: logged, and the client still ends and is counted
            _log.log.exception("handler %s failed for %s", handler.name, self.peer)
            self._fail(upstream, SocketeerError(f"internal error: {exc}"))
        finally:
            self.task = None

    def _ended(self, pair: LoopPair) -> None:
        """The close line counts the handshake too, as the blocking models' does."""
        received, sent = self.handshake_bytes
        self.finished(pair.bytes_up + received, pair.bytes_down + sent, pair.error)

    def _upstream_name(self) -> str:
        return self.target_label


async def _drive(sock: Any, hs: Any, handler: ProxyServer) -> tuple[int, int]:
    """The client's side of the handshake on a non-blocking socket, within its deadline.

    Returns the bytes received and sent.
    """
    from ..aio._ready import fd_ready

    received = sent = 0
    deadline = time.monotonic() + handler.handshake_timeout
    while wanted := hs.wanted():
        try:
            data = sock.recv(wanted)  # TLS: decrypted bytes first, no wait for them
        except would_block():
            try:
                await fd_ready(sock.fileno(), deadline=deadline)
            except Timeout:
                raise Timeout(
                    f"no complete {handler.protocol} handshake within "
                    f"{handler.handshake_timeout:g}s"
                ) from None
            continue
        except OSError as exc:
            raise error_for(exc, "recv", "client", None) from None
        received += len(data)
        hs.receive_data(data)
        if out := hs.data_to_send():
            await _send_all(sock, out)
            sent += len(out)
    return received, sent


async def _send_all(sock: Any, data: bytes) -> None:
    from ..aio._ready import send_all

    if data:
        with translate_errors("send", "client"):
            await send_all(sock, data)


def _send_quietly(conn: Connection, data: bytes) -> None:
    """A refusal's answer, to a client that may be gone already."""
    if data:
        with contextlib.suppress(SocketeerError):
            conn.send(data)


#: A connect to "any address" reaches this host: checked as its loopback too,
#: so 0.0.0.0 cannot dodge a rule against 127.0.0.0/8.
_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def _authority(host: str, port: int) -> str:
    """HOST:PORT for messages and the log: a name from the network made printable."""
    shown = "".join(c if c.isascii() and c.isprintable() else "?" for c in host[:255])
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"


def _unresolved(host: str, port: int, exc: OSError | ValueError) -> TargetRefused:
    reason = (exc.strerror if isinstance(exc, OSError) else None) or "not a host name"
    return TargetRefused(
        f"target {_authority(host, port)}: host not found ({reason})",
        code=wire.HOST_UNREACHABLE,
        http=(502, "Bad Gateway"),
    )


def _unreachable(host: str, port: int, exc: SocketeerError) -> TargetRefused:
    """SOCKS5 4 (host unreachable) or 5 (refused) or 3; HTTP 502, or 504 for a timeout."""
    code = getattr(exc, "errno", None)
    http = (504, "Gateway Timeout") if isinstance(exc, Timeout) else (502, "Bad Gateway")
    if code == errno.ECONNREFUSED:
        reply = wire.CONNECTION_REFUSED
    elif code == errno.ENETUNREACH:
        reply = wire.NETWORK_UNREACHABLE
    else:
        reply = wire.HOST_UNREACHABLE
    return TargetRefused(f"target {_authority(host, port)}: {exc}", code=reply, http=http)
