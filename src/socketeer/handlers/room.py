"""``broker`` and ``chat``: every client hears the others (routing in ``socketeer.chat``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING

from ..chat import ChatRoom, Delivery
from ..errors import SocketeerError
from .base import Handler

if TYPE_CHECKING:
    from ..aio import Connection as AsyncConnection
    from ..connection import Connection

# A client that lets this much pile up unread is dropped rather than
# letting it hold the server's memory hostage (async model).
MAX_BACKLOG = 1 << 20


class Room(Handler):
    """One room per server; ``chat`` adds names and notices, ``broker`` relays raw bytes."""

    models = ("thread", "async")
    shared_state = True

    def __init__(self, names: bool) -> None:
        self.name = "chat" if names else "broker"
        self._room = ChatRoom(names=names)
        self._lock = threading.Lock()
        self._send_locks: dict[Hashable, threading.Lock] = {}

    # -- thread model ---------------------------------------------------------

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for member, data in deliveries:
            lock = self._send_locks.get(member)
            if lock is None:
                continue
            # Whole messages: two senders never interleave. A failure is left
            # to that member's own thread, which sees it and leaves.
            with lock, contextlib.suppress(SocketeerError):
                member.send(data)  # type: ignore[attr-defined]

    def serve(self, conn: Connection) -> None:
        with self._lock:
            self._send_locks[conn] = threading.Lock()
            joined = self._room.join(conn)
        self._deliver(joined)
        try:
            if self.name == "chat":
                for line in conn:
                    with self._lock:
                        out = self._room.say(conn, line)
                    self._deliver(out)
            else:
                while data := conn.recv():
                    with self._lock:
                        out = self._room.say(conn, data)
                    self._deliver(out)
        finally:
            with self._lock:
                left = self._room.leave(conn)
                self._send_locks.pop(conn, None)
            self._deliver(left)

    # -- async model ------------------------------------------------------------

    @staticmethod
    def _deliver_async(deliveries: list[Delivery]) -> None:
        for member, data in deliveries:
            transport = member.transport  # type: ignore[attr-defined]
            if transport.is_closing():
                continue
            if transport.get_write_buffer_size() > MAX_BACKLOG:
                transport.abort()  # it stopped reading: drop it
                continue
            transport.write(data)

    async def serve_async(self, conn: AsyncConnection) -> None:
        self._deliver_async(self._room.join(conn))
        try:
            if self.name == "chat":
                async for line in conn:
                    self._deliver_async(self._room.say(conn, line))
            else:
                while data := await conn.recv():
                    self._deliver_async(self._room.say(conn, data))
        finally:
            self._deliver_async(self._room.leave(conn))
