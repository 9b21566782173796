"""The relays that are not servers: a FROM with nothing to listen on, one pair to TO.

Every other stream relay is a ``Server`` running a ``RelayHandler``. Standard
I/O (``-``), a program (``exec:``, ``pty-exec:``), a file, a pty and an
inherited stream descriptor (``fd:N`` that is not a listening socket) are one
pair with no listener: FROM is opened, TO once, both are copied until both
directions are done, and it returns. The copying runs in a thread, so the main
thread stays free to answer SIGINT and SIGTERM even while a thread is
blocked reading a terminal.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

from ..address import Address
from ..errors import NetworkError, UsageError
from ..server import _log
from ..server.lifecycle import Stopper
from .endpoints import Endpoint, File, Program, Stdio
from .handler import RelayHandler
from .opened import carried_side, check_file, is_carried, is_listening_fd
from .stream import Pair, Side

__all__ = ["StdioRelay", "is_one_pair"]


def is_one_pair(source: Endpoint) -> bool:
    """FROM is one stream, not something to listen on."""
    if isinstance(source, Address):
        return source.scheme == "fd" and not is_listening_fd(source.fd)
    return True


class StdioRelay:
    """One FROM that is not listened on (standard I/O by default) relayed to one TO.

    Raises:
        UsageError: a program that is not installed.
        NetworkError: a file FROM that cannot be read.
    """

    address: Address | None = None  # nothing is listened on

    def __init__(
        self,
        handler: RelayHandler,
        *,
        idle_timeout: float | None = None,
        source: Endpoint | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.source: Endpoint = Stdio() if source is None else source
        if isinstance(self.source, Program):
            import shutil

            if shutil.which(self.source.argv[0]) is None:
                raise UsageError(f"exec: program not found: {self.source.argv[0]}")
        if isinstance(self.source, File):
            check_file(self.source, writing=False)
        self.announce = announce
        self.handler = handler
        handler.configure(idle_timeout=idle_timeout)
        self.stopper = Stopper()
        self._pair: Pair | None = None

    def serve_forever(self) -> None:
        """Relay until both directions are done (or SIGTERM/SIGINT).

        Raises:
            SocketeerError: TO could not be opened, or the pair failed.
        """
        self.stopper.install_signals()
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                client = self._open_source()
                try:
                    upstream = self.handler._open_target(None, None, report=False)
                except BaseException:
                    client.close()
                    raise
                self._pair = Pair(
                    client,
                    upstream,
                    zero_copy=self.handler.zero_copy,
                    observe=self.handler.observe,
                )
                watched = self.handler.watch_idle(self._pair, None)
                try:
                    self._pair.run()
                finally:
                    watched.finished = True
                error = self._pair.error or client.failure() or upstream.failure()
                if error is not None:
                    failure.append(error)
                else:
                    _log.closed(
                        None, self._pair.started, self._pair.bytes_up, self._pair.bytes_down
                    )
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()
                self.stopper.wake()

        threading.Thread(target=run, daemon=True).start()
        try:
            while not done.is_set() and not self.stopper.requested():
                self.stopper.wait()
        finally:
            self.close()
        if failure:
            raise failure[0]

    def _open_source(self) -> Side:
        source = self.source
        if isinstance(source, Stdio):
            return Side.of_stdio()
        if isinstance(source, Program) and not source.pty:
            try:
                proc = subprocess.Popen(source.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            except OSError as exc:
                raise NetworkError(f"exec: cannot run {source.argv[0]}: {exc.strerror}") from None
            return Side.of_program(proc, str(source))
        assert is_carried(source)
        return carried_side(source, at_from=True, announce=self.announce, report=False)

    def close(self) -> None:
        if self._pair is not None:
            self._pair.abort()
        self.handler.close()
        self.stopper.close()

    def __enter__(self) -> StdioRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
