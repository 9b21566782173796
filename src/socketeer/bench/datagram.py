"""Round trips over datagram sockets (UDP, Unix datagram): the rr mode of one worker.

Each "connection" is one datagram socket connected to the server (Unix
datagram clients get an address of their own, so replies can reach them),
made non-blocking and driven by reader callbacks on the running event loop
(uvloop's when the caller runs one): no task or coroutine per socket, and a
request allocates nothing beyond the loop's own bookkeeping.

Every request is ``size`` bytes (at least 16): a sequence number (``!Q``),
the connection's id (``!Q``), then a fill that differs between connections.
A reply is matched to its request by the sequence number:

- in flight, same bytes: a round trip, timed from the send;
- in flight, other bytes (or another length, or another connection's id):
  ``mismatch``;
- a sequence number given up on (no reply within ``timeout``, so counted
  ``lost``): ``reordered``, and one fewer ``lost``;
- in flight but older than one already answered (pipelining): ``reordered``,
  and still a round trip;
- one already answered: ``duplicated``;
- one never sent: ``mismatch``.

Nothing is re-sent. Closed loop: each socket keeps ``pipeline`` requests in
flight. Open loop (``rate``): each socket has a send schedule (``rate /
connections`` per second, evenly spaced, the sockets staggered), and sends
its next request when its reply (or its timeout) is in and its slot has come;
latency is timed from the *intended* send time into ``latency`` and from the
actual send into ``uncorrected``, and a send that leaves after its slot is
counted in ``late`` / ``late_ns`` (coordinated omission corrected as wrk2 does).

An ICMP "port unreachable" surfaces as ECONNREFUSED on a connected socket's
next send or receive: ``connect_refused``; any other failure of a send is
``write``, of a receive ``read``. Either ends the request it hit (it is not
also ``lost``), and the socket rests until the next tick before sending again,
so a closed port is not hammered in a tight loop.

The phases and the per-second intervals are the stream engine's ``Clock``:
requests before the warm-up's end are done but land in the warm-up counts,
and their latency is not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import struct
import time
from collections.abc import Callable
from typing import Literal

from ..address import Address
from ..datagram import DatagramEndpoint, open_datagram
from ..errors import ConnectError, UsageError
from .result import Counts, Interval, Settings
from .stream import Clock

__all__ = ["HEADER", "run_datagram_rr"]

#: The bytes every request starts with: its sequence number and its connection's id.
HEADER = 16
_HEAD = struct.Struct("!QQ")
_SEQ = struct.Struct("!Q")
# Sequence numbers given up on that a socket remembers (to tell a late reply
# from a duplicate); older ones are forgotten, and a reply to one is a duplicate.
_LOST_MEMORY = 4096
_FREE = -1


async def run_datagram_rr(
    settings: Settings,
    *,
    worker: int,
    connections: int,
    rate: float | None,
    requests: int | None,
    on_interval: Callable[[Interval], None],
    stop: asyncio.Event | None = None,
) -> tuple[Counts, int]:
    """Run this worker's ``connections`` datagram sockets until the phase ends.

    ``rate`` and ``requests`` are this worker's shares (None: closed loop, no
    count limit); the phases come from ``settings.warmup`` and
    ``settings.duration``, counted from the call. Intervals go to
    ``on_interval`` once a second and once at the end. Returns (the warm-up's
    counts, the sockets that got at least one reply). After the deadline or the
    last request, replies still in flight are awaited up to ``settings.timeout``
    (then counted lost); when ``stop`` is set they are abandoned, uncounted.

    Raises:
        UsageError: not a datagram address, a size under 16 bytes, or neither
            a duration nor a request count to end the run.
        AddressError, ConnectError: the address is malformed or does not resolve.
    """
    target = Address.parse(settings.address)
    if not target.is_datagram:
        raise UsageError(f"datagram rr needs udp:// or unix-dgram:, not {target}")
    if settings.mode != "rr":
        raise UsageError(f"datagram sockets run --mode rr only, not {settings.mode}")
    if settings.size < HEADER:
        raise UsageError(f"datagram rr needs --size {HEADER} or more (sequence number and id)")
    if settings.duration is None and requests is None and stop is None:
        raise UsageError("a datagram run needs a duration or a request count to end")
    run = _Run(
        settings,
        worker=worker,
        connections=connections,
        rate=rate,
        requests=requests,
        on_interval=on_interval,
    )
    try:
        return await run.go(target, stop)
    finally:
        run.close()


class _Probe:
    """One datagram socket: its buffers and the requests it has in flight."""

    __slots__ = (
        "answered",
        "endpoint",
        "fd",
        "gap",
        "in_flight",
        "intended",
        "lost",
        "next_seq",
        "planned",
        "recv_body",
        "recv_buffer",
        "recv_view",
        "resting",
        "send_body",
        "send_buffer",
        "sent",
        "seqs",
        "sock",
        "wake",
        "who",
    )

    def __init__(self, endpoint: DatagramEndpoint, who: int, size: int, depth: int) -> None:
        self.endpoint = endpoint
        self.sock = endpoint.socket
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.who = who
        # The fill repeats every 256 bytes (7 is odd): build one period, not a byte at a time.
        period = bytes((who * 31 + i * 7) & 0xFF for i in range(256))
        fill = (period * ((size - HEADER) // 256 + 1))[: size - HEADER]
        self.send_buffer = bytearray(_HEAD.pack(0, who) + fill)
        self.send_body = memoryview(self.send_buffer)[HEADER:]
        # One byte more than a request: a longer reply shows as a wrong length.
        self.recv_buffer = bytearray(size + 1)
        self.recv_view = memoryview(self.recv_buffer)
        self.recv_body = self.recv_view[HEADER:size]
        self.next_seq = 0
        self.answered = -1  # the highest sequence number answered
        self.seqs = [_FREE] * depth  # the requests in flight, one slot each
        self.planned = [0] * depth  # their intended send times (open loop)
        self.sent = [0] * depth  # their actual send times
        self.in_flight = 0
        # Given up on: sequence number -> counted during the warm-up.
        self.lost: dict[int, bool] = {}
        self.intended = 0  # open loop: the next send's slot
        self.gap = 0  # open loop: between slots
        self.resting = False  # after an error: no send before the next tick
        self.wake: asyncio.TimerHandle | None = None  # open loop: the next slot's timer


class _Run:
    """One worker's sockets, its clock, and the tick that closes intervals and expires requests."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker: int,
        connections: int,
        rate: float | None,
        requests: int | None,
        on_interval: Callable[[Interval], None],
    ) -> None:
        self.settings = settings
        self.size = settings.size
        self.rate = rate if rate else None
        self.depth = 1 if self.rate else max(1, settings.pipeline)
        self.timeout_ns = int(settings.timeout * 1e9)
        # Expiry is checked on each tick: a twentieth of the timeout, within 1..20 ms.
        self.tick_ns = min(20_000_000, max(1_000_000, self.timeout_ns // 20))
        self.connections = connections
        self.worker = worker
        self.clock = Clock(
            settings, worker, on_interval, start_ns=time.perf_counter_ns(), requests=requests
        )
        self.probes: list[_Probe] = []
        self.replied: set[int] = set()
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.draining = False
        self.drain_until = 0
        self.ticker: asyncio.TimerHandle | None = None

    # -- set-up and the end ---------------------------------------------------------------

    async def go(self, target: Address, stop: asyncio.Event | None) -> tuple[Counts, int]:
        clock = self.clock
        for index in range(self.connections):
            try:
                endpoint = open_datagram(target)
            except ConnectError:
                if not target.is_unix:
                    raise  # a UDP connect fails only when the name does not resolve
                # A Unix datagram server that is not there: every socket says so.
                clock.counts_for(time.perf_counter_ns()).error("connect_refused")
                continue
            who = (self.worker << 32) | index
            self.probes.append(_Probe(endpoint, who, self.size, self.depth))
        if not self.probes:
            clock.stopped = True
            clock.flush(time.perf_counter_ns(), final=True)
            return clock.warm, 0
        start = time.perf_counter_ns()
        for index, probe in enumerate(self.probes):
            self.loop.add_reader(probe.fd, self._readable, probe)
            if self.rate:
                probe.gap = int(1e9 * len(self.probes) / self.rate)
                probe.intended = start + int(1e9 * index / self.rate)
        waiter = None
        if stop is not None:
            waiter = asyncio.ensure_future(stop.wait())
            waiter.add_done_callback(self._stopped)
        self._schedule_tick()
        for probe in self.probes:
            self._fill(probe, start)
        try:
            await self.done
        finally:
            if waiter is not None:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        clock.flush(time.perf_counter_ns(), final=True)
        return clock.warm, len(self.replied)

    def close(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
        for probe in self.probes:
            if probe.wake is not None:
                probe.wake.cancel()
            with contextlib.suppress(Exception):
                self.loop.remove_reader(probe.fd)
            probe.endpoint.close()
        self.probes = []

    def _stopped(self, waiter: asyncio.Future[Literal[True]]) -> None:
        if not waiter.cancelled():
            self.clock.stopped = True
            self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    # -- sending ----------------------------------------------------------------------------

    def _fill(self, probe: _Probe, now: int) -> None:
        """Send until the socket has its requests in flight (open loop: one, in its slot)."""
        if self.rate:
            if probe.in_flight == 0 and probe.wake is None and not probe.resting:
                self._send_scheduled(probe)
            return
        while probe.in_flight < self.depth and not probe.resting and not self.draining:
            if not self.clock.running(now):
                self._start_draining(now)
                return
            self._send(probe, now, now)

    def _send_scheduled(self, probe: _Probe) -> None:
        probe.wake = None
        now = time.perf_counter_ns()
        if self.draining or probe.resting or probe.in_flight:
            return
        if not self.clock.running(now):
            self._start_draining(now)
            return
        if probe.intended > now:
            delay = (probe.intended - now) / 1e9
            probe.wake = self.loop.call_later(delay, self._send_scheduled, probe)
            return
        self.clock.note_late(probe.intended, now)
        planned = probe.intended
        probe.intended += probe.gap
        self._send(probe, planned, now)

    def _send(self, probe: _Probe, planned: int, now: int) -> None:
        seq = probe.next_seq
        probe.next_seq = seq + 1
        _SEQ.pack_into(probe.send_buffer, 0, seq)
        self.clock.done_one()  # --requests counts requests sent
        try:
            probe.sock.send(probe.send_buffer)
        except BlockingIOError:
            # The socket's send buffer is full: as good as lost on the way out.
            self._given_up(probe, seq, now)
            probe.resting = True
            return
        except OSError as exc:
            self.clock.counts_for(now).error(_errno_kind(exc, "write"))
            probe.resting = True
            return
        slot = probe.seqs.index(_FREE)
        probe.seqs[slot] = seq
        probe.planned[slot] = planned
        probe.sent[slot] = now
        probe.in_flight += 1
        self.clock.counts_for(now).bytes_sent += self.size

    # -- receiving --------------------------------------------------------------------------

    def _readable(self, probe: _Probe) -> None:
        # Level-triggered: at most one datagram per request in flight, so that a
        # socket with one request in flight makes no receive that can only say EAGAIN.
        recv_into = probe.sock.recv_into
        buffer = probe.recv_buffer
        for _ in range(self.depth):
            try:
                got = recv_into(buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                self._failed(probe, _errno_kind(exc, "read"))
                return
            self._reply(probe, got)

    def _reply(self, probe: _Probe, got: int) -> None:
        now = time.perf_counter_ns()
        clock = self.clock
        counts = clock.counts_for(now)
        counts.bytes_received += got
        if got < HEADER:
            counts.error("mismatch")
            return
        seq, who = _HEAD.unpack_from(probe.recv_buffer)
        if who != probe.who:
            counts.error("mismatch")
            return
        try:
            slot = probe.seqs.index(seq)
        except ValueError:
            self._stray(probe, seq, counts)
            return
        probe.seqs[slot] = _FREE
        probe.in_flight -= 1
        self.replied.add(probe.fd)
        if got != self.size or probe.recv_body != probe.send_body:
            counts.error("mismatch")
        else:
            if seq < probe.answered:
                counts.error("reordered")
            else:
                probe.answered = seq
            if clock.measuring(now):
                counts.requests += 1
                clock.latency.record(now - probe.planned[slot])
                if clock.uncorrected is not None:
                    clock.uncorrected.record(now - probe.sent[slot])
        if not self.rate:
            self._fill(probe, now)
        elif not self.draining:
            self._send_scheduled(probe)
        if self.draining and not self._any_in_flight():
            self._finish()

    def _stray(self, probe: _Probe, seq: int, counts: Counts) -> None:
        """A reply to no request in flight: late, a copy, or garbage."""
        warm = probe.lost.pop(seq, None)
        if warm is not None:
            counts.error("reordered")
            (self.clock.warm if warm else self.clock.counts).error("lost", -1)
            self.replied.add(probe.fd)
        elif 0 <= seq < probe.next_seq:
            counts.error("duplicated")
        else:
            counts.error("mismatch")

    def _failed(self, probe: _Probe, kind: str) -> None:
        """A receive failed: the oldest request in flight is the one it was about."""
        now = time.perf_counter_ns()
        self.clock.counts_for(now).error(kind)
        if probe.in_flight:
            slot = min(
                (i for i, seq in enumerate(probe.seqs) if seq != _FREE),
                key=probe.sent.__getitem__,
            )
            probe.seqs[slot] = _FREE
            probe.in_flight -= 1
        probe.resting = True
        if self.draining and not self._any_in_flight():
            self._finish()

    def _given_up(self, probe: _Probe, seq: int, now: int) -> None:
        warm = not self.clock.measuring(now)
        self.clock.counts_for(now).error("lost")
        probe.lost[seq] = warm
        if len(probe.lost) > _LOST_MEMORY:
            del probe.lost[next(iter(probe.lost))]

    # -- the tick ---------------------------------------------------------------------------

    def _schedule_tick(self) -> None:
        self.ticker = self.loop.call_later(self.tick_ns / 1e9, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter_ns()
        clock = self.clock
        clock.tick(now)
        expired = now - self.timeout_ns
        for probe in self.probes:
            if probe.in_flight:
                self._expire(probe, expired, now)
        if not self.draining and not clock.running(now):
            self._start_draining(now)
        if self.draining:
            if not self._any_in_flight():
                self._finish()
                return
            if now >= self.drain_until:
                for probe in self.probes:
                    self._expire(probe, now + 1, now)
                self._finish()
                return
        else:
            for probe in self.probes:
                if probe.resting:
                    probe.resting = False
                    self._fill(probe, now)
        self._schedule_tick()

    def _expire(self, probe: _Probe, before: int, now: int) -> None:
        """Give up on the requests sent before ``before``."""
        seqs, sent = probe.seqs, probe.sent
        freed = False
        for slot in range(len(seqs)):
            seq = seqs[slot]
            if seq != _FREE and sent[slot] < before:
                seqs[slot] = _FREE
                probe.in_flight -= 1
                self._given_up(probe, seq, now)
                freed = True
        if freed and not self.draining:
            self._fill(probe, now)

    def _start_draining(self, now: int) -> None:
        if self.draining:
            return
        self.draining = True
        self.drain_until = now + self.timeout_ns
        for probe in self.probes:
            if probe.wake is not None:
                probe.wake.cancel()
                probe.wake = None
        if not self._any_in_flight():
            self._finish()

    def _any_in_flight(self) -> bool:
        return any(probe.in_flight for probe in self.probes)


def _errno_kind(exc: OSError, otherwise: str) -> str:
    return "connect_refused" if exc.errno == errno.ECONNREFUSED else otherwise
