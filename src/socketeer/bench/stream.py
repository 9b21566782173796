"""Load over stream sockets (TCP, Unix, TLS): the rr, stream and connect modes of one worker.

Every connection is a raw non-blocking socket (an ``ssl.SSLSocket`` for
``tls://``) driven on the worker's event loop: a send goes straight to the
kernel, and only a would-block waits for readiness (``aio._ready``). Payloads
and receive buffers are made once per connection; a request allocates
nothing but the loop's own bookkeeping when it has to wait.

Closed loop: each connection keeps ``pipeline`` requests in flight and sends
the next when a reply is complete. Open loop (``rate``): each connection has
a send schedule (``rate / connections`` per second, evenly spaced and
staggered between connections); latency is timed from the *intended* send
time, so a stalled server shows in the percentiles (coordinated omission, as
wrk2 corrects it), beside the uncorrected latency from the actual send; a send
that leaves after its slot is counted as late, with how late.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .._deadline import Deadline
from .._flow import is_tls, would_block
from .._tlsopt import client_setup_for
from ..address import Address
from ..aio._ready import fd_ready, send_all
from ..aio._ready import handshake as drive_handshake
from ..errors import ConnectError, ConnectionReset, SocketeerError, Timeout, TLSError
from .histogram import Histogram
from .result import Counts, Interval, Settings

__all__ = ["LATE_SLACK_NS", "Clock", "run_stream"]

#: A send this much past its slot counts as late (the loop's timers are not exact).
LATE_SLACK_NS = 1_000_000
_CONNECT_TIMEOUT = 10.0


class Clock:
    """One worker's phases and its per-second intervals, shared by all its connections."""

    def __init__(
        self,
        settings: Settings,
        worker: int,
        on_interval: Callable[[Interval], None],
        *,
        start_ns: int,
        requests: int | None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.on_interval = on_interval
        self.warmup_end = start_ns + int(settings.warmup * 1e9)
        self.end = (
            None if settings.duration is None else self.warmup_end + int(settings.duration * 1e9)
        )
        self.requests_left = requests  # this worker's share of --requests
        self.stopped = False
        self.warm = Counts()
        self.next_flush = self.warmup_end + 1_000_000_000
        self._open_interval(self.warmup_end)

    def _open_interval(self, at_ns: int) -> None:
        self.interval_start = at_ns
        self.counts = Counts()
        self.latency = Histogram()
        self.uncorrected = Histogram() if self.settings.rate else None
        self.handshake = Histogram() if self.settings.mode == "connect" else None
        self.cpu_mark = time.process_time()

    def tick(self, now_ns: int) -> None:
        """Close the second that has passed, if one has (each engine calls this)."""
        if self.stopped or now_ns < self.next_flush:
            return
        self.flush(now_ns)
        self.next_flush += 1_000_000_000
        if self.next_flush <= now_ns:  # the loop was held up: no burst of empty seconds
            self.next_flush = now_ns + 1_000_000_000

    def note_late(self, intended_ns: int, now_ns: int) -> None:
        """Open loop: a send that left more than ``LATE_SLACK_NS`` after its slot."""
        late = now_ns - intended_ns
        if late > LATE_SLACK_NS:
            counts = self.counts_for(now_ns)
            counts.late += 1
            counts.late_ns += late

    def measuring(self, now_ns: int) -> bool:
        return now_ns >= self.warmup_end

    def counts_for(self, now_ns: int) -> Counts:
        return self.counts if now_ns >= self.warmup_end else self.warm

    def running(self, now_ns: int) -> bool:
        if self.stopped:
            return False
        if (self.end is not None and now_ns >= self.end) or (
            self.requests_left is not None and self.requests_left <= 0
        ):
            self.stopped = True
        return not self.stopped

    def done_one(self) -> None:
        if self.requests_left is not None:
            self.requests_left -= 1

    def flush(self, now_ns: int, *, final: bool = False) -> None:
        """Close the interval that ``now_ns`` ended (called each second, and at the end)."""
        if now_ns < self.warmup_end and not final:
            return
        start = self.interval_start
        seconds = max(0.0, (now_ns - start) / 1e9)
        cpu = time.process_time() - self.cpu_mark
        interval = Interval(
            worker=self.worker,
            start=max(0.0, (start - self.warmup_end) / 1e9),
            seconds=seconds,
            counts=self.counts,
            latency=self.latency,
            uncorrected=self.uncorrected,
            handshake=self.handshake,
            cpu_seconds=cpu,
        )
        self._open_interval(now_ns)
        self.on_interval(interval)


async def run_stream(
    settings: Settings,
    *,
    worker: int,
    connections: int,
    rate: float | None,
    requests: int | None,
    on_interval: Callable[[Interval], None],
    tls: object = None,
) -> tuple[Counts, int]:
    """Run this worker's ``connections`` until the phase ends; returns (warm-up counts,
    connections that connected at least once). Intervals go to ``on_interval``."""
    target = Address.parse(settings.address)
    setup = client_setup_for(target, tls)
    clock = Clock(settings, worker, on_interval, start_ns=time.perf_counter_ns(), requests=requests)
    plan = _Plan(target, setup, settings, clock, rate / connections if rate else None)
    plan.shared = connections > 1
    jobs: list[asyncio.Future[None]] = []
    for index in range(connections):
        stagger = index / rate if rate else 0.0
        work = _connect_loop if settings.mode == "connect" else _one_connection
        jobs.append(asyncio.ensure_future(work(plan, stagger, index)))
    ticker = asyncio.ensure_future(_tick(clock))
    try:
        await asyncio.gather(*jobs)
    finally:
        ticker.cancel()
        for job in jobs:
            job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    clock.flush(time.perf_counter_ns(), final=True)
    return clock.warm, plan.connected


async def _tick(clock: Clock) -> None:
    """Close an interval every second of the measured phase."""
    perf = time.perf_counter_ns
    while not clock.stopped:
        await asyncio.sleep(max(0.0, (clock.next_flush - perf()) / 1e9))
        clock.tick(perf())


# -- one connection ---------------------------------------------------------------------


class _Plan:
    """What every connection of a worker shares."""

    __slots__ = ("clock", "connected", "rate", "settings", "setup", "shared", "target")

    def __init__(
        self, target: Address, setup: Any, settings: Settings, clock: Clock, rate: float | None
    ) -> None:
        self.target = target
        self.setup = setup
        self.settings = settings
        self.clock = clock
        self.rate = rate  # per connection
        self.connected = 0  # connections that connected at least once
        self.shared = False  # more than one connection on this worker's loop


class _Link:
    """A connected non-blocking socket (plain or TLS) with awaitable send and receive."""

    __slots__ = ("blocked", "fd", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.blocked = would_block()

    async def send_all(self, data: memoryview) -> None:
        # A request nearly always fits the socket buffer: send it here, and only
        # a full buffer goes to the waiting helper (no coroutine per request).
        try:
            sent = self.sock.send(data)
        except self.blocked:
            sent = 0
        if sent < len(data):
            await send_all(self.sock, data[sent:])

    async def receive_into(self, view: memoryview) -> int:
        """Some bytes into ``view`` (0: the server closed)."""
        sock = self.sock
        while True:
            try:
                return int(sock.recv_into(view))
            except self.blocked:
                await fd_ready(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _error_kind(exc: BaseException, connecting: bool) -> str:
    if isinstance(exc, TLSError):
        return "tls"
    if connecting:
        if isinstance(exc, Timeout):
            return "connect_timeout"
        if isinstance(exc, ConnectionReset):
            return "connect_reset"
        return "connect_refused" if isinstance(exc, ConnectError) else "connect_reset"
    if isinstance(exc, Timeout):
        return "timeout"
    return "read"


async def _open(target: Address, setup: Any, handshake: Histogram | None) -> _Link:
    """Connect (and run the TLS handshake, timed apart into ``handshake``)."""
    from ..aio.connection import connected_socket_async

    sock = await connected_socket_async(target, Deadline(_CONNECT_TIMEOUT))
    if setup is None:
        return _Link(sock)
    from ..tls import ClientHandshake

    started = time.perf_counter_ns()
    stepped = ClientHandshake(sock, target, setup)
    await drive_handshake(stepped)
    if handshake is not None:
        handshake.record(time.perf_counter_ns() - started)
    return _Link(stepped.sock)


def _payload(size: int, index: int) -> bytes:
    """What a connection sends: recognisable, different per connection, cheap to compare."""
    seed = f"socketeer bench {index} ".encode()
    return (seed * (size // len(seed) + 1))[:size]


async def _one_connection(plan: _Plan, stagger: float, index: int) -> None:
    clock, settings = plan.clock, plan.settings
    try:
        link = await _open(plan.target, plan.setup, None)
    except (OSError, SocketeerError) as exc:
        clock.counts_for(time.perf_counter_ns()).error(_error_kind(exc, True))
        return
    plan.connected += 1
    try:
        if settings.mode == "stream":
            await _stream(link, settings, clock)
        else:
            await _round_trips(link, plan, stagger, index)
    except (OSError, SocketeerError) as exc:
        clock.counts_for(time.perf_counter_ns()).error(_error_kind(exc, False))
    finally:
        link.close()


async def _round_trips(link: _Link, plan: _Plan, stagger: float, index: int) -> None:
    """rr: send ``size`` bytes, read exactly as many back, check them, repeat."""
    settings, clock, rate = plan.settings, plan.clock, plan.rate
    size = settings.size
    payload = memoryview(_payload(size, index))
    buffer = bytearray(size)
    view = memoryview(buffer)
    depth = 1 if rate else max(1, settings.pipeline)
    shared = plan.shared
    perf = time.perf_counter_ns
    in_flight: deque[tuple[int, int]] = deque()  # (intended, actual) send times
    gap = int(1e9 / rate) if rate else 0
    intended = perf() + int(stagger * 1e9)

    async def send_one() -> None:
        nonlocal intended
        now = perf()
        if rate:
            if intended > now:
                await until(intended)
                now = perf()
            clock.note_late(intended, now)
            in_flight.append((intended, now))
            intended += gap
        else:
            in_flight.append((now, now))
        await link.send_all(payload)

    for _ in range(depth):
        if not clock.running(perf()):
            return
        await send_one()
    while in_flight:
        await _receive_exactly(link, view)
        done = perf()
        planned, sent = in_flight.popleft()
        _completed(clock, done, planned=planned, sent=sent, intact=buffer == payload, size=size)
        if clock.running(done):
            await send_one()
        if shared:
            # A reply already waiting means no await above suspended: without
            # this, one connection would keep the loop and the others' replies
            # would wait (and count as latency) in their sockets.
            await asyncio.sleep(0)


#: The loop's timers fire up to a millisecond off (libuv counts in ms): an open
#: loop sleeps until this much before its slot and yields to the loop until it comes.
TIMER_SLACK_NS = 500_000


async def until(at_ns: int) -> None:
    """Wait until ``perf_counter_ns()`` reaches ``at_ns``, to well under a millisecond.

    A plain ``asyncio.sleep`` would leave up to 1 ms late, and in open loop
    that lateness is the client's, not the server's, yet it would show in the
    latency timed from the intended send. The last stretch yields to the loop
    (other connections run meanwhile) instead of sleeping, so an open loop at
    a high rate keeps the client's CPU busy: its lateness, not its CPU, says
    whether it kept up (``Result.client_bound``).
    """
    perf = time.perf_counter_ns
    left = at_ns - perf()
    if left > TIMER_SLACK_NS:
        await asyncio.sleep((left - TIMER_SLACK_NS) / 1e9)
    while perf() < at_ns:
        await asyncio.sleep(0)


async def _receive_exactly(link: _Link, view: memoryview) -> None:
    got, size = 0, len(view)
    while got < size:
        n = await link.receive_into(view[got:])
        if n == 0:
            raise ConnectionReset("the server closed the connection")
        got += n


def _completed(
    clock: Clock, done: int, *, planned: int, sent: int, intact: bool, size: int
) -> None:
    """One reply is in: count it (warm-up or measured), time it from the plan and the send."""
    counts = clock.counts_for(done)
    if not intact:
        counts.error("mismatch")
    else:
        counts.requests += 1
        if done >= clock.warmup_end:
            clock.latency.record(done - planned)
            if clock.uncorrected is not None:
                clock.uncorrected.record(done - sent)
    counts.bytes_sent += size
    counts.bytes_received += size
    clock.done_one()


async def _stream(link: _Link, settings: Settings, clock: Clock) -> None:
    """stream: bulk one way (or both), counting what goes out and what comes back."""
    chunk = memoryview(b"\0" * max(settings.size, 65536))
    sink = memoryview(bytearray(1 << 18))
    perf = time.perf_counter_ns

    async def sending() -> None:
        while clock.running(perf()):
            await link.send_all(chunk)
            clock.counts_for(perf()).bytes_sent += len(chunk)
        if not is_tls(link.sock):
            with contextlib.suppress(OSError):
                link.sock.shutdown(socket.SHUT_WR)

    async def receiving() -> None:
        while True:
            n = await link.receive_into(sink)
            if n == 0:
                return
            clock.counts_for(perf()).bytes_received += n
            if not clock.running(perf()) and settings.direction == "receive":
                return

    if settings.direction == "receive":
        await receiving()
        return
    receiver = asyncio.ensure_future(receiving())
    try:
        await sending()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(receiver), 1.0)  # the echo's tail
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, SocketeerError):
            await receiver


async def _connect_loop(plan: _Plan, stagger: float, index: int) -> None:
    """connect: connect (and handshake), one round trip, close; again."""
    settings, clock, rate = plan.settings, plan.clock, plan.rate
    size = settings.size
    perf = time.perf_counter_ns
    gap = int(1e9 / rate) if rate else 0
    intended = perf() + int(stagger * 1e9)
    ever = False
    payload = memoryview(_payload(size, index))
    buffer = bytearray(size)
    view = memoryview(buffer)
    while clock.running(perf()):
        if rate:
            await until(intended)
        started = perf()
        planned = intended if rate else started
        intended += gap
        try:
            link = await _open(
                plan.target, plan.setup, clock.handshake if started >= clock.warmup_end else None
            )
        except (OSError, SocketeerError) as exc:
            clock.counts_for(perf()).error(_error_kind(exc, True))
            await asyncio.sleep(0.01)  # a refusing server must not turn this into a spin
            continue
        if not ever:
            ever = True
            plan.connected += 1
        try:
            await link.send_all(payload)
            await _receive_exactly(link, view)
            _completed(
                clock, perf(), planned=planned, sent=started, intact=buffer == payload, size=size
            )
        except (OSError, SocketeerError) as exc:
            clock.counts_for(perf()).error(_error_kind(exc, False))
        finally:
            link.close()
