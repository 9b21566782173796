"""The one relay that is not a server: FROM ``-`` (standard input and output) to TO.

Every other stream relay is a ``Server`` running a ``RelayHandler``. Standard
I/O is one pair with no listener: it opens TO once, copies until both
directions are done, and returns. The copying runs in a thread, so the main
thread stays free to answer SIGINT and SIGTERM even while a thread is
blocked reading a terminal.
"""

from __future__ import annotations

import threading

from ..address import Address
from ..server import _log
from ..server.lifecycle import Stopper
from .handler import RelayHandler
from .stream import Pair, Side

__all__ = ["StdioRelay"]


class StdioRelay:
    """Standard input and output relayed to one TO."""

    address: Address | None = None  # nothing is listened on

    def __init__(self, handler: RelayHandler, *, idle_timeout: float | None = None) -> None:
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
                upstream = self.handler._open_target(None, None)
                self._pair = Pair(
                    Side.of_stdio(),
                    upstream,
                    zero_copy=self.handler.zero_copy,
                    observe=self.handler.observe,
                )
                watched = self.handler.watch_idle(self._pair, None)
                try:
                    self._pair.run()
                finally:
                    watched.finished = True
                if self._pair.error is not None:
                    failure.append(self._pair.error)
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

    def close(self) -> None:
        if self._pair is not None:
            self._pair.abort()
        self.handler.close()
        self.stopper.close()

    def __enter__(self) -> StdioRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
