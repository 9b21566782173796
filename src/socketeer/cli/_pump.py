"""Copy stdin to stream sockets and stream sockets to stdout, in one thread.

One ``selectors`` loop serves ``connect``, ``listen`` and ``listen -k``:

- stdin is read only while every socket has room (at most ``HIGH_WATER``
  bytes queued), so a slow peer slows the reader instead of filling memory;
- sockets are non-blocking and written as they drain, so both directions move
  at once and neither side can deadlock the other by not reading;
- stdin EOF becomes ``shutdown(SHUT_WR)`` once the queued bytes are out, and
  the loop keeps reading until the peer closes (SPEC §5 half-close);
- with ``-k`` on a TLS listener, each client's handshake is driven by the same
  loop (``tls.ServerHandshake``), so a client that never finishes its
  handshake holds up nobody else.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from typing import TYPE_CHECKING

from .._sockio import translate_errors
from ..connection import Connection
from ..errors import SocketeerError, Timeout
from ..hexdump import HexDumper
from ..listener import Listener
from ._report import Reporter
from ._stdio import READ_SIZE, read_stdin, to_crlf, write_stdout

if TYPE_CHECKING:
    from ..tls import ServerHandshake

HIGH_WATER = 1 << 20


def _none() -> int:
    return 0


def _WOULD_BLOCK() -> tuple[type[BaseException], ...]:
    """BlockingIOError, and TLS's want-read/want-write when ssl is in use at all."""
    import sys

    ssl = sys.modules.get("ssl")
    if ssl is None:
        return (BlockingIOError,)
    return (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


_STDIN = "stdin"
_LISTENER = "listener"
_HANDSHAKE = "handshake"


class _Peer:
    __slots__ = ("conn", "name", "outbuf", "shutdown_pending", "sock")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sock = conn.socket
        self.name = str(conn.peer or conn.local)
        self.outbuf = bytearray()
        self.shutdown_pending = False


class StreamPump:
    """The data loop of the stream commands; ``run`` returns when the work is done."""

    def __init__(
        self,
        report: Reporter,
        *,
        half_close: bool = True,
        crlf: bool = False,
        idle_timeout: float | None = None,
    ) -> None:
        self._report = report
        self._half_close = half_close
        self._crlf = crlf
        self._after_cr = False
        self._idle_timeout = idle_timeout
        self._last_traffic = time.monotonic()
        # poll() also accepts regular files (always readable), unlike epoll.
        self._selector = selectors.PollSelector()
        self._peers: dict[int, _Peer] = {}
        self._stdin_open = True
        self._masks: dict[int, int] = {}
        self._listener: Listener | None = None
        self._max_conns: int | None = None
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
        room = all(len(p.outbuf) < HIGH_WATER for p in self._peers.values())
        wants_stdin = self._stdin_open and room and (bool(self._peers) or self._listener is None)
        self._watch(0, selectors.EVENT_READ if wants_stdin else 0, _STDIN)
        for fd, peer in self._peers.items():
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.outbuf else 0)
            self._watch(fd, mask, peer)
        for fd, handshake in self._handshakes.items():
            mask = selectors.EVENT_WRITE if handshake.wants_write else selectors.EVENT_READ
            self._watch(fd, mask, _HANDSHAKE)

    def add(self, conn: Connection) -> None:
        conn.socket.setblocking(False)
        peer = _Peer(conn)
        self._peers[conn.fileno()] = peer
        if not self._stdin_open:
            self._finish_writing(peer)

    def _drop(self, peer: _Peer) -> None:
        fd = peer.sock.fileno()
        self._watch(fd, 0, None)
        self._peers.pop(fd, None)
        peer.conn.close()

    # -- the loop -----------------------------------------------------------------

    def run(self, listener: Listener | None = None, max_conns: int | None = None) -> None:
        """Copy until the peer closes, or with a listener (``-k``) until interrupted.

        Raises:
            Timeout: ``idle_timeout`` passed without traffic.
            ConnectionReset, NetworkError: the (only) peer failed.
        """
        self._listener = listener
        self._max_conns = max_conns
        if listener is not None:
            listener.socket.setblocking(False)
            self._watch(listener.fileno(), selectors.EVENT_READ, _LISTENER)
        try:
            while self._peers or listener is not None:
                self._update_interest()
                for key, mask in self._selector.select(self._wait_time()):
                    if key.data is _STDIN:
                        self._on_stdin()
                    elif key.data is _LISTENER:
                        self._on_accept()
                    elif key.data is _HANDSHAKE and key.fd in self._handshakes:
                        self._on_handshake(key.fd)
                    elif key.fd in self._peers:  # skip a peer dropped earlier in this batch
                        alive = self._on_peer(self._peers[key.fd], mask)
                        if not alive and listener is None:
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
            for peer in self._peers.values():
                self._finish_writing(peer)
            return
        self._traffic()
        if self._crlf:
            data, self._after_cr = to_crlf(data, self._after_cr)
        self._report.dump(data, HexDumper.SENT)
        for peer in self._peers.values():
            peer.outbuf += data

    def _finish_writing(self, peer: _Peer) -> None:
        """stdin is done: half-close once everything queued for this peer is out."""
        if not self._half_close:
            return
        if peer.outbuf:
            peer.shutdown_pending = True
        else:
            self._shutdown(peer)

    def _shutdown(self, peer: _Peer) -> None:
        peer.shutdown_pending = False
        if peer.conn.is_tls:
            return  # no TLS half-close (see Connection.shutdown_write): wait for the peer
        # If the peer is gone already, its reader will say how.
        with contextlib.suppress(OSError):
            peer.sock.shutdown(socket.SHUT_WR)

    def _on_accept(self) -> None:
        assert self._listener is not None
        context = self._listener.tls_context
        try:
            conn = self._listener.accept(timeout=0, handshake=False)
        except (Timeout, SocketeerError) as exc:
            if not isinstance(exc, Timeout):
                self._report.warn(f"accept: {exc}")
            return
        client = str(conn.peer or "local client")
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

    def _on_peer(self, peer: _Peer, mask: int) -> bool:
        """Serve one socket event; False once this peer is finished."""
        try:
            if mask & selectors.EVENT_WRITE and peer.outbuf:
                self._send(peer)
            if mask & selectors.EVENT_READ:
                return self._receive(peer)
        except SocketeerError as exc:
            if self._listener is None:
                raise
            self._report.warn(f"{peer.name}: {exc}")
            self._drop(peer)
            return False
        return True

    def _send(self, peer: _Peer) -> None:
        with translate_errors("send", peer.name):
            try:
                sent = peer.sock.send(peer.outbuf)
            except _WOULD_BLOCK():
                return
        del peer.outbuf[:sent]
        self._traffic()
        if not peer.outbuf and peer.shutdown_pending:
            self._shutdown(peer)

    def _receive(self, peer: _Peer) -> bool:
        with translate_errors("recv", peer.name):
            try:
                data = peer.sock.recv(READ_SIZE)
                # TLS: records already decrypted wait inside the SSL object, where
                # poll() cannot see them; take them now.
                while data and getattr(peer.sock, "pending", _none)():
                    more = peer.sock.recv(READ_SIZE)
                    if not more:
                        break
                    data += more
            except _WOULD_BLOCK():
                return True
        if data:
            self._traffic()
            self._report.dump(data, HexDumper.RECEIVED)
            write_stdout(data)
            return True
        self._report.info(f"{peer.name} closed the connection")
        self._drop(peer)
        return False
