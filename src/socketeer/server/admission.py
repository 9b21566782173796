"""The admission policy: who may be served, and how many at once (SPEC §4).

A client outside ``allow``/``deny`` or beyond ``max_connections`` is closed
before any handler runs, and one line says why. The common case (no lists, no
limit) is decided without looking at the client's address at all, so it
costs nothing per connection.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..access import AccessList
from ..address import Address
from ..errors import UsageError
from . import _log

__all__ = ["Admission"]


class Admission:
    """``allow``/``deny`` lists plus a connection limit."""

    __slots__ = ("access", "max_connections")

    def __init__(
        self,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        max_connections: int | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise UsageError("max_connections must be at least 1")
        self.access = AccessList(allow, deny)
        self.max_connections = max_connections

    def needs_peer(self, open_connections: int) -> bool:
        """Whether ``admit`` must see the client's address (lists, or at the limit)."""
        limit = self.max_connections
        return bool(self.access) or (limit is not None and open_connections >= limit)

    def admit(self, peer: Address | None, open_connections: int) -> bool:
        """Whether to serve this client; logs the reason when not."""
        if not self.access.permits(peer):
            _log.refused(peer, "denied by --allow/--deny")
            return False
        limit = self.max_connections
        if limit is not None and open_connections >= limit:
            _log.refused(peer, f"{limit} connections open (max_connections)")
            return False
        return True
