"""One client of the async relay, from its accepted socket to a running ``LoopPair``.

Two ways to set a client up, the same steps as ``handler.RelayHandler``:

- **on callbacks** (the common case: a plain FROM, no PROXY header to read,
  TO a plain socket address with no name to look up): a non-blocking
  ``connect`` whose writability the loop reports, the PROXY header written
  into the fresh socket, then the pair. No task, no future, no coroutine: a
  relay that takes thousands of clients a second spends its time in the
  kernel, not in set-up.
- **in a task**, for everything that waits on a peer's bytes or on a name:
  a TLS handshake either side (stepped on the loop), a PROXY header to read,
  DNS, an ``exec:`` program. The task ends when the pair starts (a program's
  pair keeps it, to reap the program at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import proxyproto
from .._deadline import Deadline
from .._flow import receive_ready
from .._sockio import Target, address_of, error_for, local_address, set_nodelay, translate_errors
from ..address import Address
from ..aio._ready import fd_ready, handshake, send_all
from ..errors import NetworkError, SocketeerError, Timeout
from ..server.proxied import PROXY_HEADER_TIMEOUT
from .endpoints import Program
from .looped import LoopPair, loop_resources
from .setup import report_set_up_failure

if TYPE_CHECKING:
    from .handler import RelayHandler

__all__ = ["LoopClient"]

_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EALREADY})
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)


class LoopClient:
    """A client of the async relay: set up on callbacks or in a task, then a ``LoopPair``."""

    __slots__ = (
        "attempt",
        "connect_timer",
        "connecting",
        "finished",
        "handler",
        "like",
        "loop",
        "pair",
        "peername",
        "sock",
        "started",
        "task",
        "tls_context",
    )

    def __init__(  # noqa: PLR0917 - made in one place, RelayHandler.start_async
        self,
        handler: RelayHandler,
        sock: socket.socket,
        peername: Any,
        like: Address,
        tls_context: Any,
        finished: Callable[[int | None, int | None, BaseException | None], None],
    ) -> None:
        self.handler = handler
        self.sock: Any = sock
        self.peername = peername
        self.like = like
        self.tls_context = tls_context
        self.finished = finished
        self.started = time.monotonic()
        self.loop = asyncio.get_running_loop()
        self.pair: LoopPair | None = None
        self.task: asyncio.Task[None] | None = None
        self.connecting: socket.socket | None = None
        self.connect_timer: asyncio.TimerHandle | None = None
        self.attempt = 0
        sock.setblocking(False)
        if tls_context is None and handler.callback_targets is not None:
            self._connect_next()
        else:
            self.task = asyncio.ensure_future(self._set_up())

    @property
    def last_activity(self) -> float:
        return self.pair.last_activity if self.pair is not None else self.started

    @property
    def peer(self) -> Address | None:
        return address_of(self.peername, self.like) if self.peername else None

    # -- on callbacks ---------------------------------------------------------------

    def _connect_next(self) -> None:
        """Try the next of TO's addresses (they were resolved once, at start-up)."""
        targets = self.handler.callback_targets
        assert targets is not None
        row: Target = targets[self.attempt]
        self.attempt += 1
        try:
            upstream = socket.socket(row.family, row.type | _NONBLOCK, row.proto)
        except OSError as exc:
            self._fail(None, error_for(exc, "connect", self.handler.target_name, None))
            return
        if not _NONBLOCK:
            upstream.setblocking(False)
        if row.family != socket.AF_UNIX:
            set_nodelay(upstream)
        if self.handler.prepare_to is not None:
            try:  # keepalive, source, buffers: before the connect, as connect() does
                with translate_errors("connect", self.handler.target_name):
                    self.handler.prepare_to(upstream)
            except SocketeerError as exc:
                upstream.close()
                self._fail(None, exc)
                return
        code = upstream.connect_ex(row.sockaddr)
        if code == 0:
            self._connected(upstream)
        elif code in _IN_PROGRESS:
            self.connecting = upstream
            self.loop.add_writer(upstream.fileno(), self._on_connect_done)
            seconds = self.handler.connect_timeout
            if seconds is not None:
                self.connect_timer = self.loop.call_later(seconds, self._on_connect_timeout)
        elif code in (errno.EAGAIN, errno.EWOULDBLOCK):
            # A Unix server with a full backlog: wait for room in a task instead.
            upstream.close()
            self.task = asyncio.ensure_future(self._set_up())
        else:
            upstream.close()
            self._connect_failed(OSError(code, os.strerror(code)))

    def _on_connect_done(self) -> None:
        upstream = self._stop_connecting()
        if upstream is None:
            return
        code = upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            upstream.close()
            self._connect_failed(OSError(code, os.strerror(code)))
        else:
            self._connected(upstream)

    def _on_connect_timeout(self) -> None:
        self.connect_timer = None
        upstream = self._stop_connecting()
        if upstream is not None:
            upstream.close()
            seconds = self.handler.connect_timeout
            self._fail(
                None, Timeout(f"connect timed out after {seconds:g}s: {self.handler.target_name}")
            )

    def _stop_connecting(self) -> socket.socket | None:
        upstream, self.connecting = self.connecting, None
        if upstream is not None:
            self.loop.remove_writer(upstream.fileno())
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
        return upstream

    def _connect_failed(self, exc: OSError) -> None:
        targets = self.handler.callback_targets
        assert targets is not None
        if self.attempt < len(targets):
            self._connect_next()  # the next address of TO, as connect() does
            return
        self._fail(None, error_for(exc, "connect", self.handler.target_name, None))

    def _connected(self, upstream: socket.socket) -> None:
        handler = self.handler
        if handler.proxy_protocol is not None:
            try:
                destination = local_address(self.sock, self.like)
                header = handler._proxy_header(self.peer, destination)
                with translate_errors("send", handler.target_name):
                    sent = upstream.send(header)  # a fresh socket's buffer takes it whole
                if sent != len(header):
                    raise NetworkError(f"PROXY header cut short: {handler.target_name}")
            except SocketeerError as exc:
                upstream.close()
                self._fail(None, exc)
                return
        self._start_pair(upstream)

    def _upstream_name(self) -> str:
        """What the pair's errors call TO (a proxy server names the client's target)."""
        return self.handler.target_name

    def _start_pair(self, upstream: Any) -> LoopPair:
        pool, buffer = loop_resources(self.loop)
        self.pair = LoopPair(
            self.loop,
            self.sock,
            upstream,
            pool=pool,
            buffer=buffer,
            on_end=self._ended,
            upstream_name=self._upstream_name(),
            zero_copy=self.handler.zero_copy,
            observe=self.handler.observe,
        )
        self.pair.start()
        return self.pair

    # -- in a task --------------------------------------------------------------------

    async def _set_up(self) -> None:
        handler = self.handler
        loop = self.loop
        upstream: Any = None
        program: Any = None
        try:
            if self.tls_context is not None:
                from ..tls import ServerHandshake

                where = f"client {self.peer or 'local client'}"
                stepped = ServerHandshake(self.sock, self.tls_context, where)
                self.sock = stepped.sock
                await handshake(stepped)
            source, destination = self.peer, None
            prefix = b""
            if handler.accept_proxy_protocol or handler.proxy_protocol is not None:
                destination = local_address(self.sock, self.like)
            if handler.accept_proxy_protocol:
                header, prefix = await _read_proxy_header(self.sock)
                source, destination = handler._header_names(header, source, destination)
            target = handler.target
            if isinstance(target, Program):
                upstream, program = await _start_program(target)
            else:
                assert isinstance(target, Address)
                from ..aio.connection import dial_async

                deadline = Deadline(handler.connect_timeout)
                upstream = await dial_async(target, deadline, handler.to_options, handler.proxy)
                if handler.tls_setup is not None:
                    from ..tls import ClientHandshake

                    client_side = ClientHandshake(upstream, target, handler.tls_setup)
                    upstream = client_side.sock
                    await handshake(client_side)
            first = prefix
            if handler.proxy_protocol is not None:
                first = handler._proxy_header(source, destination) + prefix
            if first:
                await _send_all(upstream, first, handler.target_name)
            if program is None:
                self._start_pair(upstream)
                return  # the pair runs on callbacks: no task from here on
            done: asyncio.Future[None] = loop.create_future()
            pair = self._start_pair(upstream)
            pair.on_end = lambda _: _settle(done)
            upstream = None
            try:
                await done  # a program: reap it when the pair is over
            finally:
                await _stop_program(program)
            self._ended(pair)
        except asyncio.CancelledError:
            self._fail(upstream, SocketeerError("closed at shutdown"))
        except SocketeerError as exc:
            self._fail(upstream, exc)
        except OSError as exc:
            self._fail(upstream, error_for(exc, "relay", handler.target_name, None))
        finally:
            self.task = None

    # -- the end ------------------------------------------------------------------------

    def _fail(self, upstream: Any, error: SocketeerError) -> None:
        if self.pair is not None:
            self.pair.abort(error)
            if self.pair.on_end is not self._ended:
                self._ended(self.pair)
            return
        with contextlib.suppress(OSError):
            self.sock.close()
        if upstream is not None:
            with contextlib.suppress(OSError):
                upstream.close()
        report_set_up_failure(self.peer, error)
        self.finished(0, 0, error)

    def _ended(self, pair: LoopPair) -> None:
        self.finished(pair.bytes_up, pair.bytes_down, pair.error)

    def abort(self, reason: SocketeerError | None = None) -> None:
        """Cut this client now (idle timeout, forced shutdown)."""
        if self.task is not None:
            self.task.cancel()
        elif self.pair is not None:
            self.pair.abort(reason)
        elif self.connecting is not None:
            upstream = self._stop_connecting()
            if upstream is not None:
                upstream.close()
            self._fail(None, reason or SocketeerError("closed at shutdown"))


