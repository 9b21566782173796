"""Joining two ends that are alike: both connected to, or both listened on (socat's gender changer).

- ``ConnectBoth`` connects to A and to B and copies between them; when the
  pair ends (either side closed, failed, or was restarted) it connects to
  both again. Each connect goes through the retry policy (``retry``; forever
  by default, since coming back is the point), so a side that is down is
  knocked on with backoff and every attempt is logged. A reverse tunnel is
  one of these inside a network and a ``ListenBoth`` outside it.
- ``ListenBoth`` listens on A and B and joins the first client of each, then
  the next of each, and so on; a client that waits for a partner is kept
  (up to ``MAX_WAITING`` per side) and dropped if it leaves meanwhile.

Both copy with ``stream.Pair`` (a thread per direction, ``splice`` between
plain sockets, one polled thread when a side is TLS), so half-close, byte
counts and zero-copy are a relay's. Neither is a server of connections:
there is no per-client TO, so the server models do not apply.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import threading
import time
from typing import Any

from .._tlsopt import client_setup_for
from ..address import Address
from ..connection import Connection, connect
from ..errors import SocketeerError, UsageError
from ..listener import Listener, listen
from ..server.lifecycle import Stopper
from .dial import dial
from .retry import RetryPolicy
from .stream import HAS_SPLICE, Pair, Side

__all__ = ["MAX_WAITING", "ConnectBoth", "ListenBoth"]

log = logging.getLogger("socketeer.relay")

#: Clients kept waiting for a partner on each side of ``ListenBoth``.
MAX_WAITING = 64
#: A pair that moved nothing in less than this is "quick": the next round waits first.
QUICK = 1.0
HANDSHAKE_TIMEOUT = 10.0


def _stream_address(end: Any, role: str) -> Address:
    if not isinstance(end, Address) or not end.is_stream:
        raise UsageError(f"{role} joins stream addresses, not {end}")
    if end.scheme in ("fd", "systemd"):
        raise UsageError(f"{role} needs addresses, not {end}")
    return end


def _log_pair(pair: Pair, first: Address | str, second: Address | str) -> None:
    if pair.error is not None:
        log.warning("%s <-> %s: %s", first, second, pair.error)
        return
    log.info(
        "closed %s <-> %s after %.3fs: %d bytes to %s, %d bytes to %s",
        first,
        second,
        time.monotonic() - pair.started,
        pair.bytes_up,
        second,
        pair.bytes_down,
        first,
    )


class ConnectBoth:
    """Connect to ``first`` and ``second``, copy between them, and again when the pair ends.

    ``options`` are ``connect()``'s socket keywords (keepalive, source,
    proxy, ...); ``tls_client`` applies to a ``tls://`` side only.
    ``retry`` applies to every connect (default: forever, from 1 s doubling
    to 30 s); after a pair that moved nothing the next round waits too, so
    a side that accepts and closes at once is not hammered. ``once`` stops
    after the first pair. Nothing is listened on: ``address`` is None.

    Raises (from ``serve_forever``):
        ConnectError: a side could not be reached within the retries.
    """

    address: Address | None = None

    def __init__(
        self,
        first: Address,
        second: Address,
        *,
        retry: RetryPolicy | None = None,
        connect_timeout: float | None = 10.0,
        tls_client: object = None,
        options: dict[str, Any] | None = None,
        once: bool = False,
        zero_copy: bool = HAS_SPLICE,
    ) -> None:
        self.ends = (
            _stream_address(first, "--connect-both"),
            _stream_address(second, "--connect-both"),
        )
        self.retry = retry or RetryPolicy(retries=None)
        self.connect_timeout = connect_timeout
        self.once = once
        self.zero_copy = zero_copy
        self._tls = {}
        for end in self.ends:  # TLS where the address says tls://, as each side is told
            setup = client_setup_for(end, tls_client) if end.is_tls else None
            self._tls[end] = setup[1] if setup is not None else None
        self._options = options or {}  # connect()'s socket options: keepalive, source, ...
        self.stopper = Stopper()
        self.pairs = 0  # pairs joined so far
        self._closing = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._pair: Pair | None = None
        self._failure: list[BaseException] = []
        self._worker: threading.Thread | None = None

    def serve_forever(self) -> None:
        """Join pair after pair until stopped (SIGTERM/SIGINT, ``close``) or a side gives up."""
        self.stopper.install_signals()
        worker = threading.Thread(target=self._rounds, daemon=True)
        self._worker = worker
        worker.start()
        try:
            while not self._done.is_set() and not self.stopper.requested():
                self.stopper.wait()
        finally:
            self.close()
        if self._failure:
            raise self._failure[0]

    def _connect(self, end: Address) -> Connection:
        return connect(end, timeout=self.connect_timeout, tls=self._tls[end], **self._options)

    def _rounds(self) -> None:
        quick = 0
        try:
            while not self._closing.is_set():
                pair = self._join()
                if pair is None:
                    return
                _log_pair(pair, *self.ends)
                if self.once:
                    return
                if pair.bytes_up or pair.bytes_down or time.monotonic() - pair.started > QUICK:
                    quick = 0
                    continue
                quick += 1
                if self._closing.wait(self.retry.delay_after(quick, random.random())):
                    return
        except BaseException as exc:
            self._failure.append(exc)
        finally:
            self._done.set()  # before the wake-up: the main thread reads it when woken
            self.stopper.wake()

    def _join(self) -> Pair | None:
        """Both sides connected and copied until the pair ends; None when closing."""
        sides: list[Side] = []
        try:
            for end in self.ends:
                conn = dial(
                    lambda end=end: self._connect(end),  # type: ignore[misc]
                    self.retry,
                    "",  # the error names the address
                    stop=self._closing,
                )
                if conn is None:
                    return None
                sock, _ = conn.detach()
                sides.append(Side.of_socket(sock, str(end)))
        except BaseException:
            for side in sides:
                side.close()
            raise
        pair = Pair(sides[0], sides[1], zero_copy=self.zero_copy)
        with self._lock:
            self._pair = pair
        if self._closing.is_set():
            pair.abort()
        self.pairs += 1
        log.info("joined %s and %s", *self.ends)
        try:
            pair.run()
        finally:
            with self._lock:
                self._pair = None
        return pair

    def close(self) -> None:
        """Cut the pair in progress and stop connecting."""
        self._closing.set()
        with self._lock:
            pair = self._pair
        if pair is not None:
            pair.abort()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()  # a connect in progress ends within its timeout
        self.stopper.close()

    def __enter__(self) -> ConnectBoth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ListenBoth:
    """Listen on ``first`` and ``second``; join each client of one with the next of the other.

    ``tls_server`` applies to a ``tls://`` side only; its handshake runs at
    once, in a thread of its own (not in the accept loop), so a client that
    waits for a partner has its session already. ``once`` stops accepting after
    the first pair and returns when it ends. ``addresses`` are the two
    bound addresses (port 0 resolved), ``address`` the first.

    Raises:
        AddressInUse: a side is taken.
    """

    def __init__(
        self,
        first: Address,
        second: Address,
        *,
        tls_server: object = None,
        once: bool = False,
        zero_copy: bool = HAS_SPLICE,
        options: dict[str, Any] | None = None,
    ) -> None:
        ends = (
            _stream_address(first, "--listen-both"),
            _stream_address(second, "--listen-both"),
        )
        self.once = once
        self.zero_copy = zero_copy
        self.listeners: list[Listener] = []
        try:
            for end in ends:
                tls = tls_server if end.is_tls else None  # the other side stays plain
                self.listeners.append(listen(end, tls=tls, **(options or {})))
        except BaseException:
            for listener in self.listeners:
                listener.close()
            raise
        self.addresses = tuple(listener.address for listener in self.listeners)
        self.address = self.addresses[0]
        self.stopper = Stopper()
        self.pairs = 0
        self._waiting: tuple[list[Connection], list[Connection]] = ([], [])
        self._lock = threading.Lock()
        self._running: dict[threading.Thread, list[Pair]] = {}
        self._handshaking: set[threading.Thread] = set()
        self._handshaken: list[tuple[int, Connection]] = []  # for the main thread to take

    def serve_forever(self) -> None:
        """Accept and join until stopped (or, with ``once``, until the first pair ends)."""
        self.stopper.install_signals()
        try:
            with selectors.DefaultSelector() as selector:
                for side, listener in enumerate(self.listeners):
                    listener.socket.setblocking(False)
                    selector.register(listener.socket, selectors.EVENT_READ, side)
                selector.register(self.stopper.fileno(), selectors.EVENT_READ, None)
                while not self.stopper.requested() and not (self.once and self.pairs):
                    for key, _ in selector.select():
                        if key.data is None:
                            self.stopper.drain()
                            self._take_handshaken()
                        else:
                            self._accept(key.data)
                    self._match()
            if self.once:
                self._wait_for_pairs()
        finally:
            self.close()

    def _accept(self, side: int) -> None:
        try:
            conn = self.listeners[side].accept_waiting()
        except SocketeerError as exc:
            log.warning("accept on %s: %s", self.addresses[side], exc)
            return
        if conn is None:
            return
        context = self.listeners[side].tls_context
        if context is not None:
            thread = threading.Thread(
                target=self._handshake, args=(side, conn, context), daemon=True
            )
            with self._lock:
                self._handshaking.add(thread)
            thread.start()
            return
        self._wait(side, conn)

    def _handshake(self, side: int, conn: Connection, context: Any) -> None:
        ready = True
        try:
            conn.start_tls(context, HANDSHAKE_TIMEOUT)
        except SocketeerError as exc:
            log.warning("%s: %s", conn.peer, exc)
            conn.close()
            ready = False
        with self._lock:
            self._handshaking.discard(threading.current_thread())
            if ready:
                self._handshaken.append((side, conn))
        self.stopper.wake()

    def _take_handshaken(self) -> None:
        with self._lock:
            ready, self._handshaken = self._handshaken, []
        for side, conn in ready:
            self._wait(side, conn)

    def _wait(self, side: int, conn: Connection) -> None:
        waiting = self._waiting[side]
        waiting[:] = [c for c in waiting if _still_there(c)]
        if len(waiting) >= MAX_WAITING:
            log.warning(
                "%s: %d clients wait for a partner already; closing %s",
                self.addresses[side],
                MAX_WAITING,
                conn.peer,
            )
            conn.close()
            return
        waiting.append(conn)
        if not self._waiting[1 - side]:
            log.info("%s waits for a client on %s", conn.peer, self.addresses[1 - side])

    def _match(self) -> None:
        first, second = self._waiting
        while first and second:
            a, b = first.pop(0), second.pop(0)
            if not _still_there(a):
                a.close()
                second.insert(0, b)
                continue
            if not _still_there(b):
                b.close()
                first.insert(0, a)
                continue
            self.pairs += 1
            thread = threading.Thread(target=self._run_pair, args=(a, b), daemon=True)
            with self._lock:
                self._running[thread] = []
            thread.start()
            if self.once:
                return

    def _run_pair(self, a: Connection, b: Connection) -> None:
        names = (str(a.peer or self.addresses[0]), str(b.peer or self.addresses[1]))
        sides: list[Side] = []
        try:
            for conn in (a, b):
                sock, _ = conn.detach()
                sides.append(Side.of_socket(sock, str(conn.peer)))
            pair = Pair(sides[0], sides[1], zero_copy=self.zero_copy)
            with self._lock:
                self._running[threading.current_thread()].append(pair)
            log.info("joined %s and %s", *names)
            pair.run()
            _log_pair(pair, *names)
        except SocketeerError as exc:
            log.warning("%s <-> %s: %s", *names, exc)
            for side in sides:
                side.close()
        finally:
            a.close()
            b.close()
            with self._lock:
                self._running.pop(threading.current_thread(), None)
            self.stopper.wake()

    def _wait_for_pairs(self) -> None:
        while not self.stopper.requested():
            with self._lock:
                if not self._running:
                    return
            self.stopper.wait()

    def close(self) -> None:
        """Cut every pair, close the waiting clients and both listeners."""
        with self._lock:
            threads = list(self._running.items())
            handshakes = list(self._handshaking)
        for thread in handshakes:  # each ends within its handshake timeout
            thread.join()
        self._take_handshaken()
        for _, pairs in threads:
            for pair in pairs:
                pair.abort()
        for thread, _ in threads:
            thread.join(HANDSHAKE_TIMEOUT + 5)
        for waiting in self._waiting:
            for conn in waiting:
                conn.close()
            waiting.clear()
        for listener in self.listeners:
            listener.close()
        self.stopper.close()

    def __enter__(self) -> ListenBoth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _still_there(conn: Connection) -> bool:
    """Whether a waiting client is still connected (a peek: EOF or an error says it left)."""
    try:  # the plain socket's recv, below TLS: a peek at the bytes themselves
        return socket.socket.recv(conn.socket, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    except ValueError:  # closed meanwhile
        return False
