"""Datagram relays: a session per sender, so replies reach the right client (SPEC §6).

Each sender on FROM gets its own socket connected to TO (a session); what
comes back on that socket goes to that sender only. All sessions are served
by one loop, on the same fast path as datagram servers: every wake-up drains
a socket until EAGAIN into one reused buffer, senders stay raw sockaddrs (an
``Address`` is made for a log line only), and nothing is scanned per
datagram.

The session table is kept in order of last activity (an ``OrderedDict``
moved to the end on every datagram, either way), which makes it its own
timer queue: every session has the same idle timeout, so the first entry is
always the next to expire and the loop sleeps exactly until then. The same
order evicts the least recently used session when the table is full, so a
flood of senders cannot exhaust descriptors.
"""

from __future__ import annotations

import logging
import selectors
import socket
import sys
import time
from typing import Any

from .._resource import discard
from .._sockio import SocketFile, autobind_unix, error_for, resolve, translate_errors
from ..address import Address
from ..datagram import MAX_DATAGRAM, open_datagram
from ..errors import SocketeerError
from .sessions import SessionTable

log = logging.getLogger("socketeer.relay")

DEFAULT_SESSION_IDLE = 60.0
DEFAULT_MAX_SESSIONS = 1024
BATCH = 256  # datagrams per wake-up and socket before the others get a turn
_TRUNC = getattr(socket, "MSG_TRUNC", 0) if sys.platform.startswith("linux") else 0
_IDLE = (BlockingIOError, InterruptedError)


class _Session:
    """One sender's own socket to TO, and when it last moved a datagram."""

    __slots__ = ("client", "last_seen", "sock", "socket_file")

    def __init__(self, client: Any, sock: socket.socket, socket_file: SocketFile | None) -> None:
        self.client = client  # the raw sockaddr the kernel gave
        self.sock = sock
        self.socket_file = socket_file  # a Unix session's own name, off Linux
        self.last_seen = time.monotonic()

    def close(self) -> None:
        discard(self.sock, self.socket_file)


__all__ = ["DatagramRelay"]


class DatagramRelay(SessionTable):
    """A datagram relay from ``source`` to ``target``; ``serve_forever()``, then ``close()``."""

    def __init__(
        self,
        source: Address,
        target: Address,
        *,
        idle_timeout: float | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self.target = target
        self.idle_timeout = idle_timeout or DEFAULT_SESSION_IDLE
        self.max_sessions = max_sessions
        self._targets = resolve(target, passive=False)  # once: every session connects here
        super().__init__(open_datagram(bind=source))

    # -- the table ------------------------------------------------------------------

    def _drop(self, sender: Any, session: _Session) -> None:
        del self.sessions[sender]
        self._close_session(session)

    # -- datagrams --------------------------------------------------------------------

    def _from_clients(self) -> None:
        receive = self.front.socket.recvfrom_into
        buffer, view = self._buffer, self._view
        for _ in range(BATCH):
            try:
                size, sender = receive(buffer, MAX_DATAGRAM, _TRUNC)
            except _IDLE:
                return
            except OSError as exc:
                log.warning("recv: %s", error_for(exc, "recv", str(self.address), None))
                continue
            if size > MAX_DATAGRAM:
                log.warning("datagram of %d bytes from %s dropped", size, self._name(sender))
                continue
            if not sender:
                log.warning("datagram from an unnamed socket: no way to reply, dropped")
                continue
            session = self.sessions.get(sender)
            if session is None:
                session = self._open_session(sender)
                if session is None:
                    continue
            else:
                self._touch(session)
            try:
                session.sock.send(view[:size])
            except _IDLE:
                pass  # TO's socket buffer is full: dropped, as the network would
            except OSError as exc:
                where = str(self.target)
                log.warning(
                    "session %s: %s", self._name(sender), error_for(exc, "send", where, None)
                )

    def _open_session(self, sender: Any) -> _Session | None:
        self._make_room()
        row = self._targets[0]
        socket_file = None
        try:
            with translate_errors("connect", self.target):
                sock = socket.socket(row.family, row.type, row.proto)
            try:
                with translate_errors("connect", self.target):
                    if self.target.is_unix:
                        socket_file = autobind_unix(sock)  # so TO can answer this session
                    sock.connect(row.sockaddr)
                    sock.setblocking(False)
            except BaseException:
                discard(sock, socket_file)
                raise
        except SocketeerError as exc:
            log.warning("session for %s: %s", self._name(sender), exc)
            return None
        session = _Session(sender, sock, socket_file)
        self.sessions[sender] = session
        self._selector.register(sock.fileno(), selectors.EVENT_READ, session)
        if log.isEnabledFor(logging.INFO):
            log.info("session %s -> %s opened", self._name(sender), self.target)
        return session

    def _on_session(self, session: _Session, events: int) -> None:
        """One reply per wake-up: a session mostly has one waiting (a request, a reply),
        and the selector is level-triggered, so a second would only find EAGAIN."""
        try:
            size = session.sock.recv_into(self._buffer, MAX_DATAGRAM)
        except _IDLE:
            return
        except OSError as exc:  # ICMP "port unreachable" from TO, say
            log.warning(
                "session %s: %s",
                self._name(session.client),
                error_for(exc, "recv", str(self.target), None),
            )
            return
        try:
            self.front.socket.sendto(self._view[:size], session.client)
        except _IDLE:
            pass
        except OSError as exc:
            where = str(self._name(session.client))
            log.warning("reply to %s: %s", where, error_for(exc, "send", where, None))
        if session.client in self.sessions:
            self._touch(session)

    def _close_session(self, session: _Session) -> None:
        self._selector.unregister(session.sock.fileno())
        session.close()

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        self._selector.close()
        self.front.close()
        self.stopper.close()

    def __enter__(self) -> DatagramRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
