"""socketeer bench as a client: against the C load generator, sockperf and iperf3, in one run.

    python benchmarks/bench_client.py [--seconds S] [--rounds N] [--plot FILE.png]

Measures, on 127.0.0.1, each cell the median of N interleaved rounds:

- rr, 64-byte messages: ``socketeer bench --mode rr`` with 1 connection, 16 on
  one worker and 16 on two workers, beside ``loadgen rr`` (the C load
  generator) with 1 and 16, against the C epoll echo server and against
  ``socketeer serve --model async … echo``: round trips/s and p50;
- one connection against sockperf: ``sockperf ping-pong`` to its own server
  (which answers only sockperf's framing, so socketeer bench cannot talk to
  it) beside socketeer bench and the C load generator to the C echo server;
- stream: ``socketeer bench --mode stream`` over one TCP connection to the C
  discard sink, over a Unix socket and over TCP to ``socketeer serve … discard``,
  beside ``iperf3 -c`` to ``iperf3 -s`` and ``loadgen send`` to the C sink;
- start-up: ``socketeer bench --help`` against ``socketeer --version``
  (hyperfine, or 30 timed runs without it), with the ``socketeer`` given by
  ``--socketeer`` (a non-editable install is the fair case);

then prints Markdown tables and the goals, met or not. ``--plot`` also draws
``socketeer bench --plot`` of an open-loop run against socketeer's echo server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import announced_port, background, compile_c, python_env, reserve_port, table

SIZE = 64
STREAM_SIZE = 128 * 1024  # iperf3's default write on TCP
WARMUP = 0.5  # what loadgen leaves out at the start; socketeer bench gets --warmup 0.5
TIMEOUT = 60.0  # no single client run may take longer than this


# -- servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A chatty peer server (sockperf, iperf3) with its output dropped, killed afterwards."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()


def wait_listening(connect: Callable[[], socket.socket], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            connect().close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


@contextlib.contextmanager
def c_server(binary: Path, *args: str) -> Iterator[str]:
    """The C epoll echo server (or, with "discard", the sink); yields its address."""
    with background([str(binary), *args]) as proc:
        yield f"tcp://127.0.0.1:{announced_port(proc, 'C epoll')}"


@contextlib.contextmanager
def socketeer_tcp(handler: str) -> Iterator[str]:
    """``socketeer serve -q --model async fd:N HANDLER`` on a port-0 socket bound here."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    argv = [sys.executable, "-m", "socketeer", "serve", "-q", "--model", "async"]
    argv += [f"fd:{listener.fileno()}", handler]
    with background(argv, (listener.fileno(),)):
        port = listener.getsockname()[1]
        listener.close()
        time.sleep(0.3)  # let its imports settle
        yield f"tcp://127.0.0.1:{port}"


@contextlib.contextmanager
def socketeer_unix(handler: str, directory: str) -> Iterator[str]:
    path = os.path.join(directory, f"{handler}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    argv = [sys.executable, "-m", "socketeer", "serve", "-q", "--model", "async"]
    with background([*argv, f"unix:{path}", handler]):

        def probe() -> socket.socket:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
            except OSError:
                s.close()
                raise
            return s

        wait_listening(probe, "socketeer serve unix")
        time.sleep(0.2)
        yield f"unix:{path}"


# -- clients ------------------------------------------------------------------------------


def socketeer_bench(address: str, *options: object, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "socketeer", "bench", "--json", "--warmup", str(WARMUP)]
    argv += ["--duration", str(seconds), *map(str, options), address]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, env=python_env(), check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"socketeer bench {options} {address}: {out.stderr.strip()}")
    result: dict[str, Any] = json.loads(out.stdout)["result"]
    return result


