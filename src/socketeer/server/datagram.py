"""Datagram servers: one tight receive loop per worker, whatever the model.

A datagram socket has no connections to spread over threads or children;
each datagram goes to the handler with its sender, and ``workers=N`` runs N
loops — on N sockets of one SO_REUSEPORT group for UDP (the kernel spreads
senders over them), on the one inherited socket otherwise.

The loop is written for the kernel's pace (SPEC §4, as a C server does it):

- a wake-up drains the socket until EAGAIN (up to ``BATCH`` datagrams), so
  a busy server makes one ``select`` per batch, not per datagram;
- every datagram lands in one reused buffer (``recvfrom_into``); senders stay
  the raw sockaddr the kernel returned;
- handlers with a reply function (echo, discard, ack: ``datagram_reply``)
  get a view of the buffer and nothing is built per datagram; an ``Address``
  is made only for an allow/deny rule, a log line or a user handler.
"""

from __future__ import annotations

import selectors
import socket
import sys
from typing import TYPE_CHECKING, Any

from .._sockio import address_of, error_for
from ..datagram import MAX_DATAGRAM
from ..errors import SocketeerError
from . import _log

if TYPE_CHECKING:
    from .core import Server

BATCH = 256  # datagrams per wake-up before the stopper is looked at again
_TRUNC = getattr(socket, "MSG_TRUNC", 0) if sys.platform.startswith("linux") else 0


def serve_datagrams(server: Server) -> None:
    endpoint = server.endpoint
    assert endpoint is not None
    stopper = server.stopper
    stopper.install_signals()
    sock = endpoint.socket
    sock.setblocking(False)
    like = endpoint.like
    handler = server.handler
    reply = handler.datagram_reply()
    access = server.access if server.access else None
    buffer = bytearray(MAX_DATAGRAM)
    view = memoryview(buffer)
    receive, send_to = sock.recvfrom_into, sock.sendto
    with selectors.DefaultSelector() as selector:
        selector.register(sock.fileno(), selectors.EVENT_READ, "datagram")
        selector.register(stopper.fileno(), selectors.EVENT_READ, "stop")
        while not stopper.stopping:
            for key, _ in selector.select():
                if key.data == "stop":
                    stopper.drain()
                    continue
                for _ in range(BATCH):
                    try:
                        size, sender = receive(buffer, MAX_DATAGRAM, _TRUNC)
                    except (BlockingIOError, InterruptedError):
                        break  # drained (or another worker took it)
                    except OSError as exc:
                        _log.log.warning("recv: %s", error_for(exc, "recv", str(like), None))
                        continue
                    if size > MAX_DATAGRAM:
                        _log.log.warning(
                            "datagram of %d bytes from %s is larger than %d: dropped",
                            size,
                            address_of(sender, like) if sender else "an unnamed socket",
                            MAX_DATAGRAM,
                        )
                        continue
                    if access is not None:
                        peer = address_of(sender, like) if sender else None
                        if not access.permits(peer):
                            _log.refused(peer, "denied by --allow/--deny")
                            continue
                    if reply is not None:
                        _answer(reply, view[:size], sender, send_to, like)
                    else:
                        _call(server, bytes(view[:size]), sender, endpoint, like)
                        if sock.gettimeout() != 0.0:  # endpoint.send made it blocking
                            sock.setblocking(False)


def _answer(reply: Any, data: memoryview, sender: Any, send_to: Any, like: Any) -> None:
    """The fast path: the handler's reply, sent straight back to the raw sockaddr."""
    try:
        out = reply(data)
    except Exception:  # a bug in a handler: log it, keep serving
        _log.log.exception("handler failed for %s", address_of(sender, like) if sender else None)
        return
    if out is None or not sender:
        return  # nothing to say, or an unnamed Unix socket: nowhere to say it
    try:
        send_to(out, sender)
    except BlockingIOError:
        pass  # the send buffer is full: the datagram is dropped, as the network would
    except OSError as exc:
        where = str(address_of(sender, like))
        _log.log.warning("datagram to %s: %s", where, error_for(exc, "send", where, None))


def _call(server: Server, data: bytes, sender: Any, endpoint: Any, like: Any) -> None:
    """Any other handler: ``handler.datagram(data, sender, endpoint)``."""
    peer = address_of(sender, like) if sender else None
    try:
        server.handler.datagram(data, peer, endpoint)
    except SocketeerError as exc:
        _log.log.warning("datagram from %s: %s", peer, exc)
    except Exception:  # a bug in a user handler: log it, keep serving
        _log.log.exception("handler %s failed for %s", server.handler.name, peer)
