"""The thread model: one thread per connection, the accept loop in the caller's thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING

from . import _log
from .accept import accept_loop, accept_ready
from .admission import slowest
from .lifecycle import settle, wait_until
from .serving import run_handler

if TYPE_CHECKING:
    from ..address import Address
    from ..connection import Connection
    from .core import Server


class ThreadRunner:
    def __init__(self, server: Server) -> None:
        assert server.listener is not None
        self.server = server
        self.listener = server.listener
        self.stopper = server.stopper
        self.active: dict[Connection, float] = {}  # connection -> when it opened
        self.lock = threading.Lock()
        # Shedding weighs a connection by its byte counts: a handler that moves
        # bytes on the raw socket (a relay, a program) leaves them at zero.
        handler = server.handler
        self.make_room = (
            None
            if handler.takes_socket or getattr(handler, "raw_socket", False)
            else self._make_room
        )

    def run(self) -> None:
        self.stopper.install_signals()
        accept_loop(self.listener, self.stopper, self._accept)
        self.listener.close()  # from here on new clients are refused
        self._finish()

    def _accept(self) -> None:
        conn = accept_ready(self.listener)
        if conn is None:
            return
        with self.lock:
            open_now = len(self.active)
            # With no lists and under the limit the client's address is not even built.
            admitted = not self.server.screens(open_now) or self.server.admit(
                conn.peer, open_now, self.make_room
            )
            if admitted:
                self.active[conn] = time.monotonic()
        if not admitted:
            conn.close()
            return
        # start() waits until the new thread runs. A bare _thread.start_new_thread
        # skips that wait, and measured slower (0.73x of socketserver's
        # connections/s against 0.97x): the accept loop then outruns the
        # threads and they fight over the GIL.
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _make_room(self, newcomer: Address | None) -> bool:
        """At the limit: close the slowest connection for ``newcomer`` (``admission``).

        Runs under ``self.lock``. The victim leaves ``active`` at once, so the
        next client at the limit does not pick it again; shutting its socket
        down wakes its handler, which ends and logs as any closed connection.
        """
        found = slowest(
            ((c, opened, c.bytes_received + c.bytes_sent) for c, opened in self.active.items()),
            time.monotonic(),
        )
        if found is None:
            return False
        victim, age, rate = found
        del self.active[victim]
        _log.shed(victim.peer, age, rate, newcomer)
        with contextlib.suppress(OSError):
            victim.socket.shutdown(socket.SHUT_RDWR)
        return True

    def _serve(self, conn: Connection) -> None:
        try:
            run_handler(self.server, conn)
        finally:
            with self.lock:
                self.active.pop(conn, None)
            if not self.stopper.accepting:  # _finish waits for the last ones to end
                self.stopper.wake()

    def _finish(self) -> None:
        """Let open connections end within the grace period, then cut them."""
        if not settle(lambda: not self.active, self.server.grace, self.stopper):
            with self.lock:
                remaining = list(self.active)
            _log.log.warning("grace period over: closing %d connection(s)", len(remaining))
            for conn in remaining:
                with contextlib.suppress(OSError):
                    conn.socket.shutdown(socket.SHUT_RDWR)  # wakes the handler's recv
            self.server.handler.close()
            wait_until(lambda: not self.active, 2.0, self.stopper)