def rr_socketeer(address: str, conns: int, workers: int, seconds: float) -> tuple[float, ...]:
    r = socketeer_bench(
        address, "--mode", "rr", "-c", conns, "--workers", workers, "--size", SIZE, seconds=seconds
    )
    if r["error_total"]:
        raise RuntimeError(f"socketeer bench rr {address}: errors {r['errors']}")
    return r["rate"], r["percentiles"]["p50"] / 1000, r["client_cpu"]


def loadgen(binary: Path, *args: object) -> list[float]:
    out = subprocess.run(
        [str(binary), *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {args}: {out.stderr.strip()}")
    return [float(x) for x in out.stdout.split()]


def rr_loadgen(binary: Path, address: str, conns: int, seconds: float) -> tuple[float, ...]:
    port = address.rsplit(":", 1)[1]
    rate, p50, _p99 = loadgen(binary, "rr", "127.0.0.1", port, conns, SIZE, seconds)
    return rate, p50, float("nan")


def whole(seconds: float) -> str:
    """sockperf and iperf3 take whole seconds."""
    return str(max(1, round(seconds)))


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sockperf_ping_pong(seconds: float) -> tuple[float, ...]:
    """Round trips/s and p50 (full round trip, µs) of sockperf ping-pong to its own server."""
    port = reserve_port()
    with quiet(["sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", str(port)]):
        wait_listening(lambda: socket.create_connection(("127.0.0.1", port)), "sockperf server")
        time.sleep(0.2)
        argv = ["sockperf", "ping-pong", "--tcp", "-i", "127.0.0.1", "-p", str(port)]
        argv += ["-t", whole(seconds), "-m", str(SIZE), "--full-rtt"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    text = ANSI.sub("", out.stdout + out.stderr)
    valid = re.search(
        r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=\d+; "
        r"ReceivedMessages=(\d+)",
        text,
    )
    p50 = re.search(r"percentile 50\.000 =\s*([\d.]+)", text)
    if out.returncode != 0 or valid is None or p50 is None:
        raise RuntimeError(f"sockperf ping-pong: {text.strip()[-400:]}")
    return int(valid[2]) / float(valid[1]), float(p50[1]), float("nan")


def stream_socketeer(address: str, seconds: float) -> float:
    r = socketeer_bench(address, "--mode", "stream", "--size", STREAM_SIZE, seconds=seconds)
    if r["error_total"]:
        raise RuntimeError(f"socketeer bench stream {address}: errors {r['errors']}")
    return float(r["throughput"])


def stream_iperf3(seconds: float) -> float:
    port = reserve_port()
    with quiet(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port), "-1"]):
        time.sleep(0.3)
        argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", whole(seconds), "-J"]
        for _ in range(20):  # the server may still be starting
            out = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
            if out.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"iperf3 -c: {out.stdout[-400:]} {out.stderr[-400:]}")
    return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]) / 8


# -- start-up -----------------------------------------------------------------------------


def startup(socketeer: str) -> dict[str, float]:
    """Median wall seconds of ``socketeer --version`` and ``socketeer bench --help``."""
    commands = {
        "--version": [socketeer, "--version"],
        "bench --help": [socketeer, "bench", "--help"],
    }
    hyperfine = shutil.which("hyperfine")
    if hyperfine:
        with tempfile.NamedTemporaryFile(suffix=".json") as export:
            argv = [hyperfine, "-N", "--warmup", "3", "--runs", "30", "--export-json", export.name]
            argv += [" ".join(c) for c in commands.values()]
            subprocess.run(argv, check=True, capture_output=True, timeout=120)
            runs = json.loads(Path(export.name).read_text())["results"]
        return {name: r["median"] for name, r in zip(commands, runs, strict=True)}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(30):
        for name, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


# -- the run ------------------------------------------------------------------------------

