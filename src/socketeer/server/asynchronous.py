"""The async model: one event loop (uvloop when installed) serving every connection.

Built-in handlers without per-connection logic (echo, discard) run as bare
protocols (``fast_protocol``): no task, no ``Connection`` object, one reused
receive buffer. Every other handler gets an ``aio.Connection`` and a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from .._sockio import address_of
from ..aio import _loop
from ..aio._protocol import StreamProtocol
from ..aio.connection import Connection
from ..errors import SocketeerError
from . import _log

if TYPE_CHECKING:
    from .core import Server


def _peer_address(peername: Any, like: Any) -> Any:
    """The ``Address`` of a transport's peername (made only when someone asks)."""
    return address_of(peername, like) if peername else None


class _Tracked:
    """What the runner keeps per open connection (small: 10,000 idle ones must fit)."""

    __slots__ = (
        "counters",
        "last_change",
        "last_total",
        "like",
        "peername",
        "started",
        "task",
        "transport",
    )

    def __init__(self, transport: Any | None, peername: Any, like: Any) -> None:
        self.transport = transport
        self.peername = peername
        self.like = like
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.counters: Any = None
        self.last_total = 0
        self.last_change = self.started

    @property
    def peer(self) -> Any:
        return _peer_address(self.peername, self.like)


