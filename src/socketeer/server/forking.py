"""The fork model: a child process per connection, as in the tutorial — and no zombies.

The parent only accepts. The child closes its copy of the listening socket
(the socket file stays: only the process that bound it removes it), serves,
logs and exits with ``os._exit``; the parent closes its copy of the client
socket. SIGCHLD wakes the parent's loop, which reaps every exited child with
``waitpid(-1, WNOHANG)`` on every turn, so zombies never pile up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from . import _log
from .accept import accept_loop, accept_ready
from .children import kill_and_reap, signal_all
from .lifecycle import settle, wait_until
from .serving import run_handler

if TYPE_CHECKING:
    from ..connection import Connection
    from .core import Server


class _Terminated(BaseException):
    """SIGTERM in a child: unwind so ``finally`` blocks (an exec'd program) clean up."""


def _child_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


class ForkRunner:
    def __init__(self, server: Server) -> None:
        assert server.listener is not None
        self.server = server
        self.listener = server.listener
        self.stopper = server.stopper
        self.children: dict[int, float] = {}
        # SIGCHLD reaches only the main thread's handlers. A fork server run in
        # another thread (a library user's) learns of each child's exit from a
        # thread blocked in waitpid for it instead: no zombie, no polling.
        self.watch_exits = threading.current_thread() is not threading.main_thread()

    def run(self) -> None:
        self.stopper.install_signals(extra=[signal.SIGCHLD])
        try:
            # Every turn reaps: SIGCHLD wakes the loop through the stopper.
            accept_loop(self.listener, self.stopper, self._accept, after_turn=self.reap)
            self.listener.close()
            self._finish()
        finally:
            self.reap()

    def reap(self) -> None:
        """Collect every child that has exited (one SIGCHLD may stand for many)."""
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.pop(pid, None)

    def _accept(self) -> None:
        conn = accept_ready(self.listener)
        if conn is None:
            return
        self.reap()
        open_now = len(self.children)
        if self.server.screens(open_now) and not self.server.admit(conn.peer, open_now):
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            self._child(conn)  # never returns
        self.children[pid] = time.monotonic()
        conn.close()  # the child has its own copy
        if self.watch_exits:
            threading.Thread(target=self._await_exit, args=(pid,), daemon=True).start()

    def _await_exit(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError):  # reaped by the loop already
            os.waitpid(pid, 0)
        self.children.pop(pid, None)
        self.stopper.wake()

    def _child(self, conn: Connection) -> None:
        status = 0
        try:
            # The parent decides when its children stop: Ctrl-C in a terminal
            # reaches the whole process group, but only the parent acts on it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, _child_sigterm)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.listener.close()
            self.stopper.close()
            run_handler(self.server, conn)
        except _Terminated:
            status = 143
        except BaseException:
            status = 1
        finally:
            with contextlib.suppress(Exception):
                for handler in _log.log.handlers:
                    handler.flush()
            os._exit(status)

    def _finish(self) -> None:
        def done() -> bool:
            self.reap()
            return not self.children

        if settle(done, self.server.grace, self.stopper):
            return
        _log.log.warning("grace period over: stopping %d child(ren)", len(self.children))
        signal_all(self.children, signal.SIGTERM)
        if not wait_until(done, 1.0 if not self.stopper.forced else 0.2, self.stopper):
            kill_and_reap(self.children)
