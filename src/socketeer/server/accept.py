"""The accept policy: take waiting clients without ever stopping the server.

One place decides what an accept failure means:

- the client went away before we took it (``RETRY_ACCEPT_ERRNOS`` in
  ``listener``): try the next one;
- the process or system is out of descriptors (EMFILE, ENFILE): the client
  is taken with the one descriptor held in reserve and closed at once, so it
  is not left hanging in the backlog, and one rate-limited line says so
  (the trick libev and HAProxy use); serving resumes by itself as soon as
  descriptors free up;
- out of memory (ENOBUFS, ENOMEM): back off briefly and retry.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import NetworkError
from . import _log

if TYPE_CHECKING:
    from ..connection import Connection
    from ..listener import Listener
    from .lifecycle import Stopper

__all__ = ["CAPACITY_ERRNOS", "Reserve", "accept_loop", "accept_ready"]

DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
CAPACITY_ERRNOS = DESCRIPTOR_ERRNOS | {errno.ENOBUFS, errno.ENOMEM}
BACKOFF = 0.1


class Reserve:
    """One descriptor kept open to be given up when the process runs out of them."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self.hold()

    def hold(self) -> None:
        if self._fd is None:
            with contextlib.suppress(OSError):  # none left now: try again next time
                self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def refuse_one(self, sock: socket.socket) -> bool:
        """Accept one waiting client on the reserved descriptor and close it; True if one was."""
        if self._fd is None:
            return False
        os.close(self._fd)
        self._fd = None
        try:
            client, _ = sock.accept()
        except OSError:
            return False
        else:
            client.close()
            return True
        finally:
            self.hold()


_reserves: dict[int, Reserve] = {}


def reserve() -> Reserve:
    """This process's reserve descriptor (a forked worker or child makes its own)."""
    pid = os.getpid()
    found = _reserves.get(pid)
    if found is None:
        found = _reserves[pid] = Reserve()
    return found


def out_of_capacity(sock: socket.socket, exc: OSError) -> bool:
    """``accept`` on ``sock`` failed with one of ``CAPACITY_ERRNOS``: close the waiting
    client on the reserve if descriptors ran out, and log it. True: back off for
    ``BACKOFF`` before accepting again (the caller's loop decides how to wait)."""
    refused = exc.errno in DESCRIPTOR_ERRNOS and reserve().refuse_one(sock)
    _log.out_of_descriptors("accept", exc, refused)
    return not refused


def accept_ready(listener: Listener) -> Connection | None:
    """Take one waiting client; None if it vanished or resources ran out (logged)."""
    try:
        # The TLS handshake, if any, runs in the connection's own thread or child.
        return listener.accept_waiting()
    except NetworkError as exc:
        if exc.errno in CAPACITY_ERRNOS:
            if out_of_capacity(listener.socket, exc):
                time.sleep(BACKOFF)
            return None
        raise


def accept_loop(
    listener: Listener,
    stopper: Stopper,
    on_ready: Callable[[], None],
    after_turn: Callable[[], None] | None = None,
) -> None:
    """Call ``on_ready`` whenever a client waits, until no more clients are wanted.

    The stopper's socketpair wakes the loop: no polling, no timeout.
    """
    reserve()  # before the descriptors run out, not after
    with selectors.DefaultSelector() as selector:
        selector.register(listener.fileno(), selectors.EVENT_READ, "accept")
        selector.register(stopper.fileno(), selectors.EVENT_READ, "stop")
        while stopper.accepting:
            for key, _ in selector.select():
                if key.data == "stop":
                    stopper.drain()
                elif stopper.accepting:
                    on_ready()
            if after_turn is not None:
                after_turn()