RR_CLIENTS = [
    ("socketeer bench -c 1", 1, 1),
    ("socketeer bench -c 16 --workers 1", 16, 1),
    ("socketeer bench -c 16 --workers 2", 16, 2),
    ("C loadgen, 1 connection", 1, 0),
    ("C loadgen, 16 connections", 16, 0),
]
RR_SERVERS = ["C epoll echo", "socketeer async echo"]
STREAM_CELLS = [
    "socketeer bench, TCP, to the C sink",
    "socketeer bench, TCP, to socketeer discard",
    "socketeer bench, Unix, to socketeer discard",
    "iperf3 -c to iperf3 -s",
    "C loadgen send to the C sink",
]


def one_round(bins: dict[str, Path], tmp: str, seconds: float) -> dict[object, object]:
    """Every cell once; returns {cell: value}."""
    cells: dict[object, object] = {}
    for server in RR_SERVERS:
        serving = (
            c_server(bins["echo_epoll"]) if server == "C epoll echo" else socketeer_tcp("echo")
        )
        with serving as address:
            for name, conns, workers in RR_CLIENTS:
                if workers:
                    cells[(server, name)] = rr_socketeer(address, conns, workers, seconds)
                else:
                    cells[(server, name)] = rr_loadgen(bins["loadgen"], address, conns, seconds)
    cells["sockperf"] = sockperf_ping_pong(seconds)
    with c_server(bins["echo_epoll"], "discard") as address:
        cells[STREAM_CELLS[0]] = stream_socketeer(address, seconds)
        port = address.rsplit(":", 1)[1]
        cells[STREAM_CELLS[4]] = loadgen(bins["loadgen"], "send", "127.0.0.1", port, seconds)[0]
    with socketeer_tcp("discard") as address:
        cells[STREAM_CELLS[1]] = stream_socketeer(address, seconds)
    with socketeer_unix("discard", tmp) as address:
        cells[STREAM_CELLS[2]] = stream_socketeer(address, seconds)
    cells[STREAM_CELLS[3]] = stream_iperf3(seconds)
    return cells


def median_of(rounds: list[dict[object, Any]], key: object) -> tuple[float, ...]:
    values = [r[key] for r in rounds]
    if isinstance(values[0], tuple):
        return tuple(statistics.median(col) for col in zip(*values, strict=True))
    return (statistics.median(values),)


def us(x: float) -> str:
    return f"{x:.1f} µs"


