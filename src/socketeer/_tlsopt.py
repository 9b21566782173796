"""What ``tls=`` means, decided in one place for connect, listen, aio and Server.

``tls`` may be None or False (plain unless the address is ``tls://``), True
(TLS with the defaults), a ``TLSConfig``, or a ready ``ssl.SSLContext``. The
``ssl`` module is imported only when TLS is really asked for, so plain
programs never pay for it.
"""

from __future__ import annotations

from .address import Address

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from typing import Any

    from .tls import TLSConfig

__all__ = ["client_setup_for", "requested", "server_context_for"]


def requested(target: Address, tls: object) -> bool:
    """Whether this address with this ``tls=`` speaks TLS."""
    return target.is_tls or tls not in (None, False)


def client_setup_for(target: Address, tls: object) -> tuple[ssl.SSLContext, TLSConfig] | None:
    """The client context and settings, or None for a plain connection.

    Raises:
        UsageError: files that do not load (before any connection is made).
    """
    if not requested(target, tls):
        return None
    from .tls import client_setup

    return client_setup(tls)


def server_context_for(target: Address, tls: object) -> Any:
    """The server's ``ssl.SSLContext``, or None for a plain listener.

    Raises:
        UsageError: no certificate, or files that do not load.
    """
    if not requested(target, tls):
        return None
    import ssl

    from .tls import TLSConfig, server_context

    if isinstance(tls, ssl.SSLContext):
        return tls
    return server_context(tls if isinstance(tls, TLSConfig) else TLSConfig())
