"""A PROXY protocol header in front of a client's bytes (``accept_proxy_protocol``).

A load balancer in front (HAProxy ``send-proxy``/``send-proxy-v2``, nginx
``proxy_protocol``, AWS NLB) starts each connection with a header naming the
real client. It is read here before anything else sees the connection, with
its own deadline, so that a handler's ``conn.peer`` and the connection log
name the client, not the load balancer. The parsing is ``proxyproto``'s (no
I/O); this is only the reading, blocking and on the loop, for servers and
relays alike.
"""

from __future__ import annotations

from .. import proxyproto
from .._deadline import Deadline
from ..errors import Timeout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..aio.connection import Connection as AsyncConnection
    from ..connection import Connection

__all__ = ["PROXY_HEADER_TIMEOUT", "read_header", "read_header_async", "take_header"]

#: How long a client may take to send its PROXY header.
PROXY_HEADER_TIMEOUT = 5.0


def read_header(conn: Connection) -> tuple[proxyproto.ProxyHeader, bytes]:
    """The header at the start of ``conn`` and the bytes read past it.

    Raises:
        ProxyProtocolError: missing or malformed (``NothingSent``: nothing came).
        Timeout: it did not come within ``PROXY_HEADER_TIMEOUT``.
    """
    deadline = Deadline(PROXY_HEADER_TIMEOUT)
    buffer = b""
    while (found := proxyproto.parse_proxy_header(buffer)) is None:
        try:
            conn.timeout = deadline.remaining()
        except Timeout:
            raise Timeout(f"no PROXY header within {PROXY_HEADER_TIMEOUT:g}s") from None
        data = conn.recv()
        if not data:
            raise proxyproto.closed_before_header(buffer)
        buffer += data
    header, used = found
    return header, buffer[used:]


async def read_header_async(conn: AsyncConnection) -> tuple[proxyproto.ProxyHeader, bytes]:
    """``read_header`` on an ``aio.Connection``."""
    deadline = Deadline(PROXY_HEADER_TIMEOUT)
    buffer = b""
    while (found := proxyproto.parse_proxy_header(buffer)) is None:
        try:
            conn.timeout = deadline.remaining()
        except Timeout:
            raise Timeout(f"no PROXY header within {PROXY_HEADER_TIMEOUT:g}s") from None
        data = await conn.recv()
        if not data:
            raise proxyproto.closed_before_header(buffer)
        buffer += data
    header, used = found
    return header, buffer[used:]


def take_header(
    conn: Connection | AsyncConnection, header: proxyproto.ProxyHeader, rest: bytes
) -> None:
    """Name the client the header names (a LOCAL header, a health check's, names none:
    the connection stays the load balancer's) and give back the bytes read past it."""
    if header.source is not None:
        conn.peer = header.source
    if rest:
        conn._unread(rest)
