"""Chat and broker routing, sans I/O (SPEC §4 ``broker`` and ``chat``).

The room decides who receives what; the servers (thread or asyncio) only
deliver. Members are any hashable key the server chooses (a connection).
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["ChatRoom", "Delivery"]

Delivery = tuple[Hashable, bytes]


class ChatRoom:
    """Members, their names (``user1``, ``user2``, ...), and the messages between them.

    With ``names=False`` it is a plain broker: data goes to every other member
    unchanged, with no notices.
    """

    def __init__(self, names: bool = True) -> None:
        self._names: dict[Hashable, str] = {}
        self._next = 1
        self._chat = names

    def __len__(self) -> int:
        return len(self._names)

    def name_of(self, member: Hashable) -> str:
        return self._names[member]

    def _others(self, member: Hashable, data: bytes) -> list[Delivery]:
        return [(other, data) for other in self._names if other != member]

    def join(self, member: Hashable) -> list[Delivery]:
        name = f"user{self._next}"
        self._next += 1
        self._names[member] = name
        if not self._chat:
            return []
        notice = f"* {name} joined\n".encode()
        return [(member, f"* you are {name}\n".encode()), *self._others(member, notice)]

    def say(self, member: Hashable, data: bytes) -> list[Delivery]:
        """What ``member`` sent: raw data (broker) or one line without its newline (chat)."""
        if member not in self._names:
            return []
        if not self._chat:
            return self._others(member, data)
        return self._others(member, b"<" + self._names[member].encode() + b"> " + data + b"\n")

    def leave(self, member: Hashable) -> list[Delivery]:
        name = self._names.pop(member, None)
        if name is None or not self._chat:
            return []
        return self._others(member, f"* {name} left\n".encode())
