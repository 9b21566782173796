"""Datagram servers: one receive loop per process, whatever the model.

A datagram socket has no connections to spread over threads or children;
each datagram goes to the handler with its sender, and ``workers=N`` runs N
such loops on the shared socket.
"""

from __future__ import annotations

import selectors
from typing import TYPE_CHECKING

from ..errors import SocketeerError, Timeout
from . import _log

if TYPE_CHECKING:
    from .core import Server


def serve_datagrams(server: Server) -> None:
    endpoint = server.endpoint
    assert endpoint is not None
    stopper = server.stopper
    stopper.install_signals()
    with selectors.DefaultSelector() as selector:
        selector.register(endpoint.fileno(), selectors.EVENT_READ, "datagram")
        selector.register(stopper.fileno(), selectors.EVENT_READ, "stop")
        while not stopper.stopping:
            for key, _ in selector.select():
                if key.data == "stop":
                    stopper.drain()
                    continue
                try:
                    data, sender = endpoint.recv(timeout=0)
                except Timeout:
                    continue  # another worker took it
                except SocketeerError as exc:
                    _log.log.warning("recv: %s", exc)
                    continue
                if not server.access.permits(sender):
                    _log.refused(sender, "denied by --allow/--deny")
                    continue
                try:
                    server.handler.datagram(data, sender, endpoint)
                except SocketeerError as exc:
                    _log.log.warning("datagram from %s: %s", sender, exc)
                except Exception:  # a bug in a user handler: log it, keep serving
                    _log.log.exception("handler %s failed for %s", server.handler.name, sender)
