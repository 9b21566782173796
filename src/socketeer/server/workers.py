"""``workers=N``: N processes serving one address, a dead one replaced.

TCP workers each bind their own socket with SO_REUSEPORT, so the kernel
spreads connections over them evenly, while the supervisor holds the port
with a bound socket that never listens. Unix and datagram sockets (and
platforms without SO_REUSEPORT) are shared instead: every worker inherits the
one socket. The supervisor only starts, watches and stops workers; on
SIGTERM/SIGINT it passes SIGTERM on, so each worker shuts down gracefully.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from . import _log
from .children import kill_and_reap, signal_all
from .lifecycle import Stopper, wait_until

if TYPE_CHECKING:
    from .core import Server

RESPAWN_PAUSE = 0.5  # a worker that dies at once must not become a fork bomb


class Supervisor:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.stopper = server.stopper
        self.workers: dict[int, float] = {}

    def run(self) -> None:
        self.stopper.install_signals(extra=[signal.SIGCHLD])
        for _ in range(self.server.workers):
            self._spawn()
        _log.log.info("%d workers started", len(self.workers))
        while not self.stopper.stopping:
            self.stopper.wait()  # a signal: stop, or SIGCHLD from a worker
            for pid, status in self._reap():
                if self.stopper.requested():
                    break
                how = _describe(status)
                _log.log.warning("worker %d %s; starting a replacement", pid, how)
                if time.monotonic() - self.workers.get(pid, 0.0) < RESPAWN_PAUSE:
                    time.sleep(RESPAWN_PAUSE)
                self._spawn()
        self._stop()

    def _reap(self) -> list[tuple[int, int]]:
        gone = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.workers:
                gone.append((pid, status))
                del self.workers[pid]
        return gone

    def _spawn(self) -> None:
        own = None
        if self.server.per_worker_sockets:
            # The worker's own SO_REUSEPORT socket, listening before the fork:
            # the first ones were made with the server, so the whole group
            # listens by the time "listening on" is printed (a client that
            # comes before a worker runs waits in its backlog, never refused).
            prepared = self.server.prepared
            own = prepared.pop() if prepared else self.server.worker_socket()
        try:
            pid = os.fork()
        except BaseException:
            if own is not None:
                own.close()
            raise
        if pid:
            if own is not None:
                own.close()  # the worker's now: a copy here would hold clients nobody takes
            self.workers[pid] = time.monotonic()
            return
        status = 0
        try:
            self.stopper.restore_signals()
            self.server.stopper = Stopper()
            for other in self.server.prepared:
                other.close()  # the other workers' sockets
            self.server.prepared = []
            if own is not None:
                self.server.adopt_worker_socket(own)
            self.server.run_one()
        except BaseException:
            _log.log.exception("worker %d failed", os.getpid())
            status = 1
        finally:
            os._exit(status)

    def _stop(self) -> None:
        signal_all(self.workers, signal.SIGTERM)

        def all_gone() -> bool:
            self._reap()
            return not self.workers

        if not wait_until(all_gone, self.server.grace + 2.0, self.stopper):
            kill_and_reap(self.workers)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
