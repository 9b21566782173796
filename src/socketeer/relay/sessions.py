"""The session table of the relays that take datagrams: one session per sender.

A datagram relay (``datagram``) and a datagram-to-stream tunnel (``framed``)
keep a session per sender, keyed by the raw sockaddr the kernel gave, least
recently active first: the first expires first, and the first gives way when
the table is full. Eviction is told a line a second with a count, since a
flood of new senders evicts one session per datagram.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from .._sockio import address_of
from ..address import Address
from ..server._log import RateLimit

log = logging.getLogger("socketeer.relay")


class SessionTable:
    """The table and its policy; a relay says what ending a session means (``_drop``).

    The relay sets ``idle_timeout``, ``max_sessions`` and ``_like`` (the kind
    of address its senders have); its sessions have ``client`` and
    ``last_seen``.
    """

    idle_timeout: float
    max_sessions: int
    _like: Address

    def __init__(self) -> None:
        self.sessions: OrderedDict[Any, Any] = OrderedDict()
        self._evictions = RateLimit()  # one eviction line a second

    def _drop(self, sender: Any, session: Any) -> None:
        """Remove ``session`` from the table and close what it holds."""
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
