"""A connected stream socket with the reads people actually need (SPEC §2).

``Connection`` keeps one receive buffer for every kind of read (bytes, exact
counts, delimiters, lines, frames), so they can be mixed freely; the framing
rules live in the pure ``framing`` module, shared with the asyncio layer.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager

from . import framing
from ._buffer import ReceiveBuffer
from ._deadline import Deadline
from ._flow import tls_closed
from ._reach import dial, parse_proxy
from ._resource import SocketResource
from ._sockio import (
    address_of,
    error_for,
    local_address,
    peer_address,
    scheme_for,
    translate_errors,
)
from ._sockopts import SocketOptions
from ._static import final
from ._tlsopt import client_setup_for
from .address import Address
from .errors import ConnectionClosed, SocketeerError, Timeout, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._sockopts import Keepalive
    from .proxy.url import ProxyURL

__all__ = ["Connection", "connect"]

_READ_SIZE = 65536


def connect(
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
    """Connect to a stream address (tcp, tcp4, tcp6, tls, unix, abstract).

    ``timeout`` bounds the connect (and TLS handshake) and then every blocking
    call on the connection; ``source`` binds the local end first. ``tls`` (a
    ``TLSConfig`` or ``ssl.SSLContext``; implied by ``tls://``) verifies the
    server against the system trust store unless told otherwise.

    The socket options are set before connecting (docs/library.md):
    ``keepalive`` (True for 60 s idle, 10 s interval, 6 probes, or the three
    numbers), ``bind_device`` (SO_BINDTODEVICE), ``rcvbuf``/``sndbuf``,
    ``ttl``/``hop_limit``. ``proxy`` (a URL, or ``"env"`` for ``ALL_PROXY``)
    tunnels through a SOCKS or HTTP proxy; the options and ``source`` then
    apply to the socket to the proxy, and TLS still verifies the target.

    Raises:
        AddressError: a malformed or non-stream address.
        ConnectError: refused, unreachable, no such host or socket file.
        ProxyError: the proxy is unreachable (``ProxyUnreachable``) or refused.
        Timeout: no answer within ``timeout``.
        TLSError: the certificate or the handshake failed.
        UsageError, NetworkError: an option that does not fit, or that the system refused.
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
    sock = dial(target, deadline, options, via)
    if setup is not None:
        from .tls import wrap_client

        sock = wrap_client(sock, target, setup, deadline.remaining())
    return Connection(sock, timeout=timeout, address=target)


_UNSET: Any = object()  # not looked up yet


@final
class Connection(SocketResource):
    """A connected stream socket: TCP or Unix, made by ``connect`` or ``Listener.accept``.

    ``timeout`` (seconds, None = wait forever) applies to every blocking call
    as a whole: ``recv_line`` fails with ``Timeout`` when the line is not
    complete in time, however the bytes trickle in.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = None,
        address: Address | None = None,
        peername: Any = None,
    ) -> None:
        if peername is None:
            peername = _UNSET
        self._like = address or scheme_for(sock)
        self._address = address
        self._sock = sock
        self._buffer = ReceiveBuffer()
        self._closed = False
        self._blocking_mode: float | bool | None = False  # last settimeout value
        self.timeout = timeout
        self.bytes_received = 0
        self.bytes_sent = 0
        # An accepted client's addresses are looked up when first asked for: a
        # server that neither logs nor screens clients never asks (connections
        # per second). Any other connection knows them from the start, so they
        # stay readable after close.
        self._peername: Any = peername
        self._peer: Any = _UNSET
        self._local: Any = _UNSET
        self._where: Any = _UNSET
        if peername is _UNSET:
            _ = self.peer, self.local

    @property
    def peer(self) -> Address | None:
        """The other end's address (None: an unnamed Unix socket, or unknown)."""
        if self._peer is _UNSET:
            raw = self._peername
            if raw is _UNSET:
                self._peer = peer_address(self._sock, self._like)
            else:
                self._peer = address_of(raw, self._like) if raw else None
        return self._peer  # type: ignore[no-any-return]

    @peer.setter
    def peer(self, address: Address | None) -> None:
        """A PROXY header names the real client: the peer is then that client."""
        self._peer = address

    def _unread(self, data: bytes) -> None:
        """Bytes read past a PROXY header go back in front of the next read."""
        self._buffer.unread(data)

    def take_buffered(self) -> bytes:
        """What was received into the buffer and not read yet (b"" mostly): for a
        caller that reads ``conn.socket`` itself from here on, so none is lost."""
        return self._buffer.take_all()

    @property
    def local(self) -> Address | None:
        """This end's address (None: unnamed, or asked for after close)."""
        if self._local is _UNSET:
            try:
                self._local = local_address(self._sock, self._like)
            except SocketeerError:
                self._local = None
        return self._local  # type: ignore[no-any-return]

    @property
    def _name(self) -> Address | str:
        """What errors name: the peer, else the address, else this end."""
        if self._where is _UNSET:
            self._where = self.peer or self._address or self.local or "connection"
        return self._where  # type: ignore[no-any-return]

    @classmethod
    def from_socket(cls, sock: socket.socket, *, timeout: float | None = None) -> Connection:
        """Wrap a connected stream socket (from ``socketpair``, ``fd:N``, another library)."""
        return cls(sock, timeout=timeout)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.local} <-> {self.peer}"
        return f"<Connection {state}>"

    # -- plumbing -------------------------------------------------------------

    def start_tls(self, context: Any, timeout: float | None = None) -> None:
        """Run the server side of a TLS handshake on this accepted connection.

        Raises:
            TLSError, Timeout: the handshake failed or took too long (closed then).
        """
        from .tls import DEFAULT_HANDSHAKE_TIMEOUT, wrap_server

        self._check_open()
        try:
            self._sock = wrap_server(
                self._sock, context, f"client {self._name}", timeout or DEFAULT_HANDSHAKE_TIMEOUT
            )
        except BaseException:
            self._closed = True  # wrap_server closed the socket
            raise
        self._blocking_mode = False

    @property
    def is_tls(self) -> bool:
        return hasattr(self._sock, "getpeercert")  # an ssl.SSLSocket, without importing ssl

    def _arm(self, deadline: Deadline) -> None:
        remaining = deadline.remaining()
        if remaining is None and self._blocking_mode is None:
            return  # already blocking: skip the system call
        self._sock.settimeout(remaining)
        self._blocking_mode = remaining

    def _fill(self, deadline: Deadline) -> bool:
        """One receive into the buffer; False at EOF."""
        self._arm(deadline)
        try:
            data = self._sock.recv(_READ_SIZE)
        except tls_closed():
            return False  # the peer's close_notify, after our half-close
        self.bytes_received += len(data)
        self._buffer.feed(data)
        return bool(data)

    def _failure(self, exc: OSError, op: str, timeout: float | None) -> Exception:
        """The error to raise for ``exc`` (what ``translate_errors`` does, inline)."""
        if isinstance(exc, Timeout) and timeout:
            return error_for(exc, op, str(self._name), timeout)  # add what and where
        if isinstance(exc, SocketeerError):
            return exc
        return error_for(exc, op, str(self._name), timeout)

    def _errors(self, op: str, deadline: Deadline) -> AbstractContextManager[None]:
        return translate_errors(op, self._name, deadline.seconds)

    # -- sending ----------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``.

        Raises:
            ConnectionReset: the peer is gone. Timeout: not all sent in time.
        """
        self._check_open()
        if self.timeout is None:
            # The common case, kept lean (it is the hot path of every server):
            # one blocking sendall, errors translated only when they happen.
            try:
                if self._blocking_mode is not None:
                    self._sock.settimeout(None)
                    self._blocking_mode = None
                self._sock.sendall(data)
            except OSError as exc:
                raise self._failure(exc, "send", None) from exc
            self.bytes_sent += len(data) if isinstance(data, bytes) else memoryview(data).nbytes
            return
        deadline = Deadline(self.timeout)
        with self._errors("send", deadline):
            view = memoryview(data).cast("B")
            while view:
                self._arm(deadline)
                sent = self._sock.send(view)
                self.bytes_sent += sent
                view = view[sent:]

    def send_line(self, line: bytes | str) -> None:
        """Send one line, adding the newline (``str`` is encoded as UTF-8)."""
        self.send(framing.encode_line(line))

    def send_message(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one length-prefixed frame (4-byte big-endian length, then the payload)."""
        self.send(framing.encode_frame(payload))

    def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF, and this side can still receive.

        Over TCP and Unix sockets that is ``SHUT_WR``; over TLS it is
        close_notify (``tls.shutdown_write``): the socket stays open and
        ``recv`` goes on returning what the peer sends until its own
        close_notify or FIN, then ``b""``.

        Raises:
            ConnectionReset: the peer is gone. Timeout: (TLS) close_notify
                not sent within ``timeout``.
        """
        self._check_open()
        if not self.is_tls:
            with translate_errors("shutdown", self._name):
                self._sock.shutdown(socket.SHUT_WR)
            return
        from .tls import shutdown_write

        deadline = Deadline(self.timeout)
        with self._errors("shutdown", deadline):
            self._arm(deadline)
            early = shutdown_write(self._sock)  # type: ignore[arg-type]
        self._buffer.feed(early)  # decrypted before the close_notify: read before the rest
        self.bytes_received += len(early)

    # -- receiving ----------------------------------------------------------------

    def recv(self, max_bytes: int = _READ_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes as soon as any are there; ``b""`` at EOF."""
        self._check_open()
        if self._buffer:
            return self._buffer.take_some(max_bytes)
        try:
            if self.timeout is not None or self._blocking_mode is not None:
                self._arm(Deadline(self.timeout))
            data = self._sock.recv(max_bytes)
        except OSError as exc:
            if isinstance(exc, tls_closed()):
                return b""  # the peer's close_notify, after our half-close
            raise self._failure(exc, "recv", self.timeout) from exc
        self.bytes_received += len(data)
        return data

    def recv_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes.

        Raises:
            ConnectionClosed: EOF came first (``partial`` holds what arrived).
        """
        self._check_open()
        deadline = Deadline(self.timeout)
        with self._errors("recv", deadline):
            while (data := self._buffer.take_exactly(n)) is None:
                if not self._fill(deadline):
                    raise framing.closed_error(self._buffer, f"{n}-byte read")
        return data

    def recv_until(self, delimiter: bytes, max_bytes: int = framing.DEFAULT_MAX_LINE) -> bytes:
        """Everything up to and including ``delimiter``.

        Raises:
            FrameTooLarge: no delimiter within ``max_bytes``.
            ConnectionClosed: EOF came first.
        """
        self._check_open()
        deadline = Deadline(self.timeout)
        with self._errors("recv", deadline):
            while (data := self._buffer.take_until(delimiter, max_bytes)) is None:
                if not self._fill(deadline):
                    raise framing.closed_error(self._buffer, f"{delimiter!r}-terminated read")
        return data

    def recv_line(self, max_bytes: int = framing.DEFAULT_MAX_LINE) -> bytes:
        """The next line, without its ``\\n`` or ``\\r\\n``.

        Raises:
            FrameTooLarge: no newline within ``max_bytes``.
            ConnectionClosed: EOF came first, even at a line boundary (so an
                empty line and the end of the stream stay distinguishable).
        """
        self._check_open()
        deadline = Deadline(self.timeout)
        with self._errors("recv", deadline):
            while (line := framing.take_line(self._buffer, max_bytes)) is None:
                if not self._fill(deadline):
                    raise framing.closed_error(self._buffer, "line")
        return line

    def recv_message(self, max_bytes: int = framing.DEFAULT_MAX_FRAME) -> bytes:
        """The next length-prefixed frame's payload.

        Raises:
            FrameTooLarge: the frame announces more than ``max_bytes``.
            ConnectionClosed: EOF came first.
        """
        self._check_open()
        deadline = Deadline(self.timeout)
        with self._errors("recv", deadline):
            while (frame := framing.take_frame(self._buffer, max_bytes)) is None:
                if not self._fill(deadline):
                    raise framing.closed_error(self._buffer, "frame")
        return frame

    def __iter__(self) -> Iterator[bytes]:
        """Lines until the peer closes; a last line without newline is yielded too."""
        return self.lines()

    def lines(self, max_bytes: int = framing.DEFAULT_MAX_LINE) -> Iterator[bytes]:
        """Lines (without end-of-line) until the peer closes."""
        while True:
            try:
                yield self.recv_line(max_bytes)
            except ConnectionClosed as exc:
                if exc.partial:
                    yield exc.partial
                return

    def messages(self, max_bytes: int = framing.DEFAULT_MAX_FRAME) -> Iterator[bytes]:
        """Frames until the peer closes at a frame boundary.

        Raises:
            ConnectionClosed: the peer closed in the middle of a frame.
        """
        while True:
            try:
                yield self.recv_message(max_bytes)
            except ConnectionClosed as exc:
                if exc.partial:
                    raise
                return

    # -- closing ----------------------------------------------------------------

    _kind = "connection"
