"""Datagram relays: a session per sender, so replies reach the right client (SPEC §6).

Each sender on FROM gets its own socket connected to TO (a session); what
comes back on that socket goes to that sender only. Sessions idle for
``idle_timeout`` expire, and the table is bounded: when it is full the least
recently used session is evicted (and logged), so a flood of senders cannot
exhaust file descriptors.
"""

from __future__ import annotations

import logging
import selectors
import time
from collections import OrderedDict

from ..address import Address
from ..datagram import DatagramEndpoint, open_datagram
from ..errors import SocketeerError, Timeout
from ..server.lifecycle import Stopper

log = logging.getLogger("socketeer.relay")

DEFAULT_SESSION_IDLE = 60.0
DEFAULT_MAX_SESSIONS = 1024


class _Session:
    __slots__ = ("client", "endpoint", "last_seen")

    def __init__(self, client: Address, endpoint: DatagramEndpoint) -> None:
        self.client = client
        self.endpoint = endpoint
        self.last_seen = time.monotonic()


class DatagramRelay:
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
        self.front = open_datagram(bind=source)
        self.address = self.front.local
        self.sessions: OrderedDict[Address, _Session] = OrderedDict()
        self.stopper = Stopper()
        self._selector = selectors.DefaultSelector()

    def serve_forever(self) -> None:
        self.stopper.install_signals()
        selector = self._selector
        selector.register(self.front.fileno(), selectors.EVENT_READ, None)
        selector.register(self.stopper.fileno(), selectors.EVENT_READ, "stop")
        try:
            while not self.stopper.stopping:
                for key, _ in selector.select(self._next_expiry()):
                    if key.data == "stop":
                        self.stopper.drain()
                    elif key.data is None:
                        self._from_client()
                    else:
                        self._from_upstream(key.data)
                self._expire()
        finally:
            self.close()

    def _next_expiry(self) -> float | None:
        if not self.sessions:
            return None
        oldest = min(s.last_seen for s in self.sessions.values())
        return max(0.0, oldest + self.idle_timeout - time.monotonic())

    def _from_client(self) -> None:
        try:
            data, sender = self.front.recv(timeout=0)
        except Timeout:
            return
        except SocketeerError as exc:
            log.warning("recv: %s", exc)
            return
        if sender is None:
            log.warning("datagram from an unnamed socket: no way to reply, dropped")
            return
        session = self.sessions.get(sender)
        if session is None:
            session = self._open_session(sender)
            if session is None:
                return
        session.last_seen = time.monotonic()
        self.sessions.move_to_end(sender)
        try:
            session.endpoint.send(data)
        except SocketeerError as exc:
            log.warning("session %s: %s", sender, exc)

    def _open_session(self, sender: Address) -> _Session | None:
        if len(self.sessions) >= self.max_sessions:
            evicted, old = self.sessions.popitem(last=False)
            log.warning("session table full (%d): evicting %s", self.max_sessions, evicted)
            self._close_session(old)
        try:
            endpoint = open_datagram(self.target)
        except SocketeerError as exc:
            log.warning("session for %s: %s", sender, exc)
            return None
        session = _Session(sender, endpoint)
        self.sessions[sender] = session
        self._selector.register(endpoint.fileno(), selectors.EVENT_READ, session)
        log.info("session %s -> %s opened", sender, self.target)
        return session

    def _from_upstream(self, session: _Session) -> None:
        try:
            data, _ = session.endpoint.recv(timeout=0)
        except Timeout:
            return
        except SocketeerError as exc:
            log.warning("session %s: %s", session.client, exc)
            return
        session.last_seen = time.monotonic()
        try:
            self.front.send(data, to=session.client)
        except SocketeerError as exc:
            log.warning("reply to %s: %s", session.client, exc)

    def _expire(self) -> None:
        now = time.monotonic()
        for sender, session in list(self.sessions.items()):
            if now - session.last_seen >= self.idle_timeout:
                del self.sessions[sender]
                log.info("session %s expired after %gs idle", sender, self.idle_timeout)
                self._close_session(session)

    def _close_session(self, session: _Session) -> None:
        self._selector.unregister(session.endpoint.fileno())
        session.endpoint.close()

    def close(self) -> None:
        for session in self.sessions.values():
            session.endpoint.close()
        self.sessions.clear()
        self._selector.close()
        self.front.close()
        self.stopper.close()

    def __enter__(self) -> DatagramRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
