"""``aio.Connection``: the asyncio twin of ``socketeer.Connection`` (SPEC §3).

Same names, same semantics, same buffer and framing code; only the waiting is
different. Each method is the blocking one with ``await`` where it waits.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, final

from .. import framing
from .._deadline import Deadline
from .._reach import parse_proxy, prepare_connect, proxy_unreachable
from .._resource import AsyncResource
from .._sockio import (
    Target,
    address_of,
    connect_unix,
    inet_family,
    resolve,
    scheme_for,
    set_nodelay,
    translate_errors,
)
from .._sockopts import SocketOptions
from .._tlsopt import client_setup_for
from ..address import Address
from ..errors import (
    ConnectError,
    ConnectionClosed,
    ConnectionReset,
    SocketeerError,
    Timeout,
    TLSError,
    UsageError,
)
from ._protocol import StreamProtocol
from ._ready import fd_ready

if TYPE_CHECKING:
    from .._sockopts import Keepalive
    from ..proxy.url import ProxyURL

__all__ = ["Connection", "connect"]


async def _wait(awaitable: asyncio.Future[Any], deadline: Deadline) -> None:
    remaining = deadline.remaining()
    if remaining is None:
        await awaitable
        return
    try:
        await asyncio.wait_for(awaitable, remaining)  # cancels it on timeout
    except asyncio.TimeoutError:
        raise Timeout(f"timed out after {deadline.seconds:g}s") from None


async def _connect_unix(sock: socket.socket, path: str | bytes, deadline: Deadline) -> None:
    """Connect a Unix socket in a worker thread.

    A non-blocking Unix connect fails with EAGAIN when the server's backlog
    is full (it does not go "in progress" as TCP does), so asyncio's
    ``sock_connect`` would give up on a busy server. A blocking connect waits
    in the kernel for room, which is what a client wants.
    """
    try:
        sock.connect(path)  # a server with room in its backlog: at once, no thread
        return
    except BlockingIOError:
        pass
    remaining = deadline.remaining()
    try:
        await asyncio.get_running_loop().run_in_executor(None, connect_unix, sock, path, remaining)
    finally:
        sock.setblocking(False)


async def _connect_inet(sock: socket.socket, sockaddr: Any, deadline: Deadline) -> None:
    """A non-blocking TCP connect, waited for on the loop.

    Not ``loop.sock_connect``: uvloop resolves the address again in its
    thread pool, so every connect would wake a worker thread.
    """
    code = sock.connect_ex(sockaddr)
    if code in (0, errno.EISCONN):
        return
    if code not in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
        raise OSError(code, os.strerror(code))
    at = deadline.remaining()
    try:
        await fd_ready(
            sock.fileno(), write=True, deadline=None if at is None else time.monotonic() + at
        )
    except Timeout:
        raise Timeout(f"timed out after {deadline.seconds:g}s") from None
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


async def resolve_async(address: Address) -> list[Target]:
    """``_sockio.resolve`` for connecting, with DNS off the event loop's thread.

    Unix paths and IP literals need no DNS: they are resolved in place, so a
    relay to ``127.0.0.1`` starts no resolver thread.
    """
    if not address.is_inet or address.is_ip_literal:
        return resolve(address, passive=False)
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_DGRAM if address.is_datagram else socket.SOCK_STREAM
    with translate_errors("resolve", address):
        rows = await loop.getaddrinfo(
            address.host or None, address.port, family=inet_family(address), type=kind
        )
    return [Target(f, t, p, sa) for f, t, p, _name, sa in rows]


async def connect(
    address: str | Address,
    *,
    timeout: float | None = None,
    tls: object | None = None,
    source: str | Address | None = None,
    keepalive: bool | Keepalive | tuple[int, int, int] = False,
    bind_device: str | None = None,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    ttl: int | None = None,
    hop_limit: int | None = None,
    proxy: str | ProxyURL | None = None,
) -> Connection:
    """Connect to a stream address; as ``socketeer.connect`` (the same options and proxy).

    Raises:
        AddressError, ConnectError, ProxyError, Timeout, TLSError: as ``socketeer.connect``.
    """
    target = Address.parse(address)
    if not target.is_stream or target.scheme == "fd":
        raise UsageError(f"connect needs a stream address, not {target} (see open_datagram)")
    options = SocketOptions.of(
        source=source,
        keepalive=keepalive,
        bind_device=bind_device,
        rcvbuf=rcvbuf,
        sndbuf=sndbuf,
        ttl=ttl,
        hop_limit=hop_limit,
    )
    via = parse_proxy(proxy, target)
    setup = client_setup_for(target, tls)  # bad files are reported before connecting
    deadline = Deadline(timeout)
    sock = await dial_async(target, deadline, options, via)
    if setup is not None:
        return await _tls_client(sock, setup, target, timeout, deadline)
    return await Connection.from_socket(sock, timeout=timeout, address=target)


async def dial_async(
    target: Address,
    deadline: Deadline,
    options: SocketOptions,
    proxy: ProxyURL | None = None,
) -> socket.socket:
    """``_reach.dial`` on the loop: a non-blocking socket connected to ``target``
    (through ``proxy``), options set; ``connect`` and the event-loop relay's TO.

    Raises:
        ConnectError, Timeout: as the connect; ProxyUnreachable and the other
            ``ProxyError`` cases with a proxy.
    """
    prepare = prepare_connect(options)
    if proxy is None:
        return await connected_socket_async(target, deadline, prepare=prepare)
    from ..proxy.dial import tunnel_async

    try:
        sock = await connected_socket_async(proxy.address, deadline, prepare=prepare)
    except ConnectError as exc:
        raise proxy_unreachable(proxy, exc) from exc
    try:
        await tunnel_async(sock, proxy, target, deadline)
    except BaseException:
        sock.close()
        raise
    return sock


async def connected_socket_async(
    target: Address,
    deadline: Deadline,
    *,
    prepare: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    """A non-blocking socket connected to ``target``: each resolved address in turn.

    The raw socket, for callers that drive it themselves (the event-loop relay).
    ``prepare`` is called on each new socket before it connects, as in
    ``_sockio.connected_socket``.

    Raises:
        ConnectError, Timeout, AddressError: as the failure was.
    """
    timeout = deadline.seconds
    last: SocketeerError | None = None
    with translate_errors("connect", target, timeout):
        targets = await resolve_async(target)
    if len(targets) > 1:
        return await _raced_socket(target, targets, deadline, prepare)
    for row in targets:
        with translate_errors("connect", target, timeout):  # EMFILE, say
            sock = socket.socket(row.family, row.type, row.proto)
        sock.setblocking(False)
        try:
            with translate_errors("connect", target, timeout):
                if prepare is not None:
                    prepare(sock)
                if row.family == socket.AF_UNIX:
                    await _connect_unix(sock, row.sockaddr, deadline)
                else:
                    await _connect_inet(sock, row.sockaddr, deadline)
        except (ConnectError, Timeout) as exc:
            sock.close()
            last = exc
            if isinstance(exc, Timeout):
                break
            continue
        except BaseException:
            sock.close()
            raise
        set_nodelay(sock)
        return sock
    assert last is not None
    raise last


async def _attempt(
    target: Address,
    row: Target,
    deadline: Deadline,
    prepare: Callable[[socket.socket], None] | None,
) -> socket.socket:
    """One connect attempt of a race; its socket is closed if it fails or is cancelled."""
    with translate_errors("connect", target, deadline.seconds):  # EMFILE, say
        sock = socket.socket(row.family, row.type, row.proto)
    sock.setblocking(False)
    try:
        with translate_errors("connect", target, deadline.seconds):
            if prepare is not None:
                prepare(sock)
            await _connect_inet(sock, row.sockaddr, deadline)
    except BaseException:
        sock.close()
        raise
    return sock


async def _raced_socket(
    target: Address,
    rows: list[Target],
    deadline: Deadline,
    prepare: Callable[[socket.socket], None] | None,
) -> socket.socket:
    """Happy Eyeballs on the loop: the order and delay of ``_eyeballs``, attempts as tasks.

    The next attempt starts ``ATTEMPT_DELAY`` after the last or as soon as one
    fails; the first to connect wins and every other is cancelled (its socket
    closed), including one that connected in the same instant.
    """
    from .._eyeballs import ATTEMPT_DELAY, attempt_order

    waiting = attempt_order(rows)
    running: set[asyncio.Task[socket.socket]] = set()
    last: BaseException | None = None
    winner: socket.socket | None = None
    try:
        while winner is None and (waiting or running):
            if waiting:
                attempt = _attempt(target, waiting.pop(0), deadline, prepare)
                running.add(asyncio.ensure_future(attempt))
            done, running = await asyncio.wait(
                running,
                timeout=ATTEMPT_DELAY if waiting else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                failure = task.exception()
                if failure is not None:
                    last = failure
                elif winner is None:
                    winner = task.result()
                else:
                    task.result().close()  # a second winner in the same instant
    finally:
        for task in running:
            task.cancel()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(outcome, socket.socket):
                outcome.close()  # connected just as it was cancelled
    if winner is None:
        assert last is not None, "there was at least one address"
        raise last
    set_nodelay(winner)
    return winner


async def _tls_client(
    sock: socket.socket, setup: Any, target: Address, timeout: float | None, deadline: Deadline
) -> Connection:
    """The client handshake on the loop, with the same checks and errors as the blocking one.

    TLS runs in ``_tls`` over a plain transport (not the loop's ``ssl=``),
    so the connection can half-close (close_notify, then read on).
    """
    from ..tls import DEFAULT_HANDSHAKE_TIMEOUT, check_pin, server_hostname
    from ._tls import start_tls

    context, config = setup
    left = deadline.remaining()
    limit = left if left is not None else DEFAULT_HANDSHAKE_TIMEOUT
    protocol = StreamProtocol()
    transport = await start_tls(
        sock,
        context,
        protocol,
        server_side=False,
        server_hostname=server_hostname(config, target),
        timeout=limit,
        where=str(target),
    )
    conn = Connection(transport, protocol, timeout=timeout, address=target)
    try:
        check_pin(transport.get_extra_info("ssl_object"), config, target)
    except TLSError:
        conn.close()
        raise
    return conn


async def _tls_server(
    sock: socket.socket, context: Any, protocol: StreamProtocol, address: Address | None
) -> asyncio.Transport:
    """The server handshake on an accepted socket (``from_socket(tls_server=...)``)."""
    from ..tls import DEFAULT_HANDSHAKE_TIMEOUT
    from ._tls import start_tls

    return await start_tls(
        sock,
        context,
        protocol,
        server_side=True,
        server_hostname=None,
        timeout=DEFAULT_HANDSHAKE_TIMEOUT,
        where=str(address or "socket"),
    )


@final
class Connection(AsyncResource):
    """A connected stream on an event loop: TCP or Unix.

    Made by ``aio.connect``, ``aio.Listener.accept`` or ``Connection.from_socket``.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: StreamProtocol,
        *,
        timeout: float | None = None,
        address: Address | None = None,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._buffer = protocol.buffer
        self._closed = False
        self.timeout = timeout
        self.bytes_sent = 0
        sock = transport.get_extra_info("socket")
        like = address or (scheme_for(sock) if sock is not None else Address("tcp", port=0))
        local = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        self.local = address_of(local, like) if local else None
        self.peer = address_of(peer, like) if peer else None
        self._name = str(self.peer or address or self.local or "connection")

    def _unread(self, data: bytes) -> None:
        """Bytes read past a PROXY header go back in front of the next read."""
        self._buffer.unread(data)

    @classmethod
    async def from_socket(
        cls,
        sock: socket.socket,
        *,
        timeout: float | None = None,
        address: Address | None = None,
        tls_server: Any = None,
    ) -> Connection:
        """Wrap a connected stream socket on the running loop.

        ``tls_server`` (an ``ssl.SSLContext``) runs the server side of a TLS
        handshake first (an accepted client), within ``tls.DEFAULT_HANDSHAKE_TIMEOUT``.

        Raises:
            TLSError, Timeout: the handshake failed or took too long (the socket closed).
        """
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        protocol = StreamProtocol()
        transport: asyncio.Transport
        try:
            if tls_server is not None:
                transport = await _tls_server(sock, tls_server, protocol, address)
            else:
                with translate_errors("connect", address or "socket"):
                    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        except BaseException:
            sock.close()
            raise
        return cls(transport, protocol, timeout=timeout, address=address)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.local} <-> {self.peer}"
        return f"<aio.Connection {state}>"

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    @property
    def bytes_received(self) -> int:
        return self._protocol.bytes_received

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("I/O on a closed connection")

    def _raise_lost(self) -> None:
        error = self._protocol.error
        if isinstance(error, OSError):
            with translate_errors("recv", self._name):
                raise error

    async def _fill(self, deadline: Deadline) -> bool:
        """Wait for more bytes; False at EOF."""
        if self._protocol.eof:
            self._raise_lost()
            return False
        before = len(self._buffer)
        waiter = self._protocol.data_waiter()
        if waiter is not None:
            with translate_errors("recv", self._name, deadline.seconds):
                await _wait(waiter, deadline)
        if len(self._buffer) > before:
            return True
        self._raise_lost()
        return not self._protocol.eof

    # -- sending -----------------------------------------------------------------

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data`` (queued, and waited for while the peer is slow)."""
        self._check_open()
        if self._transport.is_closing():
            self._raise_lost()
            raise ConnectionReset(f"connection reset by peer: {self._name}")
        self._transport.write(data)
        self.bytes_sent += len(data)
        waiter = self._protocol.drain_waiter()
        if waiter is not None:
            deadline = Deadline(self.timeout)
            with translate_errors("send", self._name, deadline.seconds):
                await _wait(waiter, deadline)
        self._raise_lost()

    async def send_line(self, line: bytes | str) -> None:
        await self.send(framing.encode_line(line))

    async def send_message(self, payload: bytes | bytearray | memoryview) -> None:
        await self.send(framing.encode_frame(payload))

    @property
    def is_tls(self) -> bool:
        return self._transport.get_extra_info("ssl_object") is not None

    async def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF, and this side can still receive.

        Over TCP and Unix sockets that is ``SHUT_WR``; over TLS it is
        close_notify, after everything sent before it, and ``recv`` goes on
        returning what the peer sends until its own close_notify or FIN, then
        ``b""`` (as ``socketeer.Connection.shutdown_write``).

        Raises:
            UsageError: a TLS connection of ``serve``'s asyncio runner, whose
                transport is the loop's own (``can_write_eof()`` is False:
                it sends close_notify only as it closes).
        """
        self._check_open()
        if self._transport.can_write_eof():
            if not self._transport.is_closing():
                self._transport.write_eof()  # TLS (aio._tls): close_notify
            return
        if self.is_tls:
            raise UsageError(
                "this TLS connection has no half-close (the loop's TLS transport sends "
                "close_notify only as it closes): close it instead"
            )

    # -- receiving ---------------------------------------------------------------

    async def recv(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` as soon as any are there; ``b""`` at EOF."""
        self._check_open()
        deadline = Deadline(self.timeout)
        while not self._buffer:
            if not await self._fill(deadline):
                return b""
        return self._buffer.take_some(max_bytes)

    async def recv_exactly(self, n: int) -> bytes:
        self._check_open()
        deadline = Deadline(self.timeout)
        while (data := self._buffer.take_exactly(n)) is None:
            if not await self._fill(deadline):
                raise framing.closed_error(self._buffer, f"{n}-byte read")
        return data

    async def recv_until(
        self, delimiter: bytes, max_bytes: int = framing.DEFAULT_MAX_LINE
    ) -> bytes:
        self._check_open()
        deadline = Deadline(self.timeout)
        while (data := self._buffer.take_until(delimiter, max_bytes)) is None:
            if not await self._fill(deadline):
                raise framing.closed_error(self._buffer, f"{delimiter!r}-terminated read")
        return data

    async def recv_line(self, max_bytes: int = framing.DEFAULT_MAX_LINE) -> bytes:
        self._check_open()
        deadline = Deadline(self.timeout)
        while (line := framing.take_line(self._buffer, max_bytes)) is None:
            if not await self._fill(deadline):
                raise framing.closed_error(self._buffer, "line")
        return line

    async def recv_message(self, max_bytes: int = framing.DEFAULT_MAX_FRAME) -> bytes:
        self._check_open()
        deadline = Deadline(self.timeout)
        while (frame := framing.take_frame(self._buffer, max_bytes)) is None:
            if not await self._fill(deadline):
                raise framing.closed_error(self._buffer, "frame")
        return frame

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.lines()

    async def lines(self, max_bytes: int = framing.DEFAULT_MAX_LINE) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv_line(max_bytes)
            except ConnectionClosed as exc:
                if exc.partial:
                    yield exc.partial
                return

    async def messages(self, max_bytes: int = framing.DEFAULT_MAX_FRAME) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv_message(max_bytes)
            except ConnectionClosed as exc:
                if exc.partial:
                    raise
                return

    # -- closing -----------------------------------------------------------------

    def _release(self) -> None:
        self._transport.close()

    async def wait_closed(self) -> None:
        await self._protocol.wait_closed()

    async def aclose(self) -> None:
        """Close, and wait until the transport has let go of the socket."""
        self.close()
        await self.wait_closed()
