"""Relays (SPEC §6): stream pairs copied both ways (zero-copy on Linux), datagram sessions.

``relay(FROM, TO, ...)`` builds the right one from two endpoint strings; the
``socketeer relay`` command is a thin layer over it.
"""

from __future__ import annotations

from typing import Any

from ..address import Address
from ..errors import UsageError
from .datagram import DatagramRelay as DatagramRelay
from .endpoints import parse_endpoint
from .stream import HAS_SPLICE as HAS_SPLICE

__all__ = ["HAS_SPLICE", "DatagramRelay", "relay"]


def relay(source: str, target: str, **options: Any) -> Any:
    """A ``Relay`` (streams) or ``DatagramRelay`` (datagrams) from FROM to TO; call
    ``serve_forever()`` on it.

    Raises:
        AddressError, UsageError: endpoints that do not parse or do not fit together.
    """
    src, dst = parse_endpoint(source), parse_endpoint(target)
    if (
        isinstance(src, Address)
        and isinstance(dst, Address)
        and src.is_datagram
        and dst.is_datagram
    ):
        stream_only = (
            "once",
            "max_connections",
            "proxy_protocol",
            "accept_proxy_protocol",
            "hexdump",
            "tls_server",
            "tls_client",
            "allow",
            "deny",
        )
        given = [name for name in stream_only if options.get(name)]
        if given:
            raise UsageError(f"for stream relays only: {', '.join(given)}")
        keep = {k: v for k, v in options.items() if k in ("idle_timeout", "max_sessions")}
        return DatagramRelay(src, dst, **keep)
    options.pop("max_sessions", None)
    from .core import Relay

    return Relay(src, dst, **options)
