"""How a client's stream socket reaches its target: directly, or through a proxy (SPEC §9).

``connect`` and the relay's TO both come through here, so socket options,
the source address and the proxy mean the same on every path. With a proxy
the socket options and ``source`` are those of the socket to the proxy (the
only socket this host has); the proxy's own failure is ``ProxyUnreachable``
naming the proxy, and TLS to a ``tls://`` target runs afterwards over the
tunnel, verified against the target, exactly as without a proxy.
"""

from __future__ import annotations

from ._deadline import Deadline
from ._sockio import connected_socket, source_binder
from ._sockopts import NO_OPTIONS, SocketOptions, apply_planned
from .address import Address
from .errors import ConnectError, ProxyUnreachable, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from .proxy.url import ProxyURL

__all__ = [
    "check_proxy_target",
    "dial",
    "parse_proxy",
    "prepare_connect",
    "proxy_unreachable",
]


def parse_proxy(proxy: str | ProxyURL | None, target: Address) -> ProxyURL | None:
    """The proxy for ``target`` (the proxy package is imported only when one is asked for).

    Raises:
        AddressError: not a proxy URL (or ``env`` with ``ALL_PROXY`` unset).
        UsageError: a Unix target, which no proxy can reach.
    """
    if proxy is None:
        return None
    from .proxy.url import ProxyURL

    url = ProxyURL.parse(proxy)
    check_proxy_target(target)
    return url


def check_proxy_target(target: Address) -> None:
    """Refuse a target no proxy can reach for us.

    Raises:
        UsageError: a Unix socket (a proxy connects to host and port).
    """
    if not target.is_inet:
        raise UsageError(f"a proxy reaches host:port targets, not {target}")


def proxy_unreachable(proxy: ProxyURL, exc: ConnectError) -> ProxyUnreachable:
    """The error for a proxy that did not answer, naming the proxy (never its password)."""
    reason = str(exc).split(": ", 1)[0]
    error = ProxyUnreachable(f"proxy unreachable: {proxy} ({reason})")
    error.errno = exc.errno
    return error


def prepare_connect(options: SocketOptions) -> Callable[[socket.socket], None] | None:
    """A ``prepare`` for ``connected_socket``: the options, then the ``source`` bind.

    None when there is nothing to do, so a plain connect pays nothing.
    """
    if options is NO_OPTIONS or options == NO_OPTIONS:
        return None
    binder = source_binder(options.source) if options.source is not None else None
    plans: dict[tuple[int, int], tuple[tuple[int, int, int | bytes, str], ...]] = {}

    def prepare(sock: socket.socket) -> None:
        apply_planned(plans, sock, options)
        if binder is not None:
            binder(sock)

    return prepare


def dial(
    target: Address,
    deadline: Deadline,
    options: SocketOptions,
    proxy: ProxyURL | None = None,
) -> socket.socket:
    """A blocking socket connected to ``target`` (through ``proxy``), options set.

    Raises:
        ConnectError, Timeout: as the connect; ProxyUnreachable and the other
            ``ProxyError`` cases with a proxy.
    """
    prepare = prepare_connect(options)
    if proxy is None:
        return connected_socket(target, deadline, prepare=prepare)
    from .proxy.dial import tunnel

    try:
        sock = connected_socket(proxy.address, deadline, prepare=prepare)
    except ConnectError as exc:
        raise proxy_unreachable(proxy, exc) from exc
    try:
        tunnel(sock, proxy, target, deadline)
    except BaseException:
        sock.close()
        raise
    return sock
