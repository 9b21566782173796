"""``_reach.dial`` on the event loop: directly, or through a proxy, options set (SPEC §9)."""

from __future__ import annotations

from .._deadline import Deadline
from .._reach import proxy_unreachable
from .._sockopts import SocketOptions, prepare_connect
from ..address import Address
from ..errors import ConnectError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from ..proxy.url import ProxyURL

__all__ = ["dial_async"]


async def dial_async(
    target: Address,
    deadline: Deadline,
    options: SocketOptions,
    proxy: ProxyURL | None = None,
) -> socket.socket:
    """A non-blocking socket connected to ``target`` (through ``proxy``), options set.

    Raises:
        ConnectError, Timeout: as the connect; ProxyUnreachable and the other
            ``ProxyError`` cases with a proxy.
    """
    from .connection import connected_socket_async

    prepare = prepare_connect(options)
    if proxy is None:
        return await connected_socket_async(target, deadline, prepare=prepare)
    from ..proxy.dial import tunnel_async

    try:
        sock = await connected_socket_async(proxy.address, deadline, prepare=prepare)
    except ConnectError as exc:
        raise proxy_unreachable(proxy, exc) from exc
    try:
        await tunnel_async(sock, proxy, target, deadline)
    except BaseException:
        sock.close()
        raise
    return sock