class AsyncRunner:
    def __init__(self, server: Server) -> None:
        assert server.listener is not None
        self.server = server
        self.listener = server.listener
        self.active: dict[Any, _Tracked] = {}
        self.stop_event: asyncio.Event | None = None
        self.forced = False
        self.idle_changed: asyncio.Event | None = None
        self.logging = _log.log.isEnabledFor(logging.INFO)

    def run(self) -> None:
        _loop.run(self._main())

    # -- lifecycle ------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        assert self.stop_event is not None and self.idle_changed is not None
        if self.stop_event.is_set() and signum == signal.SIGINT:
            self.forced = True
        self.stop_event.set()
        self.idle_changed.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.idle_changed = asyncio.Event()
        watch = self.server.stopper
        loop.add_reader(watch.fileno(), self._on_stopper)  # shutdown() from another thread
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
        server: Any
        if self.server.handler.takes_socket:
            # exec: the program gets the socket untouched, so no transport may
            # read from it; accept the raw sockets here instead.
            server = asyncio.ensure_future(self._accept_raw())
        else:
            fast = self.server.handler.fast_protocol()
            factory = self._fast_factory(fast) if fast is not None else self._task_factory()
            server = await loop.create_server(
                factory,
                sock=self.listener.socket,
                backlog=self.server.backlog,
                ssl=self.server.tls_context,
            )
        sweeper = None
        if self.server.idle_timeout is not None:
            sweeper = asyncio.ensure_future(self._sweep_idle(self.server.idle_timeout))
        try:
            await self.stop_event.wait()
        finally:
            if isinstance(server, asyncio.Future):
                server.cancel()
            else:
                server.close()
            self.listener.close()  # new clients are refused from here on
            if sweeper is not None:
                sweeper.cancel()
            await self._finish()
            loop.remove_reader(watch.fileno())
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)

    def _on_stopper(self) -> None:
        stopper = self.server.stopper
        stopper.drain()
        if stopper.stopping:
            self.forced = self.forced or stopper.forced
            assert self.stop_event is not None and self.idle_changed is not None
            self.stop_event.set()
            self.idle_changed.set()

    async def _finish(self) -> None:
        assert self.idle_changed is not None
        deadline = time.monotonic() + self.server.grace
        while self.active and not self.forced:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.idle_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.idle_changed.wait(), left)
        if self.active:
            _log.log.warning("grace period over: closing %d connection(s)", len(self.active))
            for tracked in list(self.active.values()):
                if tracked.task is not None:
                    tracked.task.cancel()
                if tracked.transport is not None:
                    tracked.transport.abort()
            self.server.handler.close()
            await asyncio.sleep(0)
            tasks = [t.task for t in self.active.values() if t.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)

    async def _accept_raw(self) -> None:
        from .._sockio import local_address
        from .core import BACKOFF, CAPACITY_ERRNOS

        loop = asyncio.get_running_loop()
        listening = self.listener.socket
        while True:
            try:
                sock, peername = await loop.sock_accept(listening)
            except OSError as exc:
                if exc.errno in CAPACITY_ERRNOS:
                    _log.log.error("accept: %s; retrying in %.1fs", exc.strerror, BACKOFF)
                    await asyncio.sleep(BACKOFF)
                continue
            peer = address_of(peername, self.server.address) if peername else None
            if not self.server.admit(peer, len(self.active)):
                sock.close()
                continue
            tracked = _Tracked(None, peername, self.server.address)
            self.active[sock] = tracked
            local = local_address(sock, self.server.address)
            tracked.task = asyncio.ensure_future(self._serve_raw(sock, local, peer))

    async def _serve_raw(self, sock: Any, local: Any, peer: Any) -> None:
        error: BaseException | None = None
        try:
            await self.server.handler.serve_socket_async(sock, local, peer)
        except SocketeerError as exc:
            error = exc
        except asyncio.CancelledError:
            error = SocketeerError("closed at shutdown")
        finally:
            sock.close()
            self._closed(sock, None, None, error)

    # -- admission and accounting ----------------------------------------------------

    def _opened(self, key: Any, transport: Any) -> _Tracked | None:
        server = self.server
        # The common case (quiet, no lists, under the limit) asks the kernel
        # nothing and builds no Address: connections per second count.
        limit = server.max_connections
        screen = bool(server.access) or (limit is not None and len(self.active) >= limit)
        peername = None
        if screen or self.logging:
            peername = transport.get_extra_info("peername")
        if screen:
            peer = _peer_address(peername, server.address)
            if not server.admit(peer, len(self.active)):
                transport.abort()
                return None
        tracked = _Tracked(transport, peername, server.address)
        self.active[key] = tracked
        return tracked

    def _closed(
        self, key: Any, bytes_in: int | None, bytes_out: int | None, error: BaseException | None
    ) -> None:
        tracked = self.active.pop(key, None)
        if tracked is None:
            return
        if self.logging:
            _log.closed(tracked.peer, tracked.started, bytes_in, bytes_out, error)
        if self.stop_event is not None and self.stop_event.is_set():
            assert self.idle_changed is not None
            self.idle_changed.set()  # _finish() waits for the last one

    async def _sweep_idle(self, idle: float) -> None:
        """Close connections with no traffic either way for ``idle`` seconds."""
        while True:
            await asyncio.sleep(min(idle / 4, 1.0))
            now = time.monotonic()
            for tracked in list(self.active.values()):
                counters = tracked.counters
                if counters is None:
                    continue
                total = counters.bytes_received + counters.bytes_sent
                if total != tracked.last_total:
                    tracked.last_total, tracked.last_change = total, now
                elif now - tracked.last_change >= idle and tracked.transport is not None:
                    _log.log.info("idle for %gs: closing %s", idle, tracked.peer)
                    tracked.transport.close()

    # -- protocol factories ---------------------------------------------------------------

    def _fast_factory(self, base: Any) -> Any:
        runner = self

        class Served(base):  # type: ignore[misc]
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                tracked = runner._opened(self, transport)
                if tracked is not None:
                    tracked.counters = self

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                runner._closed(self, self.bytes_received, self.bytes_sent, exc)

        return Served

    def _task_factory(self) -> Any:
        runner = self

        class Served(StreamProtocol):
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                tracked = runner._opened(self, transport)
                if tracked is None:
                    return
                if runner.server.handler.takes_socket:
                    transport.pause_reading()  # every byte is for the program
                conn = Connection(
                    transport,
                    self,
                    timeout=runner.server.idle_timeout,
                    address=runner.server.address,
                )
                tracked.counters = _Counters(self, conn)
                tracked.task = asyncio.ensure_future(runner._serve(self, conn))

        return Served

    async def _serve(self, key: Any, conn: Connection) -> None:
        error: BaseException | None = None
        try:
            await self.server.handler.serve_async(conn)
        except SocketeerError as exc:
            error = exc
        except asyncio.CancelledError:
            error = SocketeerError("closed at shutdown")
        except Exception as exc:  # a bug in a user handler: log it, keep serving others
            _log.log.exception("handler %s failed for %s", self.server.handler.name, conn.peer)
            error = exc
        finally:
            conn.close()
            self._closed(key, conn.bytes_received, conn.bytes_sent, error)


class _Counters:
    """Byte counts of an ``aio.Connection``, read by the idle sweeper."""

    __slots__ = ("_conn", "_protocol")

    def __init__(self, protocol: StreamProtocol, conn: Connection) -> None:
        self._protocol = protocol
        self._conn = conn

    @property
    def bytes_received(self) -> int:
        return self._protocol.bytes_received

    @property
    def bytes_sent(self) -> int:
        return self._conn.bytes_sent
