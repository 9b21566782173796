"""Reaching a server through a proxy: the client's side of SOCKS4/4a/5 and HTTP CONNECT.

Not the PROXY protocol (``socketeer.proxyproto``), which tells a server who
the real client was; this package asks a proxy to open a stream to a target.
``url`` parses proxy URLs, ``socks`` and ``http`` hold the protocols as pure
(sans-IO) code, and ``dial`` runs them on blocking or asyncio sockets.
``server`` is the other side, as pure: the handshakes of the ``socks5`` and
``http-proxy`` server handlers (``socketeer.handlers.proxy``).
"""

from __future__ import annotations

from .dial import tunnel, tunnel_async
from .url import ProxyURL

__all__ = ["ProxyURL", "tunnel", "tunnel_async"]
