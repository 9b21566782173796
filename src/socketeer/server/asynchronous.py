"""The async model: one event loop (uvloop when installed) serving every connection.

Built-in handlers without per-connection logic (echo, discard) run as bare
protocols (``fast_protocol``): no task, no ``Connection`` object, one reused
receive buffer. Handlers that take the raw socket (``raw_socket``: exec, the
relay) get it from this runner's own accept callback, which drains the
backlog on each wake-up and applies the accept policy (``accept``); a relay
then runs on callbacks (``start_async``), with no task per connection. Every
other handler gets an ``aio.Connection`` and a task.

Idle timeouts are a timer per connection (``loop.call_later``), re-armed
from the connection's last activity when it fires; nothing sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .._sockio import address_of, local_address
from ..aio import _loop
from ..aio._protocol import StreamProtocol
from ..aio.connection import Connection
from ..errors import SocketeerError, Timeout
from ..listener import RETRY_ACCEPT_ERRNOS
from . import _log, accept, proxied
from .admission import slowest

ACCEPT_BATCH = 64  # clients taken per wake-up before other callbacks get a turn

if TYPE_CHECKING:
    from .core import Server


def _peer_address(peername: Any, like: Any) -> Any:
    """The ``Address`` of a transport's peername (made only when someone asks)."""
    return address_of(peername, like) if peername else None


