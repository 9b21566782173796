"""Copy stdin to stream sockets and stream sockets to stdout, in one thread.

One ``selectors`` loop serves ``connect``, ``listen`` and ``listen -k``; the
flow control (outboxes, high-water mark, half-close after the drain, TLS
records, would-block) is ``_flow``'s, shared with the relay:

- stdin is read only while every socket has room (below ``HIGH_WATER``
  bytes queued), so a slow peer slows the reader instead of filling memory;
- sockets are non-blocking and written as they drain, so both directions move
  at once and neither side can deadlock the other by not reading;
- stdin EOF becomes ``shutdown(SHUT_WR)`` once the queued bytes are out, and
  the loop keeps reading until the peer closes (SPEC §5 half-close);
- a half-close is not a close: the peer's EOF ends only what it sends, and
  stdin keeps going to it until stdin ends. The session is over when both
  directions are: the peer's EOF received, and stdin's end passed on (outbox
  drained, ``SHUT_WR`` sent; with ``--no-shutdown``, outbox drained). A peer
  that resets before that is an error naming how much of stdin it missed;
- except at a terminal: when stdin is a tty, the peer's EOF ends the session
  at once, as ``nc`` does, so a person need not press Ctrl-D after the server
  hung up (nothing is lost: what was not typed yet was never sent);
- with ``-k`` a client that half-closes stays as a write-only peer until
  stdin ends and its outbox is out; a client that fails is dropped with a
  warning, and the listener keeps serving. Clients ``--allow``/``--deny``
  refuse are closed at once;
- with ``-k`` on a TLS listener, each client's handshake is driven by the same
  loop (``tls.ServerHandshake``), so a client that never finishes its
  handshake holds up nobody else;
- ``--send-only``: what arrives is read and dropped (captured by ``-o``), and
  a peer is done once stdin's end has been passed on to it, without waiting
  for its EOF; ``--recv-only``: stdin is never read and never ends (no
  ``SHUT_WR``), so a peer is done at its EOF; ``--delay S`` releases stdin a
  line at a time (``_pacing``), and stdin's end is passed on after the last.
"""

from __future__ import annotations

import os
import selectors
import stat
import time

from .._flow import Outlet, receive_ready
from .._sockio import translate_errors
from ..connection import Connection
from ..errors import NetworkError, SocketeerError, Timeout
from ..hexdump import HexDumper
from ..listener import Listener
from ._report import Reporter
from ._stdio import READ_SIZE, read_stdin, to_crlf, write_stdout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..access import AccessList
    from ..tls import ServerHandshake
    from ._capture import Capture
    from ._options import SessionOptions

_STDIN = "stdin"
_LISTENER = "listener"
_HANDSHAKE = "handshake"


class _Peer:
    __slots__ = ("conn", "name", "outlet", "reading", "sent", "sock")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sock = conn.socket
        self.name = str(conn.peer or conn.local)
        self.outlet = Outlet(conn.socket)
        self.reading = True  # until the peer's EOF
        self.sent = 0  # bytes of stdin the socket took


def _stdin_left() -> int | None:
    """Bytes of stdin not read yet, when stdin is a regular file (else unknown)."""
    try:
        info = os.fstat(0)
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(0, info.st_size - os.lseek(0, 0, os.SEEK_CUR))
    except OSError:
        return None