# -- helpers: waiting on the loop for a raw socket --------------------------------------


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _read_proxy_header(sock: Any) -> tuple[proxyproto.ProxyHeader, bytes]:
    """As ``server.proxied.read_header``, on a raw non-blocking socket.

    A header that arrives after the accept (in its own packet, or after a
    health check's plain connect that never sends one) is waited for on the
    loop until ``PROXY_HEADER_TIMEOUT``.
    """
    deadline = time.monotonic() + PROXY_HEADER_TIMEOUT
    buffer = b""
    while (found := proxyproto.parse_proxy_header(buffer)) is None:
        with translate_errors("recv", "client"):
            data = receive_ready(sock, 65536)
        if data is None:
            try:
                await fd_ready(sock.fileno(), deadline=deadline)
            except Timeout:
                raise Timeout(f"no PROXY header within {PROXY_HEADER_TIMEOUT:g}s") from None
            continue
        if not data:
            raise proxyproto.closed_before_header(buffer)
        buffer += data
    header, used = found
    return header, buffer[used:]


async def _send_all(sock: Any, data: bytes, where: str) -> None:
    with translate_errors("send", where):
        await send_all(sock, data)


async def _start_program(target: Program) -> tuple[socket.socket, Any]:
    """``exec:`` on the loop: the program's stdin and stdout are one end of a socketpair."""
    ours, theirs = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(
            *target.argv, stdin=theirs.fileno(), stdout=theirs.fileno()
        )
    except OSError as exc:
        ours.close()
        raise NetworkError(f"exec: cannot run {target.argv[0]}: {exc.strerror}") from None
    finally:
        theirs.close()
    ours.setblocking(False)
    return ours, proc


async def _stop_program(proc: Any) -> None:
    if proc.returncode is None:
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except (asyncio.TimeoutError, TimeoutError):
            proc.kill()
            await proc.wait()