class _Tracked:
    """What the runner keeps per open connection (small: 10,000 idle ones must fit)."""

    __slots__ = (
        "counters",
        "last_total",
        "like",
        "named",
        "peername",
        "session",
        "shed",
        "started",
        "task",
        "timer",
        "transport",
    )

    def __init__(self, transport: Any | None, peername: Any, like: Any) -> None:
        self.transport = transport
        self.peername = peername
        self.like = like
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.counters: Any = None
        self.session: Any = None  # a loop-driven handler's connection (start_async)
        self.timer: asyncio.TimerHandle | None = None
        self.last_total = 0
        self.named: Any = None  # the client a PROXY header named
        self.shed = False  # closed to make room for a new client

    @property
    def peer(self) -> Any:
        if self.named is not None:
            return self.named
        return _peer_address(self.peername, self.like)

    def cut(self, reason: SocketeerError, *, flush: bool = False) -> None:
        """End this connection now; ``flush`` lets a transport send what it holds first."""
        if self.session is not None:
            self.session.abort(reason)
        if self.transport is not None:
            if flush:
                self.transport.close()  # the handler's task sees it closed and ends
            else:
                self.transport.abort()
        if self.task is not None and not (flush and self.transport is not None):
            self.task.cancel()


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
        self.loop: Any = None
        # Connections that fill the descriptor table (create_server path only).
        self.descriptor_room: int | None = None

    def run(self) -> None:
        try:
            _loop.run(self._main())
        finally:
            import sys  # the relay's spare splice pipes of this thread's loop, if it had any

            looped = sys.modules.get("socketeer.relay.looped")
            if looped is not None:
                looped.close_loop_resources()

    # -- lifecycle ------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        if self.stop_event is not None and self.stop_event.is_set() and signum == signal.SIGINT:
            self.forced = True
        self.server.stopper.stop(forced=self.forced)

    def _on_stopper(self) -> None:
        """The stopper was woken: a signal, ``shutdown()``, or ``once`` has its client."""
        stopper = self.server.stopper
        stopper.drain()
        assert self.stop_event is not None and self.idle_changed is not None
        if not stopper.accepting:
            self.stop_event.set()  # stop accepting
        if stopper.stopping:
            self.forced = self.forced or stopper.forced
        self.idle_changed.set()

    async def _main(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_capacity_errors)
        self.stop_event = asyncio.Event()
        self.idle_changed = asyncio.Event()
        watch = self.server.stopper
        loop.add_reader(watch.fileno(), self._on_stopper)  # shutdown() from another thread
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
        server: Any = None
        handler = self.server.handler
        if getattr(handler, "raw_socket", False) or handler.takes_socket:
            # exec and the relay take the socket itself, so no transport may
            # read from it: accept the raw sockets here instead.
            accept.reserve()
            self.listener.socket.setblocking(False)
            loop.add_reader(self.listener.fileno(), self._accept_raw)
        else:
            # A PROXY header is read through a Connection: no fast path then.
            fast = None if self.server.accept_proxy_protocol else handler.fast_protocol()
            factory = self._fast_factory(fast) if fast is not None else self._task_factory()
            server = await loop.create_server(
                factory,
                sock=self.listener.socket,
                backlog=self.server.backlog,
                ssl=self.server.tls_context,
            )
            self.descriptor_room = _descriptor_room()
        try:
            await self.stop_event.wait()
        finally:
            if server is None:
                loop.remove_reader(self.listener.fileno())
            else:
                server.close()
            self.listener.close()  # new clients are refused from here on
            await self._finish()
            loop.remove_reader(watch.fileno())
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)

    async def _finish(self) -> None:
        """Let open connections end: without limit for ``once``, else for ``grace``."""
        assert self.idle_changed is not None
        stopper = self.server.stopper
        deadline: float | None = None
        while self.active and not self.forced:
            if stopper.stopping and deadline is None:
                deadline = time.monotonic() + self.server.grace
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self.idle_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.idle_changed.wait(), left)
        if self.active:
            _log.log.warning("grace period over: closing %d connection(s)", len(self.active))
            for tracked in list(self.active.values()):
                tracked.cut(SocketeerError("closed at shutdown"))
            self.server.handler.close()
            await asyncio.sleep(0)
            tasks = [t.task for t in self.active.values() if t.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)

    # -- raw sockets (exec, relay) ------------------------------------------------------

    def _accept_raw(self) -> None:
        """The listener is readable: take every waiting client (up to a batch)."""
        listening = self.listener.socket
        for _ in range(ACCEPT_BATCH):
            if not self.server.stopper.accepting:
                return
            try:
                sock, peername = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in RETRY_ACCEPT_ERRNOS:
                    continue
                if exc.errno in accept.CAPACITY_ERRNOS:
                    self._out_of_capacity(exc)
                    return
                raise
            self._serve_raw(sock, peername)

    def _out_of_capacity(self, exc: OSError) -> None:
        """The accept policy (``accept.out_of_capacity``); the loop backs off, never sleeps."""
        if accept.out_of_capacity(self.listener.socket, exc):
            self.loop.remove_reader(self.listener.fileno())
            self.loop.call_later(accept.BACKOFF, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self.server.stopper.accepting and not self.listener.closed:
            self.loop.add_reader(self.listener.fileno(), self._accept_raw)

    def _serve_raw(self, sock: socket.socket, peername: Any) -> None:
        server = self.server
        like = server.address
        if server.screens(len(self.active)):
            peer = address_of(peername, like) if peername else None
            if not server.admit(peer, len(self.active)):
                sock.close()
                return
        tracked = _Tracked(None, peername, like)
        self.active[sock] = tracked
        handler = server.handler
        start = getattr(handler, "start_async", None)
        if start is not None:

            def finished(
                bytes_in: int | None, bytes_out: int | None, error: BaseException | None
            ) -> None:
                self._closed(sock, bytes_in, bytes_out, error)

            tracked.session = start(sock, peername, like, server.tls_context, finished)
        else:
            sock.setblocking(True)
            tracked.task = asyncio.ensure_future(self._serve_socket(sock, tracked))
        if sock in self.active:  # not over already (a TO that refused at once)
            self._watch_idle(tracked)

    async def _serve_socket(self, sock: socket.socket, tracked: _Tracked) -> None:
        error: BaseException | None = None
        try:
            local = local_address(sock, self.server.address)
            await self.server.handler.serve_socket_async(sock, local, tracked.peer)
        except SocketeerError as exc:
            error = exc
        except asyncio.CancelledError:
            error = SocketeerError("closed at shutdown")
        finally:
            sock.close()
            self._closed(sock, None, None, error)

    # -- admission, accounting and idle timers ----------------------------------------

    def _opened(self, key: Any, transport: Any) -> _Tracked | None:
        server = self.server
        # The common case (quiet, no lists, under the limit) asks the kernel
        # nothing and builds no Address: connections per second count.
        screen = server.screens(len(self.active))
        peername = None
        if screen or self.logging:
            peername = transport.get_extra_info("peername")
        if screen:
            peer = _peer_address(peername, server.address)
            if not server.admit(peer, len(self.active), self._make_room):
                transport.abort()
                return None
        tracked = _Tracked(transport, peername, server.address)
        self.active[key] = tracked
        if self.descriptor_room is not None and len(self.active) >= self.descriptor_room:
            _at_descriptor_limit(len(self.active))
        return tracked

    def _make_room(self, newcomer: Any) -> bool:
        """At the limit: close the slowest connection for ``newcomer`` (``admission``).

        Only connections whose bytes are counted take part (protocol handlers;
        a relay's or a program's session is not weighed). The victim is marked
        so that the next client at the limit does not pick it again before its
        transport reports it closed.
        """
        found = slowest(
            (
                (tracked, tracked.started, c.bytes_received + c.bytes_sent)
                for tracked in self.active.values()
                if (c := tracked.counters) is not None and not tracked.shed
            ),
            time.monotonic(),
        )
        if found is None:
            return False
        victim, age, rate = found
        victim.shed = True
        _log.shed(victim.peer, age, rate, newcomer)
        victim.cut(SocketeerError(f"shed: {rate:.0f} bytes/s at max_connections"))
        return True

    def _closed(
        self, key: Any, bytes_in: int | None, bytes_out: int | None, error: BaseException | None
    ) -> None:
        tracked = self.active.pop(key, None)
        if tracked is None:
            return
        if tracked.timer is not None:
            tracked.timer.cancel()
        if self.logging:
            _log.closed(tracked.peer, tracked.started, bytes_in, bytes_out, error)
        if not self.server.stopper.accepting:
            assert self.idle_changed is not None
            self.idle_changed.set()  # _finish() waits for the last one

    def _watch_idle(self, tracked: _Tracked) -> None:
        idle = self.server.idle_timeout
        if idle is not None:
            tracked.timer = self.loop.call_later(idle, self._check_idle, tracked)

    def _check_idle(self, tracked: _Tracked) -> None:
        """A connection's idle deadline came: close it, or re-arm from its last activity."""
        tracked.timer = None
        idle = self.server.idle_timeout
        assert idle is not None
        now = time.monotonic()
        if tracked.session is not None:
            due = tracked.session.last_activity + idle  # exact: the pair stamps each move
        else:
            counters = tracked.counters
            total = 0 if counters is None else counters.bytes_received + counters.bytes_sent
            moved, tracked.last_total = total != tracked.last_total, total
            due = now + idle if moved else now  # moved within the last period, or not at all
        if due > now:
            tracked.timer = self.loop.call_later(due - now, self._check_idle, tracked)
            return
        _log.log.info("idle for %gs: closing %s", idle, tracked.peer or "local client")
        tracked.cut(Timeout(f"idle for {idle:g}s"), flush=True)

    # -- protocol factories ---------------------------------------------------------------

    def _fast_factory(self, base: Any) -> Any:
        runner = self

        class Served(base):  # type: ignore[misc]
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                tracked = runner._opened(self, transport)
                if tracked is not None:
                    tracked.counters = self
                    runner._watch_idle(tracked)

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
                conn = Connection(
                    transport,
                    self,
                    timeout=runner.server.idle_timeout,
                    address=runner.server.address,
                )
                tracked.counters = _Counters(self, conn)
                tracked.task = asyncio.ensure_future(runner._serve(self, conn))
                runner._watch_idle(tracked)

        return Served

    async def _serve(self, key: Any, conn: Connection) -> None:
        error: BaseException | None = None
        try:
            if self.server.accept_proxy_protocol:
                header, rest = await proxied.read_header_async(conn)
                proxied.take_header(conn, header, rest)
                conn.timeout = self.server.idle_timeout
                tracked = self.active.get(key)
                if tracked is not None:
                    tracked.named = conn.peer  # the log names the real client
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


def _descriptor_room() -> int | None:
    """How many connections fit in the descriptor table from now on (None: unknown).

    uvloop's accept (libuv's) meets EMFILE by closing the waiting clients
    itself, and tells no one: the count of connections, one descriptor each on
    this path, is how the runner knows it is there, to say so in the log.
    """
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - in_use)


def _at_descriptor_limit(connections: int) -> None:
    exc = OSError(errno.EMFILE, f"too many open files ({connections} connections hold them)")
    _log.out_of_descriptors("accept", exc, True)


def _quiet_capacity_errors(loop: Any, context: dict[str, Any]) -> None:
    """asyncio's own accept loop reports EMFILE with a traceback: make it one line."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in accept.CAPACITY_ERRNOS:
        _log.out_of_descriptors("accept", exc, False)
        return
    loop.default_exception_handler(context)


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
