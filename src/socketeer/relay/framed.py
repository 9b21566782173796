"""Datagrams over a stream (``relay --frame``): each datagram one SPEC §2 frame.

Two relays make a tunnel that keeps datagram boundaries through TCP or TLS::

    UDP clients -> relay udp://A tcp://B --frame -> TCP/TLS -> relay tcp://B udp://C --frame -> C

- ``DatagramTunnel`` (datagram FROM, stream TO) keeps a session per sender
  exactly as a datagram relay does — a table keyed by the raw sockaddr, in
  order of last activity, bounded by ``max_sessions`` — but a session is a
  stream connection to TO: the sender's datagrams go out as frames, the
  frames coming back go to that sender only. Connecting (TLS handshake and
  ``retry`` included) runs in a short thread per new session, so one slow
  TO never holds up the other sessions; datagrams that arrive meanwhile wait,
  up to the outbox's high-water mark.
- ``FramedHandler`` (stream FROM, datagram TO) is a server handler: each
  stream client (one sender of the far side) gets its own datagram socket
  connected to TO, so replies go back through the connection they belong to.
  Being a handler it has the server's TLS, allow/deny, limits and log.

A stream never holds more than the high-water mark of frames not yet sent:
beyond it datagrams are dropped, as a congested network would drop them,
instead of growing a queue. A frame announced larger than ``max_frame``
closes its session with a logged warning (the stream cannot be
resynchronised). The conversion itself is ``framecodec`` (pure).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .._flow import HIGH_WATER, Outlet, receive_ready
from .._resource import discard
from .._sockio import SocketFile, autobind_unix, error_for, resolve, translate_errors
from .._sockopts import CONNECT_OPTIONS, SocketOptions
from .._tlsopt import client_setup_for
from ..address import Address
from ..connection import connect
from ..datagram import MAX_DATAGRAM, open_datagram
from ..errors import ConnectionClosed, FrameTooLarge, SocketeerError, UsageError
from ..handlers.base import Handler
from .datagram import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE
from .dial import dial
from .framecodec import DEFAULT_MAX_FRAME, DatagramFramer
from .retry import RetryPolicy
from .sessions import SessionTable

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = ["DatagramTunnel", "FramedHandler"]

log = logging.getLogger("socketeer.relay")

READ_SIZE = 256 * 1024
BATCH = 256  # datagrams per wake-up before the other sockets get a turn
#: After a session's TO could not be reached, its datagrams are dropped for this
#: long before the next connect: a sender does not cause one connect per datagram.
HOLD_OFF = 1.0
_IDLE = (BlockingIOError, InterruptedError)


class FrameStream:
    """One stream carrying frames, non-blocking: datagrams in, datagrams out.

    ``send`` queues a datagram's frame and writes what the socket takes;
    ``receive`` reads what is there and returns the datagrams it completed.
    Both sides of a tunnel use it, on TCP and on TLS alike (``Outlet`` and
    ``receive_ready`` know TLS's ways).
    """

    __slots__ = ("ended", "framer", "outlet", "sock")

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.outlet = Outlet(sock, high_water=HIGH_WATER)
        self.framer = DatagramFramer(max_frame)
        self.ended = False

    def send(self, datagram: bytes | memoryview) -> int:
        """Queue ``datagram`` and flush; the bytes written (-1: dropped, the outbox is full).

        Raises:
            FrameTooLarge: larger than ``max_frame`` (dropped).
            OSError: the stream failed.
        """
        if not self.outlet.has_room:
            return -1
        self.outlet.queue(self.framer.encode(datagram))
        return self.outlet.flush()

    def receive(self) -> list[bytes]:
        """The datagrams that arrived; ``ended`` says whether the stream is at its end.

        Raises:
            FrameTooLarge: a frame over ``max_frame`` was announced.
            ConnectionClosed: the stream ended inside a frame.
            OSError: the stream failed.
        """
        data = receive_ready(self.sock, READ_SIZE)
        if data is None:
            return []
        if not data:
            self.ended = True
        return self.framer.feed(data)

    @property
    def events(self) -> int:
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outlet.pending else 0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _stream_error(exc: BaseException, where: str) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, SocketeerError):
        return str(error_for(exc, "relay", where, None))
    return str(exc)


# -- datagram FROM, stream TO ------------------------------------------------------------


class _Session:
    """One sender: its stream to TO once connected, its frames waiting until then."""

    __slots__ = ("client", "failed_at", "last_seen", "stream", "waiting", "waiting_bytes")

    def __init__(self, client: Any) -> None:
        self.client = client  # the raw sockaddr the kernel gave
        self.stream: FrameStream | None = None
        self.waiting: list[bytes] = []  # datagrams that came before the stream
        self.waiting_bytes = 0
        self.last_seen = time.monotonic()
        self.failed_at: float | None = None  # when TO could not be reached, last


class DatagramTunnel(SessionTable):
    """Datagrams on ``source``, a stream to ``target`` per sender; ``serve_forever()``, ``close()``.

    Raises:
        AddressInUse: ``source`` is taken.
        UsageError: TLS files that do not load.
    """

    def __init__(
        self,
        source: Address,
        target: Address,
        *,
        idle_timeout: float | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_frame: int = DEFAULT_MAX_FRAME,
        connect_timeout: float | None = 10.0,
        tls_client: object = None,
        to_options: SocketOptions | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.target = target
        self.idle_timeout = idle_timeout or DEFAULT_SESSION_IDLE
        self.max_sessions = max_sessions
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.retry = retry or RetryPolicy()
        setup = client_setup_for(target, tls_client)
        self._tls = setup[1] if setup is not None else None
        self._connect_options = (to_options or SocketOptions()).kwargs(*CONNECT_OPTIONS)
        super().__init__(open_datagram(bind=source))
        # Connect threads hand their streams back here and wake the loop.
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._connected: list[tuple[_Session, socket.socket | None]] = []
        self._connecting: set[threading.Thread] = set()

    # -- the table (as in datagram.DatagramRelay) ---------------------------------------

    def _drop(self, sender: Any, session: _Session) -> None:
        self._end(session)

    def _end(self, session: _Session) -> None:
        """Forget a session and close its stream (a connect still running closes its own)."""
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        stream, session.stream = session.stream, None
        if stream is not None:
            self._selector.unregister(stream.sock.fileno())
            stream.close()

    # -- datagrams from the senders -----------------------------------------------------

    def _from_clients(self) -> None:
        receive = self.front.socket.recvfrom_into
        buffer, view = self._buffer, self._view
        for _ in range(BATCH):
            try:
                size, sender = receive(buffer, MAX_DATAGRAM)
            except _IDLE:
                return
            except OSError as exc:
                log.warning("recv: %s", error_for(exc, "recv", str(self.address), None))
                continue
            if not sender:
                log.warning("datagram from an unnamed socket: no way to reply, dropped")
                continue
            if size > self.max_frame:
                log.warning(
                    "datagram of %d bytes from %s dropped: over the frame limit of %d",
                    size,
                    self._name(sender),
                    self.max_frame,
                )
                continue
            session = self.sessions.get(sender)
            if session is None:
                session = self._open(sender)
            else:
                self._touch(session)
            self._forward(session, view[:size])

    def _forward(self, session: _Session, datagram: memoryview) -> None:
        stream = session.stream
        if session.failed_at is not None:
            if time.monotonic() - session.failed_at < HOLD_OFF:
                return  # TO was unreachable a moment ago: dropped, not one connect each
            self._start_connect(session)
        if stream is None:  # still connecting: wait, within the same bound
            if session.waiting_bytes < HIGH_WATER:
                session.waiting.append(bytes(datagram))
                session.waiting_bytes += len(datagram)
            return
        try:
            stream.send(datagram)
        except OSError as exc:
            self._failed(session, exc)
            return
        self._watch(stream)

    def _watch(self, stream: FrameStream) -> None:
        key = self._selector.get_key(stream.sock.fileno())
        if key.events != stream.events:
            self._selector.modify(stream.sock.fileno(), stream.events, key.data)

    # -- sessions -------------------------------------------------------------------------

    def _open(self, sender: Any) -> _Session:
        self._make_room()
        session = _Session(sender)
        self.sessions[sender] = session
        self._start_connect(session)
        return session

    def _start_connect(self, session: _Session) -> None:
        session.failed_at = None
        thread = threading.Thread(target=self._connect, args=(session,), daemon=True)
        with self._lock:
            self._connecting.add(thread)
        thread.start()

    def _connect(self, session: _Session) -> None:
        """In a thread: TO for one session, retried as the policy says."""
        name = self._name(session.client)
        sock: socket.socket | None = None
        try:
            conn = dial(
                lambda: connect(
                    self.target,
                    timeout=self.connect_timeout,
                    tls=self._tls,
                    **self._connect_options,
                ),
                self.retry,
                f"session {name}",
                stop=self._closing,
            )
            if conn is not None:
                sock, _ = conn.detach()
        except SocketeerError as exc:
            log.warning("session %s: %s; its datagrams dropped for %gs", name, exc, HOLD_OFF)
        with self._lock:
            self._connecting.discard(threading.current_thread())
            if self._closing.is_set():
                if sock is not None:
                    sock.close()
                return
            self._connected.append((session, sock))
        self.stopper.wake()

    def _woken(self) -> None:
        """Connect threads hand their streams over through the stopper: attach them."""
        self._attach_connected()

    def _attach_connected(self) -> None:
        with self._lock:
            done, self._connected = self._connected, []
        for session, sock in done:
            if self.sessions.get(session.client) is not session:  # evicted or expired meanwhile
                if sock is not None:
                    sock.close()
                continue
            if sock is None:  # kept, so its datagrams are dropped for a while
                session.failed_at = time.monotonic()
                session.waiting, session.waiting_bytes = [], 0
                continue
            stream = FrameStream(sock, self.max_frame)
            session.stream = stream
            self._selector.register(sock.fileno(), stream.events, session)
            if log.isEnabledFor(logging.INFO):
                log.info("session %s -> %s opened", self._name(session.client), self.target)
            waiting, session.waiting, session.waiting_bytes = session.waiting, [], 0
            for datagram in waiting:
                self._forward(session, memoryview(datagram))
                if session.client not in self.sessions:
                    break  # the stream failed

    # -- frames back from TO --------------------------------------------------------------

    def _on_session(self, session: _Session, events: int) -> None:
        stream = session.stream
        if stream is None:
            return
        try:
            if events & selectors.EVENT_WRITE:
                stream.outlet.flush()
            if events & selectors.EVENT_READ:
                datagrams = stream.receive()
                for datagram in datagrams:
                    self._reply(session, datagram)
                if datagrams and session.client in self.sessions:
                    self._touch(session)
                if stream.ended:
                    log.info(
                        "session %s: %s closed the stream", self._name(session.client), self.target
                    )
                    self._end(session)
                    return
        except (OSError, FrameTooLarge, ConnectionClosed) as exc:
            self._failed(session, exc)
            return
        if session.stream is not None:
            self._watch(stream)

    def _reply(self, session: _Session, datagram: bytes) -> None:
        try:
            self.front.socket.sendto(datagram, session.client)
        except _IDLE:
            pass  # the sender's socket buffer is full: dropped, as the network would
        except OSError as exc:
            where = str(self._name(session.client))
            log.warning("reply to %s: %s", where, error_for(exc, "send", where, None))

    def _failed(self, session: _Session, exc: BaseException) -> None:
        log.warning(
            "session %s: %s; closing",
            self._name(session.client),
            _stream_error(exc, str(self.target)),
        )
        self._end(session)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            connecting = list(self._connecting)
        for thread in connecting:  # each ends within its connect timeout
            thread.join()
        with self._lock:
            done, self._connected = self._connected, []
        for _, sock in done:
            if sock is not None:
                sock.close()
        for session in list(self.sessions.values()):
            if session.stream is not None:
                session.stream.close()
        self.sessions.clear()
        self._selector.close()
        self.front.close()
        self.stopper.close()

    def __enter__(self) -> DatagramTunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- stream FROM, datagram TO ----------------------------------------------------------


class FramedHandler(Handler):
    """For each stream client: a datagram socket connected to ``target``, frames both ways."""

    name = "relay --frame"
    models = ("thread", "fork")  # a loop per client in its own thread (or child)
    raw_socket = True  # it moves the bytes itself: the thread model weighs none

    def __init__(self, target: Address, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not target.is_datagram:
            raise UsageError(f"--frame from a stream needs a datagram TO, not {target}")
        self.target = target
        self.max_frame = max_frame
        self._targets = resolve(target, passive=False)  # once: every client connects here
        self.idle_timeout: float | None = None
        self._lock = threading.Lock()
        self._wakers: set[socket.socket] = set()

    def configure(self, *, idle_timeout: float | None) -> None:
        self.idle_timeout = idle_timeout

    def serve(self, conn: Connection) -> None:
        """One client's frames to TO and TO's datagrams back, until either ends."""
        peer = str(conn.peer or "client")
        datagram_sock, socket_file = self._open_target()
        wake_read, wake_write = socket.socketpair()
        with self._lock:
            self._wakers.add(wake_write)
        sock, _ = conn.detach()  # closed by the server's conn.close() no more: ours now
        stream = FrameStream(sock, self.max_frame)
        try:
            self._run(conn, stream, datagram_sock, wake_read, peer)
        finally:
            with self._lock:
                self._wakers.discard(wake_write)
            stream.close()
            wake_read.close()
            wake_write.close()
            discard(datagram_sock, socket_file)

    def _open_target(self) -> tuple[socket.socket, SocketFile | None]:
        row = self._targets[0]
        socket_file = None
        with translate_errors("connect", self.target):
            sock = socket.socket(row.family, row.type, row.proto)
        try:
            with translate_errors("connect", self.target):
                if self.target.is_unix:
                    socket_file = autobind_unix(sock)  # so TO can answer this client
                sock.connect(row.sockaddr)
                sock.setblocking(False)
        except BaseException:
            discard(sock, socket_file)
            raise
        return sock, socket_file

    def _run(
        self,
        conn: Connection,
        stream: FrameStream,
        datagrams: socket.socket,
        wake: socket.socket,
        peer: str,
    ) -> None:
        buffer = bytearray(MAX_DATAGRAM)
        last = time.monotonic()
        target = str(self.target)
        with selectors.DefaultSelector() as selector:
            selector.register(stream.sock, stream.events, "stream")
            selector.register(datagrams, selectors.EVENT_READ, "datagram")
            selector.register(wake, selectors.EVENT_READ, "wake")
            while True:
                timeout = None
                if self.idle_timeout is not None:
                    timeout = last + self.idle_timeout - time.monotonic()
                    if timeout <= 0:
                        log.info("idle for %gs: closing %s", self.idle_timeout, peer)
                        return
                ready = selector.select(timeout)
                for key, events in ready:
                    if key.data == "wake":
                        return  # the server is closing
                    try:
                        if key.data == "stream":
                            if events & selectors.EVENT_WRITE:
                                stream.outlet.flush()
                            if events & selectors.EVENT_READ:
                                for datagram in stream.receive():
                                    conn.bytes_received += len(datagram)
                                    with contextlib.suppress(*_IDLE):  # full: dropped
                                        datagrams.send(datagram)
                                if stream.ended:
                                    return
                        else:
                            self._replies(conn, stream, datagrams, buffer)
                    except (FrameTooLarge, ConnectionClosed) as exc:
                        log.warning("%s: %s; closing", peer, exc)
                        raise
                    except ConnectionRefusedError:
                        pass  # ICMP: nothing listens on TO (yet); a datagram was lost
                    except OSError as exc:
                        where = peer if key.data == "stream" else target
                        raise error_for(exc, "relay", where, None) from None
                if ready:
                    last = time.monotonic()
                if selector.get_key(stream.sock).events != stream.events:
                    selector.modify(stream.sock, stream.events, "stream")

    def _replies(
        self, conn: Connection, stream: FrameStream, datagrams: socket.socket, buffer: bytearray
    ) -> None:
        view = memoryview(buffer)
        for _ in range(BATCH):
            if not stream.outlet.has_room:
                return  # the client reads slowly: the rest wait in the socket (or drop there)
            try:
                size = datagrams.recv_into(buffer, MAX_DATAGRAM)
            except _IDLE:
                return
            try:
                sent = stream.send(view[:size])
            except FrameTooLarge:
                log.warning(
                    "datagram of %d bytes from %s dropped: over the frame limit of %d",
                    size,
                    self.target,
                    self.max_frame,
                )
                continue
            if sent >= 0:
                conn.bytes_sent += size  # payload bytes, as bytes in counts them

    def close(self) -> None:
        """Wake every client's loop: the server is cutting what is left."""
        with self._lock:
            wakers = list(self._wakers)
        for waker in wakers:
            with contextlib.suppress(OSError):
                waker.send(b"!")


def framed_relay(
    source: Address,
    target: Address,
    *,
    given: dict[str, object],
    max_frame: int | None,
    retry: RetryPolicy | None,
    idle_timeout: float | None,
    max_sessions: int | None,
    connect_timeout: float | None,
    tls_client: object,
    to_options: SocketOptions,
) -> DatagramTunnel | FramedHandler:
    """The tunnel end for ``source`` → ``target``: a ``DatagramTunnel`` or the handler to serve.

    ``given`` names the options the caller set, to refuse those that do not apply.

    Raises:
        UsageError: not one datagram and one stream address, or an option for the other kind.
    """
    limit = DEFAULT_MAX_FRAME if max_frame is None else max_frame
    if source.is_datagram == target.is_datagram:
        kind = "datagram" if source.is_datagram else "stream"
        raise UsageError(
            f"--frame needs a datagram address on one side and a stream address on the other "
            f"(both are {kind} addresses)"
        )
    if source.is_datagram:
        refused = [name for name in _NOT_FROM_DATAGRAMS if given.get(name)]
        if refused:
            raise UsageError(f"not for a --frame relay from datagrams: {', '.join(refused)}")
        sessions: dict[str, Any] = {}
        if max_sessions is not None:
            sessions["max_sessions"] = max_sessions
        return DatagramTunnel(
            source,
            target,
            idle_timeout=idle_timeout,
            max_frame=limit,
            connect_timeout=connect_timeout,
            tls_client=tls_client,
            to_options=to_options,
            retry=retry,
            **sessions,
        )
    refused = [name for name in _NOT_TO_DATAGRAMS if given.get(name)]
    if retry is not None:
        refused.append("retry (a datagram TO is not connected to; nothing to retry)")
    if max_sessions is not None:
        refused.append("max_sessions (a stream client is one session)")
    if refused:
        raise UsageError(f"not for a --frame relay to datagrams: {', '.join(refused)}")
    return FramedHandler(target, max_frame=limit)


#: What a datagram front cannot do (it is not a server of connections).
_NOT_FROM_DATAGRAMS = (
    "once",
    "max_connections",
    "proxy_protocol",
    "accept_proxy_protocol",
    "hexdump",
    "tls_server",
    "allow",
    "deny",
    "model",
    "workers",
    "proxy",
)
#: What a datagram TO does not take.
_NOT_TO_DATAGRAMS = ("proxy_protocol", "hexdump", "tls_client", "proxy", "to_source", "bind_device")