def cpu(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.0%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument(
        "--socketeer",
        default=shutil.which("socketeer") or "socketeer",
        help="the socketeer command timed for start-up (use a non-editable install)",
    )
    parser.add_argument("--plot", help="also draw an open-loop latency plot into this PNG")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        bins = {name: compile_c(name, Path(tmp)) for name in ("loadgen", "echo_epoll")}
        rounds = []
        for round_no in range(args.rounds):
            rounds.append(one_round(bins, tmp, args.seconds))
            print(f"  round {round_no + 1} done", file=sys.stderr)
        if args.plot:
            with socketeer_tcp("echo") as address:
                argv = [sys.executable, "-m", "socketeer", "bench", "--mode", "rr", "-c", "4"]
                argv += ["--rate", "2000", "--duration", "5", "--plot", args.plot, address]
                subprocess.run(
                    argv, check=True, env=python_env(), timeout=TIMEOUT, stdout=subprocess.DEVNULL
                )
    boot = startup(args.socketeer)

    print(
        f"{args.rounds} rounds of {args.seconds:g} s, medians; Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    rr: dict[tuple[str, str], tuple[float, ...]] = {
        (server, name): median_of(rounds, (server, name))
        for server in RR_SERVERS
        for name, _, _ in RR_CLIENTS
    }
    rows = []
    for name, conns, _ in RR_CLIENTS:
        row = [name]
        for server in RR_SERVERS:
            rate, p50, client = rr[(server, name)]
            base = rr[
                (server, "C loadgen, 1 connection" if conns == 1 else "C loadgen, 16 connections")
            ]
            row += [f"{rate:,.0f} ({rate / base[0]:.2f}x)", us(p50), cpu(client)]
        rows.append(row)
    header = ["client"]
    for server in RR_SERVERS:
        header += [f"{server}: rt/s (x C loadgen)", "p50", "client CPU"]
    print(
        table(
            "rr, 64-byte messages: round trips/s, p50, busiest client process's CPU", header, rows
        )
    )

    sp = median_of(rounds, "sockperf")
    one = rr[("C epoll echo", "socketeer bench -c 1")]
    lg1 = rr[("C epoll echo", "C loadgen, 1 connection")]
    rows = [
        [
            "sockperf ping-pong",
            "sockperf server",
            f"{sp[0]:,.0f} ({sp[0] / sp[0]:.2f}x)",
            us(sp[1]),
        ],
        [
            "socketeer bench -c 1",
            "C epoll echo",
            f"{one[0]:,.0f} ({one[0] / sp[0]:.2f}x)",
            us(one[1]),
        ],
        [
            "C loadgen, 1 connection",
            "C epoll echo",
            f"{lg1[0]:,.0f} ({lg1[0] / sp[0]:.2f}x)",
            us(lg1[1]),
        ],
    ]
    print(
        table(
            "One connection, 64 bytes: round trips/s (x sockperf) and p50 of the full round trip",
            ["client", "server", "rt/s", "p50"],
            rows,
        )
    )

    st = {name: median_of(rounds, name)[0] for name in STREAM_CELLS}
    ip = st["iperf3 -c to iperf3 -s"]
    rows = [
        [name, f"{value / 1e6:,.0f} MB/s", f"{value * 8 / 1e9:.1f} Gbit/s", f"{value / ip:.2f}x"]
        for name, value in st.items()
    ]
    print(
        table(
            "Stream, one connection: bytes/s (x iperf3)",
            ["client and server", "MB/s", "Gbit/s", "x iperf3"],
            rows,
        )
    )

    ratio = boot["bench --help"] / boot["--version"]
    rows = [[f"socketeer {name}", f"{t * 1000:.1f} ms"] for name, t in boot.items()]
    rows.append(["ratio", f"{ratio:.2f}x"])
    print(table("Start-up (median wall time of 30 runs)", ["command", "time"], rows))

    c16 = rr[("C epoll echo", "socketeer bench -c 16 --workers 2")][0]
    c16_lg = rr[("C epoll echo", "C loadgen, 16 connections")][0]
    a16 = rr[("socketeer async echo", "socketeer bench -c 16 --workers 2")][0]
    a16_lg = rr[("socketeer async echo", "C loadgen, 16 connections")][0]
    tcp_c = st[STREAM_CELLS[0]]
    unix, tcp_s = st[STREAM_CELLS[2]], st[STREAM_CELLS[1]]
    goals = [
        (
            "1 connection: p50 within 10 µs of the C loadgen's (C echo server)",
            f"{one[1]:.1f} vs {lg1[1]:.1f} µs ({one[1] - lg1[1]:+.1f} µs)",
            one[1] - lg1[1] <= 10,
        ),
        (
            "16 connections, 2 workers: ≥ 0.6x the C loadgen, C echo server",
            f"{c16 / c16_lg:.2f}x",
            c16 / c16_lg >= 0.6,
        ),
        (
            "16 connections, 2 workers: within 10% of the C loadgen, socketeer async server",
            f"{a16 / a16_lg:.2f}x",
            abs(a16 / a16_lg - 1) <= 0.1,
        ),
        ("stream, one TCP connection: ≥ 0.7x iperf3", f"{tcp_c / ip:.2f}x", tcp_c / ip >= 0.7),
        ("stream over Unix ≥ over TCP (socketeer discard)", f"{unix / tcp_s:.2f}x", unix >= tcp_s),
        ("bench --help ≤ 1.5x --version", f"{ratio:.2f}x", ratio <= 1.5),
    ]
    print(
        table(
            "Goals",
            ["goal", "result", "met"],
            [[g, r, "yes" if ok else "no"] for g, r, ok in goals],
        )
    )
    print(f"run took {time.monotonic() - began:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
