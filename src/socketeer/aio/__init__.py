"""``socketeer.aio``: the library on asyncio, with the names and semantics of SPEC §2 (§3).

``run(main())`` runs a coroutine on uvloop when it is installed.
"""

from __future__ import annotations

from ._loop import run as run
from ._loop import uvloop_available as uvloop_available
from .connection import Connection as Connection
from .connection import connect as connect
from .datagram import DatagramEndpoint as DatagramEndpoint
from .datagram import open_datagram as open_datagram
from .listener import Listener as Listener
from .listener import listen as listen

__all__ = [
    "Connection",
    "DatagramEndpoint",
    "Listener",
    "connect",
    "listen",
    "open_datagram",
    "run",
    "uvloop_available",
]
