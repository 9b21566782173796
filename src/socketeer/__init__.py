"""socketeer: sockets made easy, correct and fast.

The blocking API is imported here; heavier parts (``socketeer.aio``, the
servers, the relay, the CLI) load only when used, so ``import socketeer`` and
``socketeer --help`` stay quick.
"""

from __future__ import annotations

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
from .errors import SocketeerError as SocketeerError
from .errors import Timeout as Timeout
from .errors import TLSError as TLSError
from .errors import UsageError as UsageError
from .listener import Listener as Listener
from .listener import listen as listen

__version__ = "0.1.0"

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
    "SocketeerError",
    "TLSError",
    "Timeout",
    "UsageError",
    "connect",
    "listen",
    "open_datagram",
]
