"""Moving bytes through non-blocking sockets without losing any: the flow control copiers share.

Two loops copy streams in one thread: the stream commands' pump (stdin to
sockets, sockets to stdout) and the relay's polled pairs (TLS, standard I/O,
programs). Both need the same four rules, kept here once:

- a socket is read only when it is ready, and a TLS socket's records that are
  already decrypted are taken at once (``pending()``), because ``poll`` cannot
  see them inside the SSL object (``receive_ready``);
- what cannot be written now waits in an outbox, and a caller stops reading the
  other side while the outbox is at its high-water mark, so a slow reader slows
  the writer instead of filling memory (``Outlet``);
- the end of the input becomes ``shutdown(SHUT_WR)`` only once the outbox has
  drained, so the half-close never overtakes data (``Outlet.finish``); over
  TLS it becomes close_notify (``tls.close_notify``), written raw through the
  same outbox, and the socket keeps being read: after our close_notify the
  peer's close_notify is an ``SSLZeroReturnError``, which is its EOF
  (``tls_closed``);
- "would block" (``BlockingIOError``, TLS's want-read/want-write) is the
  normal answer of a non-blocking socket, not an error; every other
  ``OSError`` is the caller's to translate, since only it knows what to call
  the socket.

Below the CLI, the relay and the servers: it imports none of them, and not
``ssl`` either (starting the CLI must not pay for it); a TLS socket can only
exist once something else has imported ``ssl`` (and ``tls``, which a TLS
half-close imports when it happens).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

HIGH_WATER: Final = 1 << 20

__all__ = ["HIGH_WATER", "Outlet", "is_tls", "receive_ready", "tls_closed", "would_block"]


def would_block() -> tuple[type[BaseException], ...]:
    """BlockingIOError, and TLS's want-read/want-write when ssl is in use at all.

    Called in ``except`` clauses, which Python evaluates only when an
    exception is being matched, so the common path pays nothing for it.
    """
    ssl = sys.modules.get("ssl")
    if ssl is None:
        return (BlockingIOError,)
    return (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def tls_closed() -> tuple[type[BaseException], ...]:
    """What a TLS read raises for the peer's close_notify after we sent ours: an EOF.

    (Before ours, ``ssl`` returns ``b""`` for it.) For ``except`` clauses, as
    ``would_block``; an empty tuple, which matches nothing, without ssl.
    """
    ssl = sys.modules.get("ssl")
    return () if ssl is None else (ssl.SSLZeroReturnError,)


def is_tls(sock: socket.socket) -> bool:
    """Whether ``sock`` is an ``ssl.SSLSocket`` (without importing ssl to find out)."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(sock, ssl.SSLSocket)


def receive_ready(sock: socket.socket, size: int) -> bytes | None:
    """What ``sock`` has now: bytes, b"" at EOF, or None when a read would block.

    Over TLS one ``recv`` returns at most one record; the records OpenSSL has
    decrypted already are taken too, since no readiness event announces them.

    Raises:
        OSError: the socket failed (the caller names it in its own error).
    """
    try:
        data = sock.recv(size)
    except would_block():
        return None
    except tls_closed():
        return b""
    if not data or not is_tls(sock):
        return data
    chunks = [data]
    pending: Callable[[], int] = sock.pending  # type: ignore[attr-defined]
    while pending():
        try:
            more = sock.recv(size)
        except (*would_block(), *tls_closed()):
            break
        if not more:
            break
        chunks.append(more)
    return b"".join(chunks) if len(chunks) > 1 else data


_OPEN, _FINISHING, _NOTIFYING, _DONE = 0, 1, 2, 3  # _NOTIFYING: TLS close_notify going out


class Outlet:
    """The outbox of one descriptor being written: queue now, send when it takes it.

    ``target`` is a socket (made non-blocking by the caller) or a file
    descriptor. A non-blocking descriptor (a pipe to a program) is written as
    it drains; a blocking one (standard output, shared with whoever started
    us, so its mode is not ours to change) takes each flush whole.

    ``end`` is what ``finish`` does once the outbox is empty; by default
    ``shutdown(SHUT_WR)`` for a plain socket, close_notify for TLS (queued raw
    and flushed like data: ``done`` once it is out), nothing for a descriptor.
    """

    __slots__ = ("_buffer", "_end", "_high_water", "_state", "_target")

    def __init__(
        self,
        target: socket.socket | int,
        *,
        high_water: int = HIGH_WATER,
        end: Callable[[], None] | None = None,
    ) -> None:
        self._target = target
        self._high_water = high_water
        self._buffer = bytearray()
        self._state = _OPEN
        if end is None and isinstance(target, socket.socket):
            end = self._close_notify if is_tls(target) else self._shutdown_write
        self._end = end

    @property
    def pending(self) -> int:
        """Bytes queued and not yet taken by the descriptor."""
        return len(self._buffer)

    @property
    def has_room(self) -> bool:
        """Below the high-water mark: the caller may read more for this outlet."""
        return len(self._buffer) < self._high_water

    @property
    def finishing(self) -> bool:
        """``finish`` was called (done or still draining): queue nothing more."""
        return self._state != _OPEN

    @property
    def done(self) -> bool:
        """``finish`` was called, the outbox is empty and the end (half-close) is done."""
        return self._state == _DONE

    def queue(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN:
            raise ValueError("queue() after finish()")
        self._buffer += data

    def flush(self) -> int:
        """Write what the descriptor takes now; the count written (0 if it would block).

        Raises:
            OSError: the write failed (a reset, a closed pipe); what was not
            written stays in ``pending``.
        """
        if not self._buffer:
            return 0
        try:
            if isinstance(self._target, socket.socket):
                sent = self._target.send(self._buffer)
            else:
                sent = os.write(self._target, self._buffer)
        except would_block():
            return 0
        except OSError:
            if self._state == _NOTIFYING:
                # Only close_notify was left: a peer gone already is told by its reader.
                self._buffer.clear()
                self._state = _DONE
                return 0
            raise
        # A prefix delete is cheap (CPython moves the start), and TLS accepts
        # the retry of a write it refused from the moved buffer.
        del self._buffer[:sent]
        if not self._buffer and self._state != _OPEN:
            self._end_now()
        return sent

    def finish(self, *, half_close: bool = True) -> None:
        """No more data will be queued: end writing once the outbox is out.

        With ``half_close=False`` (``--no-shutdown``) the outlet is done when
        drained, and the descriptor stays open for writing.
        """
        if self._state != _OPEN:
            return
        if not half_close:
            self._end = None
        self._state = _FINISHING
        if not self._buffer:
            self._end_now()

    def _end_now(self) -> None:
        self._state = _DONE
        end, self._end = self._end, None
        if end is not None:
            end()

    def _close_notify(self) -> None:
        """TLS's half-close: close_notify, written below TLS as the last bytes out.

        The reader of this socket takes what it decrypted at every read
        (``receive_ready``), so nothing decrypted is left unread here.
        """
        from .tls import close_notify

        sock = self._target
        assert isinstance(sock, socket.socket)
        try:
            record = close_notify(sock)  # type: ignore[arg-type]
        except OSError:
            return  # no socket pair to be had (EMFILE): no half-close, as a gone peer
        if record:
            self._target = sock.fileno()  # the record is TLS already: os.write from here
            self._buffer += record
            self._state = _NOTIFYING
            self.flush()

    def _shutdown_write(self) -> None:
        assert isinstance(self._target, socket.socket)
        # A peer that is gone already: its reader, not the half-close, says how.
        with contextlib.suppress(OSError):
            self._target.shutdown(socket.SHUT_WR)
