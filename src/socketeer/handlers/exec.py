"""``exec -- PROG ARGS...``: a program per connection, the socket as its stdin and stdout.

inetd and ucspi-tcp style: the program gets the connected socket itself as
descriptors 0 and 1 (no copying through socketeer), is started from an
argument list (never a shell), and finds the peer in the ucspi-tcp variables
``PROTO``, ``TCPREMOTEIP``, ``TCPREMOTEPORT``, ``TCPLOCALIP``, ``TCPLOCALPORT``.
Bytes in and out are the program's business and are not counted.

With ``pty=True`` (``exec --pty``) the program runs on a pseudo-terminal
instead, in a new session whose controlling terminal it is, sized
``pty_size`` (80x24): socketeer copies the connection through the terminal's
master (``_pty``), as ``ssh -t`` or ``socat … EXEC:…,pty`` do, and the
program is hung up and reaped when the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._pty import DEFAULT_SIZE, PtyProcess
from ..address import Address
from ..errors import UsageError
from .base import Handler

if TYPE_CHECKING:
    from ..connection import Connection


def ucspi_environment(local: Address | None, peer: Address | None) -> dict[str, str]:
    env = dict(os.environ)
    if (local and local.is_inet) or (peer and peer.is_inet):
        env["PROTO"] = "TCP"
        if peer is not None and peer.is_inet:
            env["TCPREMOTEIP"], env["TCPREMOTEPORT"] = peer.host, str(peer.port)
        if local is not None and local.is_inet:
            env["TCPLOCALIP"], env["TCPLOCALPORT"] = local.host, str(local.port)
    else:
        env["PROTO"] = "UNIX"
    return env


class Exec(Handler):
    name = "exec"
    takes_socket = True

    def __init__(
        self,
        argv: Sequence[str],
        *,
        pty: bool = False,
        pty_size: tuple[int, int] = DEFAULT_SIZE,
    ) -> None:
        if not argv:
            raise UsageError("exec needs a program: serve ADDRESS exec -- PROG [ARGS...]")
        program = shutil.which(argv[0])
        if program is None:
            raise UsageError(f"exec: program not found: {argv[0]}")
        self.argv = [program, *argv[1:]]
        self.pty = pty
        self.pty_size = pty_size
        self._running: set[subprocess.Popen[bytes] | PtyProcess] = set()
        self._lock = threading.Lock()

    def _start(
        self, fd: int, local: Address | None, peer: Address | None
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv, stdin=fd, stdout=fd, env=ucspi_environment(local, peer), close_fds=True
        )

    def _on_pty(self, sock: socket.socket, local: Address | None, peer: Address | None) -> None:
        """The program on a new pty, the connection copied through its master."""
        try:
            proc = PtyProcess(self.argv, size=self.pty_size, env=ucspi_environment(local, peer))
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self._running.add(proc)
        try:
            proc.carry(sock)
        finally:
            with self._lock:
                self._running.discard(proc)
            sock.close()

    def serve(self, conn: Connection) -> None:
        if self.pty:
            local, peer = conn.local, conn.peer
            sock, _ = conn.detach()
            self._on_pty(sock, local, peer)
            return
        proc = self._start(conn.fileno(), conn.local, conn.peer)
        conn.close()  # the program holds the socket now
        with self._lock:
            self._running.add(proc)
        try:
            proc.wait()
        finally:
            if proc.poll() is None:  # interrupted (a forced shutdown): stop the program too
                proc.terminate()
                proc.wait()
            with self._lock:
                self._running.discard(proc)

    async def serve_socket_async(
        self, sock: socket.socket, local: Address | None, peer: Address | None
    ) -> None:
        """The async model hands over the accepted socket itself (``takes_socket``).

        On a pty the copying runs in a thread of its own (the loop goes on).
        """
        if self.pty:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()

            def run() -> None:
                try:
                    self._on_pty(sock, local, peer)
                finally:
                    with contextlib.suppress(RuntimeError):  # the loop is gone (a forced stop)
                        loop.call_soon_threadsafe(_settle, done)

            threading.Thread(target=run, name="exec-pty", daemon=True).start()
            await asyncio.shield(done)
            return
        sock.setblocking(True)  # the flag is shared: the program expects blocking I/O
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=sock.fileno(),
            stdout=sock.fileno(),
            env=ucspi_environment(local, peer),
        )
        sock.close()  # our copy only: the program's copy keeps the connection
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()

    def close(self) -> None:
        with self._lock:
            for proc in self._running:
                if proc.poll() is None:
                    if isinstance(proc, PtyProcess):
                        proc.signal(signal.SIGHUP)  # as a terminal that hangs up
                    else:
                        proc.terminate()


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
