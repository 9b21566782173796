"""Happy Eyeballs (RFC 8305): connecting fast to a name with several addresses.

A name that resolves to an IPv6 and an IPv4 address, where the IPv6 path is
broken (a firewall that drops SYNs, a route to nowhere), would make a client
that tries each address in turn hang for a whole connect timeout before it
tries the address that works. Happy Eyeballs starts the next attempt after a
short delay without giving up on the first, and the first to connect wins.

The policy (the order, the delay) lives here, once; the blocking racer is here
too, and the asyncio one in ``aio.connection`` drives the same order and delay
on the event loop.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time

from ._deadline import Deadline
from .errors import SocketeerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol, TypeVar

    class _Attempt(Protocol):
        """What is raced: ``_sockio.Target`` (not imported: it imports this module)."""

        @property
        def family(self) -> int: ...
        @property
        def sockaddr(self) -> Any: ...

    Target = TypeVar("Target", bound=_Attempt)

# RFC 8305 §5 recommends 250 ms ("Connection Attempt Delay"), within 100 ms to 2 s.
ATTEMPT_DELAY = 0.25


def attempt_order(targets: Sequence[Target]) -> list[Target]:
    """The order to try ``targets`` in: IPv6 first, then the families alternate.

    Within a family the resolver's order (RFC 6724 sorting) is kept. RFC 8305
    §4 with a "First Address Family Count" of one.
    """
    v6 = [t for t in targets if t.family == socket.AF_INET6]
    others = [t for t in targets if t.family != socket.AF_INET6]
    order: list[Target] = []
    for pair in zip(v6, others, strict=False):
        order.extend(pair)
    shorter = min(len(v6), len(others))
    order.extend(v6[shorter:] or others[shorter:])
    return order


def race(
    targets: Sequence[Target],
    deadline: Deadline,
    *,
    start: Callable[[Target], socket.socket],
    failed: Callable[[OSError], SocketeerError],
) -> socket.socket:
    """The first of ``targets`` (in order) to connect, as a blocking socket.

    ``start`` makes a non-blocking socket for a target, prepared to connect
    (source bound, options set), or raises a ``SocketeerError`` that fails this
    attempt. The next attempt starts ``ATTEMPT_DELAY`` after the last one, or
    at once when one fails; the others are closed when one wins. ``failed``
    turns a connect's errno into the error to report if every attempt fails.

    Raises:
        SocketeerError: the last attempt's failure, when all failed.
        Timeout: the deadline passed first (the caller names the address).
    """
    waiting = list(targets)
    pending: dict[int, socket.socket] = {}
    last: SocketeerError | None = None
    next_at = 0.0
    selector = selectors.DefaultSelector()
    try:
        while waiting or pending:
            if waiting and (not pending or time.monotonic() >= next_at):
                next_at = time.monotonic() + ATTEMPT_DELAY
                target = waiting.pop(0)
                try:
                    sock = start(target)
                except SocketeerError as exc:
                    last, next_at = exc, 0.0
                    continue
                code = sock.connect_ex(target.sockaddr)
                if code == 0:
                    sock.setblocking(True)
                    return sock
                if code not in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                    sock.close()
                    last, next_at = failed(OSError(code, os.strerror(code))), 0.0
                    continue
                pending[sock.fileno()] = sock
                selector.register(sock, selectors.EVENT_WRITE)
                continue
            wait = deadline.remaining()  # raises Timeout when the budget is spent
            if waiting:
                until_next = max(0.0, next_at - time.monotonic())
                wait = until_next if wait is None else min(wait, until_next)
            for key, _ in selector.select(wait):
                sock = pending.pop(key.fd)
                selector.unregister(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    sock.setblocking(True)
                    return sock
                sock.close()
                last, next_at = failed(OSError(code, os.strerror(code))), 0.0
        assert last is not None, "there was at least one target"
        raise last
    finally:
        for sock in pending.values():
            sock.close()
        selector.close()