class StreamPump:
    """The data loop of the stream commands; ``run`` returns when the work is done."""

    def __init__(
        self,
        report: Reporter,
        *,
        half_close: bool = True,
        crlf: bool = False,
        idle_timeout: float | None = None,
        session: SessionOptions | None = None,
        capture: Capture | None = None,
    ) -> None:
        self._report = report
        self._half_close = half_close
        self._capture = capture if capture is not None and capture.active else None
        self._deliver = session is None or session.receive  # received bytes to stdout
        self._send_only = not self._deliver
        self._pacer = None
        if session is not None and session.delay:
            from ._pacing import LinePacer

            self._pacer = LinePacer(session.delay)
        self._crlf = crlf
        self._after_cr = False
        self._idle_timeout = idle_timeout
        self._last_traffic = time.monotonic()
        # poll() also accepts regular files (always readable), unlike epoll.
        self._selector = selectors.PollSelector()
        self._peers: dict[int, _Peer] = {}
        self._stdin_open = True
        self._input_over = False  # stdin's end reached the outlets (after paced lines)
        if session is not None and not session.send:  # --recv-only: stdin never ends
            self._stdin_open = False
            self._half_close = False
            self._input_over = True
        self._interactive = os.isatty(0)
        self._masks: dict[int, int] = {}
        self._listener: Listener | None = None
        self._max_conns: int | None = None
        self._access: AccessList | None = None
        self._handshakes: dict[int, ServerHandshake] = {}  # TLS clients not yet peers

    # -- registration -----------------------------------------------------------

    def _watch(self, fd: int, mask: int, data: object) -> None:
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        if not mask:
            self._selector.unregister(fd)
            del self._masks[fd]
        elif not old:
            self._selector.register(fd, mask, data)
            self._masks[fd] = mask
        else:
            self._selector.modify(fd, mask, data)
            self._masks[fd] = mask

    def _update_interest(self) -> None:
        room = all(p.outlet.has_room for p in self._peers.values())
        room = room and not (self._pacer is not None and self._pacer.waiting)
        wants_stdin = self._stdin_open and room and (bool(self._peers) or self._listener is None)
        self._watch(0, selectors.EVENT_READ if wants_stdin else 0, _STDIN)
        for fd, peer in self._peers.items():
            mask = selectors.EVENT_READ if peer.reading else 0
            if peer.outlet.pending:
                mask |= selectors.EVENT_WRITE
            self._watch(fd, mask, peer)
        for fd, handshake in self._handshakes.items():
            mask = selectors.EVENT_WRITE if handshake.wants_write else selectors.EVENT_READ
            self._watch(fd, mask, _HANDSHAKE)

    def add(self, conn: Connection) -> None:
        conn.socket.setblocking(False)
        peer = _Peer(conn)
        self._peers[conn.fileno()] = peer
        if self._input_over:
            peer.outlet.finish(half_close=self._half_close)

    def _drop(self, peer: _Peer) -> None:
        fd = peer.sock.fileno()
        self._watch(fd, 0, None)
        self._peers.pop(fd, None)
        peer.conn.close()

    def _settle(self, peer: _Peer) -> None:
        """Drop the peer once both of its directions are done."""
        if (
            (not peer.reading or self._send_only)
            and peer.outlet.done
            and peer.sock.fileno() in self._peers
        ):
            self._report.debug(f"{peer.name}: both directions done")
            self._drop(peer)

    # -- the loop -----------------------------------------------------------------

    def run(
        self,
        listener: Listener | None = None,
        max_conns: int | None = None,
        access: AccessList | None = None,
    ) -> None:
        """Copy until the peer is done, or with a listener (``-k``) until interrupted.

        ``access`` (``--allow``/``--deny``) closes the clients it does not permit.

        Raises:
            Timeout: ``idle_timeout`` passed without traffic.
            ConnectionReset, NetworkError: the (only) peer failed.
        """
        self._listener = listener
        self._max_conns = max_conns
        self._access = access
        if listener is not None:
            listener.socket.setblocking(False)
            self._watch(listener.fileno(), selectors.EVENT_READ, _LISTENER)
        try:
            while self._peers or listener is not None:
                if self._pacer is not None:
                    self._release_lines()
                    if listener is None and not self._peers:
                        return
                self._update_interest()
                for key, mask in self._selector.select(self._wait_time()):
                    if key.data is _STDIN:
                        self._on_stdin()
                    elif key.data is _LISTENER:
                        self._on_accept()
                    elif key.data is _HANDSHAKE and key.fd in self._handshakes:
                        self._on_handshake(key.fd)
                    elif key.fd in self._peers:  # skip a peer dropped earlier in this batch
                        self._on_peer(self._peers[key.fd], mask)
                    if listener is None and not self._peers:
                        return
                self._check_idle()
        finally:
            # Close without the selector's bookkeeping: a KeyboardInterrupt may
            # have landed half-way through an update of it, and a second error
            # raised here would replace the first (and its exit code).
            peers, self._peers = list(self._peers.values()), {}
            for peer in peers:
                peer.conn.close()
            handshakes, self._handshakes = list(self._handshakes.values()), {}
            for handshake in handshakes:
                handshake.sock.close()
            self._selector.close()

    def _wait_time(self) -> float | None:
        deadline = None if self._idle_timeout is None else self._last_traffic + self._idle_timeout
        if self._pacer is not None and (wait := self._pacer.wait(time.monotonic())) is not None:
            due = time.monotonic() + wait
            deadline = due if deadline is None else min(deadline, due)
        if self._handshakes:
            first = min(h.deadline for h in self._handshakes.values())
            deadline = first if deadline is None else min(deadline, first)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _check_idle(self) -> None:
        if self._handshakes:
            now = time.monotonic()
            for fd, handshake in list(self._handshakes.items()):
                if now >= handshake.deadline:
                    self._drop_handshake(fd)
                    self._report.warn(str(handshake.expire()))
        if self._idle_timeout is None:
            return
        if time.monotonic() - self._last_traffic >= self._idle_timeout:
            raise Timeout(f"idle timeout: no traffic for {self._idle_timeout:g}s")

    def _traffic(self) -> None:
        self._last_traffic = time.monotonic()

    # -- events -------------------------------------------------------------------

    def _on_stdin(self) -> None:
        data = read_stdin()
        if not data:
            self._stdin_open = False
            self._report.debug("stdin closed")
            if self._pacer is None:
                self._end_input()
            else:
                self._pacer.end()
            return
        self._traffic()
        if self._crlf:
            data, self._after_cr = to_crlf(data, self._after_cr)
        if self._pacer is not None:
            self._pacer.feed(data)
            self._release_lines()
            return
        self._send_all(data)

    def _send_all(self, data: bytes) -> None:
        self._report.dump(data, HexDumper.SENT)
        if self._capture is not None:
            self._capture.sent(data)
        for peer in self._peers.values():
            peer.outlet.queue(data)

    def _end_input(self) -> None:
        """Pass stdin's end on to every peer (``SHUT_WR`` once its outbox is out)."""
        self._input_over = True
        for peer in list(self._peers.values()):
            peer.outlet.finish(half_close=self._half_close)
            self._settle(peer)

    def _release_lines(self) -> None:
        """``--delay``: send the line that is due, if any; after the last, stdin's end."""
        assert self._pacer is not None
        line = self._pacer.take(time.monotonic())
        if line is not None:
            self._traffic()
            self._send_all(line)
        if not self._stdin_open and not self._pacer.waiting and not self._input_over:
            self._end_input()

    def _on_accept(self) -> None:
        assert self._listener is not None
        context = self._listener.tls_context
        try:
            conn = self._listener.accept_waiting()  # readable: no deadline, no handshake
        except SocketeerError as exc:
            self._report.warn(f"accept: {exc}")
            return
        if conn is None:
            return
        client = str(conn.peer or "local client")
        if self._access is not None and not self._access.permits(conn.peer):
            self._report.warn(f"connection from {client} closed: denied by --allow/--deny")
            conn.close()
            return
        if self._max_conns is not None and self._open_count() >= self._max_conns:
            self._report.warn(
                f"connection from {client} closed: --max-conns {self._max_conns} reached"
            )
            conn.close()
            return
        if context is None:
            self._report.info(f"connection from {client}")
            self.add(conn)
            return
        from ..tls import ServerHandshake

        sock, _ = conn.detach()
        try:
            handshake = ServerHandshake(sock, context, f"client {client}")
        except SocketeerError as exc:
            self._report.warn(str(exc))
            return
        self._handshakes[handshake.sock.fileno()] = handshake
        self._on_handshake(handshake.sock.fileno())  # a ClientHello may be waiting already

    def _open_count(self) -> int:
        return len(self._peers) + len(self._handshakes)

    def _drop_handshake(self, fd: int) -> None:
        self._watch(fd, 0, None)
        del self._handshakes[fd]

    def _on_handshake(self, fd: int) -> None:
        """The socket of a TLS client in its handshake is ready: take the next step."""
        assert self._listener is not None
        handshake = self._handshakes[fd]
        try:
            done = handshake.step()
        except SocketeerError as exc:
            self._drop_handshake(fd)  # step() closed the socket
            self._report.warn(str(exc))
            return
        if not done:
            return
        self._drop_handshake(fd)
        conn = Connection(handshake.sock, address=self._listener.address)
        self._report.info(f"connection from {conn.peer or 'local client'}")
        self.add(conn)

    def _on_peer(self, peer: _Peer, mask: int) -> None:
        """Serve one socket event; the peer is dropped once it is done or failed."""
        try:
            if mask & selectors.EVENT_WRITE and peer.outlet.pending:
                self._send(peer)
            if mask & selectors.EVENT_READ and peer.reading:
                self._receive(peer)
        except SocketeerError as exc:
            error = self._with_undelivered(peer, exc)
            if self._listener is None:
                raise error from exc
            self._report.warn(f"{peer.name}: {error}")
            self._drop(peer)
            return
        self._settle(peer)

    def _with_undelivered(self, peer: _Peer, exc: SocketeerError) -> SocketeerError:
        """``exc``, saying how much of stdin the peer missed if it went before the end."""
        if not isinstance(exc, NetworkError) or not (self._stdin_open or peer.outlet.pending):
            return exc
        rest = _stdin_left() if self._stdin_open else 0
        if rest is None:  # a pipe or a terminal: how much more will come is unknown
            detail = f"stdin not delivered after its first {peer.sent} bytes"
        else:
            detail = f"{peer.outlet.pending + rest} bytes of stdin not delivered"
        error = type(exc)(f"{exc}: {detail}")
        error.errno = exc.errno
        return error

    def _send(self, peer: _Peer) -> None:
        with translate_errors("send", peer.name):
            sent = peer.outlet.flush()
        if sent:
            peer.sent += sent
            self._traffic()

    def _receive(self, peer: _Peer) -> None:
        with translate_errors("recv", peer.name):
            data = receive_ready(peer.sock, READ_SIZE)
        if data is None:
            return
        if data:
            self._traffic()
            self._report.dump(data, HexDumper.RECEIVED)
            if self._capture is not None:
                self._capture.received(data)
            if self._deliver:
                write_stdout(data)
            return
        peer.reading = False
        if self._interactive or peer.outlet.finishing:
            self._report.info(f"{peer.name} closed the connection")
            if self._interactive:  # a person at a terminal: the peer's EOF ends the session
                self._drop(peer)
            return
        self._report.info(f"{peer.name} closed its side; still sending stdin to it")
