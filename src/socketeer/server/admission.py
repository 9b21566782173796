"""The admission policy: who may be served, and how many at once (SPEC §4).

A client outside ``allow``/``deny`` is closed before any handler runs, and one
line says why. The common case (no lists, no limit) is decided without
looking at the client's address at all, so it costs nothing per connection.

At ``max_connections``, a new client takes the place of the slowest open
connection if one is slow enough (``slowest``), as nginx reclaims idle
keep-alive connections when it runs out: a slowloris attack (thousands of
clients sending a byte a second, never idle long enough for an idle timeout)
then cannot hold every slot against clients that do real work. When no
connection is slow, the new client is closed, and one line says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..access import AccessList
from ..address import Address
from ..errors import UsageError
from . import _log

__all__ = ["SHED_BELOW_RATE", "SHED_MIN_AGE", "Admission", "slowest"]

#: A connection younger than this is never shed: it has not had time to show its pace.
SHED_MIN_AGE = 2.0
#: Only a connection that moved fewer bytes a second than this, both ways, over
#: its life, is shed for a new client.
SHED_BELOW_RATE = 1024.0

TYPE_CHECKING = False  # not typing's: a server's start-up need not import it
if TYPE_CHECKING:
    from typing import TypeVar

    K = TypeVar("K")


def slowest(
    connections: Iterable[tuple[K, float, int]], now: float
) -> tuple[K, float, float] | None:
    """The connection to close for a new client at the limit: ``(key, age, rate)``.

    ``connections`` are ``(key, opened at, bytes moved both ways)``; the one
    with the fewest bytes a second of those at least ``SHED_MIN_AGE`` old and
    under ``SHED_BELOW_RATE``. None: every connection is young or busy.
    """
    best: tuple[K, float, float] | None = None
    for key, opened, moved in connections:
        age = now - opened
        if age < SHED_MIN_AGE:
            continue
        rate = moved / age
        if rate < SHED_BELOW_RATE and (best is None or rate < best[2]):
            best = (key, age, rate)
    return best


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

    def admit(
        self,
        peer: Address | None,
        open_connections: int,
        make_room: Callable[[Address | None], bool] | None = None,
    ) -> bool:
        """Whether to serve this client; logs the reason when not.

        At the limit, ``make_room`` (the runner's: it knows its connections'
        byte counts) may close the slowest connection for this client.
        """
        if not self.access.permits(peer):
            _log.refused(peer, "denied by --allow/--deny")
            return False
        limit = self.max_connections
        if limit is not None and open_connections >= limit:
            if make_room is not None and make_room(peer):
                return True
            _log.refused(peer, f"{limit} connections open (max_connections), none slow")
            return False
        return True
