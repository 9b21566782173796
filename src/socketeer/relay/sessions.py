"""The session table of the relays that take datagrams: one session per sender.

A datagram relay (``datagram``) and a datagram-to-stream tunnel (``framed``)
keep a session per sender, keyed by the raw sockaddr the kernel gave, least
recently active first: the first expires first, and the first gives way when
the table is full. Eviction is told a line a second with a count, since a
flood of new senders evicts one session per datagram.

Both run the same loop, here: one selector for the front socket, the
sessions' own sockets and the stopper, asleep until a datagram comes or the
oldest session is due to expire.
"""

from __future__ import annotations

import logging
import selectors
import time
from collections import OrderedDict
from typing import Any

from .._sockio import address_of
from ..address import Address
from ..datagram import MAX_DATAGRAM, DatagramEndpoint
from ..server._log import RateLimit
from ..server.lifecycle import Stopper

log = logging.getLogger("socketeer.relay")


class SessionTable:
    """The table, its policy and its loop; a relay says what ending a session means (``_drop``).

    The relay sets ``idle_timeout`` and ``max_sessions`` and says what a
    datagram from a sender (``_from_clients``), a session socket's readiness
    (``_on_session``) and a wake-up (``_woken``) do; its sessions have
    ``client`` and ``last_seen``, and are registered with ``_selector`` with
    themselves as the key's data.
    """

    idle_timeout: float
    max_sessions: int

    def __init__(self, front: DatagramEndpoint) -> None:
        self.front = front
        self.address = front.local
        self._like: Address = front.like  # the kind of address the senders have
        self.sessions: OrderedDict[Any, Any] = OrderedDict()
        self._evictions = RateLimit()  # one eviction line a second
        self.stopper = Stopper()
        self._selector = selectors.DefaultSelector()
        self._buffer = bytearray(MAX_DATAGRAM)  # every datagram from a sender lands here
        self._view = memoryview(self._buffer)

    def serve_forever(self) -> None:
        """Relay until SIGTERM/SIGINT or ``stopper.stop()``; then ``close()``."""
        self.stopper.install_signals()
        selector = self._selector
        self.front.socket.setblocking(False)
        selector.register(self.front.fileno(), selectors.EVENT_READ, None)
        selector.register(self.stopper.fileno(), selectors.EVENT_READ, "stop")
        try:
            while not self.stopper.stopping:
                for key, events in selector.select(self._next_expiry()):
                    if key.data == "stop":
                        self.stopper.drain()
                        self._woken()
                    elif key.data is None:
                        self._from_clients()
                    else:
                        self._on_session(key.data, events)
                self._expire()
        finally:
            self.close()

    def _from_clients(self) -> None:
        """The front socket is readable: datagrams from the senders."""
        raise NotImplementedError

    def _on_session(self, session: Any, events: int) -> None:
        """A session's socket is ready (``events``: the selector's mask)."""
        raise NotImplementedError

    def _woken(self) -> None:
        """The stopper was written to: a stop, or a helper thread with news."""

    def _drop(self, sender: Any, session: Any) -> None:
        """Remove ``session`` from the table and close what it holds."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _next_expiry(self) -> float | None:
        """Seconds until the least recently active session expires (None: no session)."""
        for session in self.sessions.values():  # the first one only
            due: float = session.last_seen + self.idle_timeout
            return max(0.0, due - time.monotonic())
        return None

    def _expire(self) -> None:
        now = time.monotonic()
        while self.sessions:
            sender, session = next(iter(self.sessions.items()))
            if now - session.last_seen < self.idle_timeout:
                return  # the rest are younger
            log.info("session %s expired after %gs idle", self._name(sender), self.idle_timeout)
            self._drop(sender, session)

    def _touch(self, session: Any) -> None:
        session.last_seen = time.monotonic()
        self.sessions.move_to_end(session.client)

    def _make_room(self) -> None:
        """Evict the least recently active session if the table is full."""
        if len(self.sessions) < self.max_sessions:
            return
        sender, session = next(iter(self.sessions.items()))
        if self._evictions.allow():
            held = self._evictions.take_held_back()
            more = f" ({held} more since the last line)" if held else ""
            log.warning(
                "session table full (%d): evicting %s%s",
                self.max_sessions,
                self._name(sender),
                more,
            )
        self._drop(sender, session)

    def _name(self, sender: Any) -> Address | str:
        return address_of(sender, self._like) or "an unnamed socket"
