"""What a benchmark run measured: the shape every part of ``socketeer.bench`` shares.

A worker counts into a ``Counts`` and records latencies into a ``Histogram``
(``histogram``); every second it sends an ``Interval`` to the parent, which
merges them into the ``Result`` that the report prints, as a table or as JSON.
Pure: no sockets, no clock reads of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .histogram import Histogram

__all__ = ["ERROR_KINDS", "Counts", "Interval", "Result", "Settings"]

#: Every error a run counts, by kind (SPEC §7: "counts errors by kind").
ERROR_KINDS = (
    "connect_refused",
    "connect_reset",
    "connect_timeout",
    "tls",
    "read",
    "write",
    "timeout",
    "mismatch",
    "lost",
    "duplicated",
    "reordered",
)


@dataclass
class Counts:
    """What one worker (or the whole run) did in some span of time."""

    requests: int = 0  # rr: round trips completed; connect: connections completed
    bytes_sent: int = 0
    bytes_received: int = 0
    late: int = 0  # open loop: sends that left after their scheduled time
    late_ns: int = 0  # open loop: how late, summed
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str, count: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + count

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.late += other.late
        self.late_ns += other.late_ns
        for kind, count in other.errors.items():
            self.error(kind, count)


@dataclass(frozen=True)
class Settings:
    """What was asked for (the ``bench`` options, as the library takes them)."""

    address: str
    mode: str = "rr"  # rr | stream | connect
    connections: int = 1
    size: int = 64
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    rate: float | None = None  # requests/s over all connections: open loop
    pipeline: int = 1
    workers: int = 1
    timeout: float = 1.0  # datagrams: a reply not back within this is lost
    direction: str = "send"  # stream mode: send | receive | both
    max_errors: int = 0


@dataclass
class Interval:
    """One worker's second (or the last part of one): counts and latencies."""

    worker: int
    start: float  # seconds since the measurement began
    seconds: float
    counts: Counts
    latency: Histogram  # corrected (from the intended send time) in open loop
    uncorrected: Histogram | None = None  # open loop: from the actual send
    handshake: Histogram | None = None  # connect mode: the TLS handshake alone
    cpu_seconds: float = 0.0  # the worker's own CPU time in this interval


@dataclass
class Result:
    """A whole run: the settings, every interval, and the totals merged from them."""

    settings: Settings
    intervals: list[Interval] = field(default_factory=list)
    warmup: Counts = field(default_factory=Counts)
    connections: int = 0  # achieved (connected at least once)
    elapsed: float = 0.0  # the measured phase, seconds
    client_cpu: float = 0.0  # the busiest worker's CPU share, 0..1 (1 = a whole core)

    @property
    def counts(self) -> Counts:
        total = Counts()
        for interval in self.intervals:
            total.add(interval.counts)
        return total

    def _merged(self, which: str) -> Histogram | None:
        merged: Histogram | None = None
        for interval in self.intervals:
            part = getattr(interval, which)
            if part is None:
                continue
            if merged is None:
                merged = Histogram()
            merged.merge(part)
        return merged

    @property
    def latency(self) -> Histogram:
        return self._merged("latency") or Histogram()

    @property
    def uncorrected(self) -> Histogram | None:
        return self._merged("uncorrected")

    @property
    def handshake(self) -> Histogram | None:
        return self._merged("handshake")

    @property
    def rate(self) -> float:
        """Requests (round trips, connections) per second over the measured phase."""
        return self.counts.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Bytes per second moved: what came back from an echo server, what went to a
        discard server (``direction="send"``), what came (``"receive"``), or both ways."""
        counts = self.counts
        if self.settings.direction == "both":
            moved = counts.bytes_sent + counts.bytes_received
        elif self.settings.direction == "receive" or counts.bytes_received:
            moved = counts.bytes_received
        else:
            moved = counts.bytes_sent
        return moved / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def client_bound(self) -> bool:
        """Whether the client, not the server, may be what limits the figures.

        Closed loop: above 90% of a core. Open loop: the client spins to send on
        time (``stream.until``), so its CPU says little; more than 1% of sends
        leaving late says it could not keep its schedule.
        """
        if self.settings.rate:
            counts = self.counts
            sent = counts.requests + counts.error_total
            return sent > 0 and counts.late > 0.01 * sent
        return self.client_cpu > 0.9
