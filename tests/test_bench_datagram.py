"""bench rr over datagram sockets (SPEC §7): round trips against socketeer's own datagram
servers and in-test peers over UDP and Unix datagrams, and the truth about what goes
wrong: loss, duplicates, late replies, corrupted bytes, refusals and a stalled server."""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from socketeer.aio import _loop
from socketeer.bench.datagram import run_datagram_rr
from socketeer.bench.result import Counts, Interval, Result, Settings

from .conftest import HAS_IPV6, SOCKETEER, Background

# What a test server does with the n-th datagram: the replies to send (none: dropped),
# each at once or as (delay in seconds, reply).
Behaviour = Callable[[int, bytes], Sequence[bytes | tuple[float, bytes]]]


class DatagramPeer:
    """A datagram server on a thread that replies as ``behaviour`` says; stopped by a wake-up."""

    def __init__(self, sock: socket.socket, behaviour: Behaviour) -> None:
        self.sock = sock
        self.behaviour = behaviour
        self.seen = 0
        self._timers: list[threading.Timer] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    data, sender = self.sock.recvfrom(70_000)
                    self.seen += 1
                    for reply in self.behaviour(self.seen, data):
                        if isinstance(reply, tuple):
                            timer = threading.Timer(reply[0], self._send, (reply[1], sender))
                            self._timers.append(timer)
                            timer.start()
                        else:
                            self._send(reply, sender)

    def _send(self, reply: bytes, sender: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(reply, sender)

    def stop(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(10)
        for timer in self._timers:
            timer.cancel()
            timer.join(10)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()


@pytest.fixture
def peer() -> Iterator[Callable[..., str]]:
    """Start a UDP (or, given ``path``, Unix datagram) peer; returns its address."""
    started: list[DatagramPeer] = []

    def start(behaviour: Behaviour, path: str | None = None) -> str:
        if path is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            address = f"udp://127.0.0.1:{sock.getsockname()[1]}"
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            address = f"unix-dgram:{path}"
        started.append(DatagramPeer(sock, behaviour))
        return address

    yield start
    for item in started:
        item.stop()


def echo(_n: int, data: bytes) -> list[bytes]:
    return [data]


def bench(
    address: str,
    *,
    connections: int = 1,
    stop: asyncio.Event | None = None,
    **options: object,
) -> tuple[Result, Counts, int]:
    """One worker's run, merged as the runner merges it: (result, warm-up counts, achieved)."""
    settings = Settings(address=address, connections=connections, **options)  # type: ignore[arg-type]
    intervals: list[Interval] = []

    async def main() -> tuple[Counts, int]:
        return await run_datagram_rr(
            settings,
            worker=0,
            connections=connections,
            rate=settings.rate,
            requests=settings.requests,
            on_interval=intervals.append,
            stop=stop,
        )

    warm, achieved = asyncio.run(main())
    result = Result(settings, intervals=intervals, connections=achieved)
    result.elapsed = sum(interval.seconds for interval in intervals)
    return result, warm, achieved


def assert_healthy(result: Result) -> None:
    counts = result.counts
    assert counts.requests > 0
    assert result.rate > 0
    assert counts.errors == {} or all(v == 0 for v in counts.errors.values()), counts.errors
    latency = result.latency
    assert latency.count == counts.requests
    marks = [latency.percentile(p) for p in (50, 90, 99, 99.9, 99.99, 100)]
    assert marks == sorted(marks)
    assert marks[0] > 0


def start_server(background: type[Background], address: str) -> tuple[Background, str]:
    server = background([*SOCKETEER, "serve", address, "echo"], stdin=subprocess.DEVNULL)
    return server, server.wait_listening()


def stop_server(server: Background) -> None:
    server.proc.send_signal(signal.SIGTERM)
    _, err, code = server.finish(timeout=30)
    assert code == 0, err


# -- against socketeer serve ... echo --------------------------------------------------


@pytest.mark.parametrize("kind", ["udp4", "udp6"])
@pytest.mark.parametrize("pipeline", [1, 4])
def test_udp_round_trips_against_socketeer_echo(
    kind: str, pipeline: int, background: type[Background]
) -> None:
    if kind == "udp6" and not HAS_IPV6:
        pytest.skip("no IPv6 loopback here")
    listen = "udp://127.0.0.1:0" if kind == "udp4" else "udp6://[::1]:0"
    server, address = start_server(background, listen)
    result, _, achieved = bench(address, connections=2, duration=1.0, pipeline=pipeline, size=100)
    assert_healthy(result)
    assert achieved == 2
    assert result.counts.bytes_received == result.counts.bytes_sent
    stop_server(server)


def test_unix_datagram_path_against_socketeer_echo(
    background: type[Background], sockdir: Path
) -> None:
    server, address = start_server(background, f"unix-dgram:{sockdir}/echo.sock")
    result, _, achieved = bench(address, connections=2, duration=1.0)
    assert_healthy(result)
    assert achieved == 2
    stop_server(server)


def test_unix_datagram_abstract_name_against_socketeer_echo(
    background: type[Background], abstract_name: str
) -> None:
    server, address = start_server(background, f"unix-dgram:@{abstract_name}")
    result, _, _ = bench(address, duration=1.0, size=1000)
    assert_healthy(result)
    stop_server(server)


# -- against in-test peers ---------------------------------------------------------------


def test_round_trips_against_a_python_echo(peer: Callable[..., str]) -> None:
    result, _, achieved = bench(peer(echo), connections=3, duration=1.0, size=16)
    assert_healthy(result)
    assert achieved == 3
    assert result.uncorrected is None  # closed loop: one latency


def test_unix_datagram_path_against_a_python_echo(peer: Callable[..., str], sockdir: Path) -> None:
    result, _, _ = bench(peer(echo, path=f"{sockdir}/peer.sock"), duration=0.5)
    assert_healthy(result)


def test_requests_ends_the_run_after_exactly_that_many(peer: Callable[..., str]) -> None:
    result, _, _ = bench(peer(echo), connections=2, pipeline=3, duration=None, requests=250)
    assert_healthy(result)
    assert result.counts.requests == 250


def test_warmup_is_done_but_not_recorded(peer: Callable[..., str]) -> None:
    result, warm, _ = bench(peer(echo), duration=1.2, warmup=0.3)
    assert warm.requests == 0  # counted apart, and round trips only once measuring
    assert warm.bytes_sent > 0
    assert_healthy(result)
    starts = [interval.start for interval in result.intervals]
    assert starts[0] == 0.0
    assert starts == sorted(starts)
    assert 1.0 <= result.elapsed <= 1.5


def test_one_tenth_dropped_is_one_tenth_lost(peer: Callable[..., str]) -> None:
    address = peer(lambda n, data: [] if n % 10 == 0 else [data])
    result, _, _ = bench(address, connections=4, duration=None, requests=400, timeout=0.05)
    counts = result.counts
    lost = counts.errors.get("lost", 0)
    assert 0.07 <= lost / 400 <= 0.13, counts
    assert counts.requests + lost == 400
    assert set(counts.errors) == {"lost"}


def test_a_corrupted_byte_is_a_mismatch(peer: Callable[..., str]) -> None:
    def corrupt(n: int, data: bytes) -> list[bytes]:
        if n % 5:
            return [data]
        return [data[:-1] + bytes([data[-1] ^ 0x55])]

    result, _, _ = bench(peer(corrupt), duration=None, requests=300)
    counts = result.counts
    assert counts.errors == {"mismatch": 60}
    assert counts.requests == 240


def test_a_reply_from_another_length_is_a_mismatch(peer: Callable[..., str]) -> None:
    result, _, _ = bench(peer(lambda n, data: [data + b"!"]), duration=None, requests=20)
    assert result.counts.errors == {"mismatch": 20}
    assert result.counts.requests == 0


def test_duplicates_are_counted(peer: Callable[..., str]) -> None:
    result, _, _ = bench(peer(lambda n, data: [data, data]), duration=None, requests=200)
    counts = result.counts
    assert counts.requests == 200
    # The copy of the last reply may come after the run has ended.
    assert 199 <= counts.errors.get("duplicated", 0) <= 200
    assert set(counts.errors) == {"duplicated"}


def test_a_reply_after_its_timeout_is_reordered_not_lost(peer: Callable[..., str]) -> None:
    # The fifth reply comes 0.3 s late, after the client gave up on it at 0.1 s.
    address = peer(lambda n, data: [(0.3, data)] if n == 5 else [data])
    result, _, _ = bench(address, duration=1.0, timeout=0.1)
    counts = result.counts
    assert counts.errors.get("reordered", 0) == 1, counts.errors
    assert counts.errors.get("lost", 0) == 0, counts.errors
    assert counts.requests > 5


def test_a_closed_port_is_connect_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
    result, _, achieved = bench(f"udp://127.0.0.1:{port}", connections=2, duration=0.3)
    counts = result.counts
    assert counts.requests == 0
    assert counts.errors.get("connect_refused", 0) >= 2
    assert set(counts.errors) == {"connect_refused"}
    assert achieved == 0


def test_a_missing_unix_datagram_server_is_connect_refused(sockdir: Path) -> None:
    result, _, achieved = bench(f"unix-dgram:{sockdir}/nobody.sock", connections=3, duration=0.2)
    assert result.counts.errors == {"connect_refused": 3}
    assert achieved == 0


def test_stop_ends_the_run_at_once(peer: Callable[..., str]) -> None:
    address = peer(echo)

    async def main() -> float:
        stop = asyncio.Event()
        settings = Settings(address=address, duration=30.0)
        asyncio.get_running_loop().call_later(0.3, stop.set)
        started = time.monotonic()
        await run_datagram_rr(
            settings,
            worker=0,
            connections=1,
            rate=None,
            requests=None,
            on_interval=lambda interval: None,
            stop=stop,
        )
        return time.monotonic() - started

    assert asyncio.run(main()) < 2


def test_a_stalled_server_shows_in_the_open_loop_percentiles(peer: Callable[..., str]) -> None:
    last_stall = [time.monotonic()]

    def stalling(_n: int, data: bytes) -> list[bytes]:
        now = time.monotonic()
        if now - last_stall[0] >= 1.0:
            last_stall[0] = now
            time.sleep(0.1)
        return [data]

    result, _, _ = bench(peer(stalling), connections=2, duration=3.2, rate=200.0)
    counts = result.counts
    assert counts.error_total == 0, counts.errors
    assert 450 <= counts.requests <= 700
    assert counts.late > 0
    assert counts.late_ns > counts.late * 1_000_000
    corrected = result.latency.percentile(99)
    assert corrected >= 50_000_000
    uncorrected = result.uncorrected
    assert uncorrected is not None
    assert uncorrected.count == result.latency.count
    assert uncorrected.percentile(99) < corrected


def test_round_trips_on_uvloop(background: type[Background]) -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (socketeer[speed])")
    server, address = start_server(background, "udp://127.0.0.1:0")
    intervals: list[Interval] = []
    settings = Settings(address=address, connections=2, duration=1.0, pipeline=2)

    async def main() -> tuple[Counts, int]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return await run_datagram_rr(
            settings,
            worker=0,
            connections=2,
            rate=None,
            requests=None,
            on_interval=intervals.append,
        )

    _, achieved = _loop.run(main(), use_uvloop=True)
    result = Result(settings, intervals=intervals, connections=achieved)
    result.elapsed = sum(interval.seconds for interval in intervals)
    assert_healthy(result)
    assert achieved == 2
    stop_server(server)
