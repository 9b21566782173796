"""socketeer: sockets made easy, correct and fast.

Every public name loads on first use (PEP 562), so ``import socketeer`` and
``socketeer --help`` pay only for what they touch; ``socketeer.aio``,
``socketeer.server``, ``socketeer.relay`` and ``socketeer.tls`` are
subpackages imported by name.
"""

from __future__ import annotations

import importlib

# Not typing's: importing typing costs more than the rest of ``socketeer --version``.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "Address": "address",
    "Connection": "connection",
    "connect": "connection",
    "DatagramEndpoint": "datagram",
    "open_datagram": "datagram",
    "Listener": "listener",
    "listen": "listener",
    "Server": "server.core",
    "AddressError": "errors",
    "AddressInUse": "errors",
    "ConnectError": "errors",
    "ConnectionClosed": "errors",
    "ConnectionReset": "errors",
    "FrameTooLarge": "errors",
    "NetworkError": "errors",
    "ProxyAuthError": "errors",
    "ProxyError": "errors",
    "ProxyRefused": "errors",
    "ProxyTargetUnreachable": "errors",
    "ProxyUnreachable": "errors",
    "SocketeerError": "errors",
    "Timeout": "errors",
    "TLSError": "errors",
    "UsageError": "errors",
    "NotReady": "readiness",
    "wait_for": "readiness",
}

__all__ = [
    "Address",
    "AddressError",
    "AddressInUse",
    "ConnectError",
    "Connection",
    "ConnectionClosed",
    "ConnectionReset",
    "DatagramEndpoint",
    "FrameTooLarge",
    "Listener",
    "NetworkError",
    "NotReady",
    "ProxyAuthError",
    "ProxyError",
    "ProxyRefused",
    "ProxyTargetUnreachable",
    "ProxyUnreachable",
    "Server",
    "SocketeerError",
    "TLSError",
    "Timeout",
    "UsageError",
    "connect",
    "listen",
    "open_datagram",
    "wait_for",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'socketeer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


if TYPE_CHECKING:
    from .address import Address as Address
    from .connection import Connection as Connection
    from .connection import connect as connect
    from .datagram import DatagramEndpoint as DatagramEndpoint
    from .datagram import open_datagram as open_datagram
    from .errors import AddressError as AddressError
    from .errors import AddressInUse as AddressInUse
    from .errors import ConnectError as ConnectError
    from .errors import ConnectionClosed as ConnectionClosed
    from .errors import ConnectionReset as ConnectionReset
    from .errors import FrameTooLarge as FrameTooLarge
    from .errors import NetworkError as NetworkError
    from .errors import ProxyAuthError as ProxyAuthError
    from .errors import ProxyError as ProxyError
    from .errors import ProxyRefused as ProxyRefused
    from .errors import ProxyTargetUnreachable as ProxyTargetUnreachable
    from .errors import ProxyUnreachable as ProxyUnreachable
    from .errors import SocketeerError as SocketeerError
    from .errors import Timeout as Timeout
    from .errors import TLSError as TLSError
    from .errors import UsageError as UsageError
    from .listener import Listener as Listener
    from .listener import listen as listen
    from .readiness import NotReady as NotReady
    from .readiness import wait_for as wait_for
    from .server.core import Server as Server
