"""Echo server benchmark: socketeer's models against the peers, side by side, in one run.

    python benchmarks/run.py [--seconds S] [--rounds N] [--only rr|connect|memory|udp]

Builds a C load generator (and a C epoll echo server as the reference) with
gcc, starts each server on 127.0.0.1, and measures

- round trips per second of 64-byte messages with 1, 16 and 128 connections,
- connections per second (connect, 1-byte echo, close; 16 at a time),
- server memory per idle connection with 10,000 connections open (async servers),
- UDP: round trips per second of 64-byte datagrams with 1, 16 and 128 senders
  against the datagram echo servers, and through the datagram relays
  (``benchmarks/udp.py``, which also runs alone),

and prints Markdown tables with ratios to the hand-written uvloop
BufferedProtocol server. The machine is shared and noisy: compare ratios
within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import HERE, announced_port, background, build, loadgen, table

REFERENCE = "uvloop BufferedProtocol"


@contextlib.contextmanager
def running(name: str, echo_binary: Path) -> Iterator[tuple[int, int]]:
    """Start server ``name``; yields (pid, port) and stops it afterwards."""
    listener: socket.socket | None = None
    pass_fds: tuple[int, ...] = ()
    if name.startswith("socketeer"):
        # The harness binds (port 0, deep backlog) and hands the socket over
        # as fd:N, so the server can run with -q (no per-connection log).
        model = name.rsplit(maxsplit=1)[-1]
        listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        pass_fds = (listener.fileno(),)
        argv = [
            sys.executable,
            "-m",
            "socketeer",
            "serve",
            "-q",
            "--model",
            model,
            f"fd:{listener.fileno()}",
            "echo",
        ]
    elif name == "C epoll":
        argv = [str(echo_binary)]
    else:
        peer = {
            "socketserver Threading": "socketserver-thread",
            "socketserver Forking": "socketserver-fork",
            "asyncio Protocol": "asyncio-protocol",
            REFERENCE: "uvloop-buffered",
        }[name]
        argv = [sys.executable, str(HERE / "peers.py"), peer]
    with background(argv, pass_fds) as proc:
        if listener is not None:
            port = listener.getsockname()[1]
            listener.close()
        else:
            port = announced_port(proc, name)
        time.sleep(0.3)  # let imports settle before measuring memory or speed
        yield proc.pid, port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_memory(binary: Path, pid: int, port: int, count: int) -> float:
    """Bytes of server RSS per idle connection, ``count`` connections open."""
    before = rss_kib(pid)
    holder = subprocess.Popen(
        [str(binary), "idle", "127.0.0.1", str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError("idle connections were not set up")
        time.sleep(0.5)
        after = rss_kib(pid)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(60)
        if holder.stdout is not None:
            holder.stdout.close()
    return (after - before) * 1024 / count


ALL_SERVERS = [
    "socketeer async",
    "socketeer thread",
    "socketeer fork",
    "socketserver Threading",
    "socketserver Forking",
    "asyncio Protocol",
    REFERENCE,
    "C epoll",
]
CONNS = [1, 16, 128]


def measure_rr(loadgen_bin: Path, echo_bin: Path, name: str, seconds: float) -> list[float]:
    with running(name, echo_bin) as (_, port):
        return [loadgen(loadgen_bin, "rr", "127.0.0.1", port, n, 64, seconds)[0] for n in CONNS]


def measure_connect(loadgen_bin: Path, echo_bin: Path, name: str, seconds: float) -> float:
    with running(name, echo_bin) as (_, port):
        return loadgen(loadgen_bin, "connect", "127.0.0.1", port, 16, seconds)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections to hold")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every server this many times, interleaved; report medians",
    )
    parser.add_argument("--only", choices=("rr", "connect", "memory", "udp"), help="one table only")
    parser.add_argument("--servers", help="comma-separated subset of the servers")
    args = parser.parse_args()
    servers = ALL_SERVERS
    if args.servers:
        servers = [s for s in ALL_SERVERS if s in args.servers.split(",")]
        if REFERENCE not in servers:
            servers.append(REFERENCE)
    with tempfile.TemporaryDirectory() as tmp:
        loadgen_bin, echo_bin = build(Path(tmp))
        print(
            f"{args.rounds} rounds of {args.seconds:g} s, medians; Python "
            f"{sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
        )
        if args.only in (None, "rr"):
            samples: dict[str, list[list[float]]] = {name: [] for name in servers}
            for round_no in range(args.rounds):
                for name in servers:
                    samples[name].append(measure_rr(loadgen_bin, echo_bin, name, args.seconds))
                print(f"  rr round {round_no + 1} done", file=sys.stderr)
            rr = {
                name: [statistics.median(col) for col in zip(*runs, strict=True)]
                for name, runs in samples.items()
            }
            ref = rr[REFERENCE]
            rows = [
                [name]
                + [
                    f"{rate:,.0f} ({rate / base:.2f}x)"
                    for rate, base in zip(rr[name], ref, strict=True)
                ]
                for name in servers
            ]
            print(
                table(
                    "Round trips per second, 64-byte messages (ratio to the uvloop prototype)",
                    ["server"] + [f"{n} conn" for n in CONNS],
                    rows,
                )
            )
        if args.only in (None, "connect"):
            connect_servers = [s for s in servers if "Forking" not in s and not s.endswith("fork")]
            rates: dict[str, list[float]] = {name: [] for name in connect_servers}
            for _ in range(args.rounds):
                for name in connect_servers:
                    rates[name].append(measure_connect(loadgen_bin, echo_bin, name, args.seconds))
            median = {name: statistics.median(values) for name, values in rates.items()}
            rows = [
                [name, f"{median[name]:,.0f}", f"{median[name] / median[REFERENCE]:.2f}x"]
                for name in connect_servers
            ]
            print(
                table(
                    "Connections per second (connect, 1-byte echo, close; 16 at a time)",
                    ["server", "conn/s", "ratio"],
                    rows,
                )
            )
        if args.only in (None, "memory"):
            rows = []
            for name in ("socketeer async", REFERENCE, "asyncio Protocol"):
                with running(name, echo_bin) as (pid, port):
                    per_conn = idle_memory(loadgen_bin, pid, port, args.idle)
                rows.append([name, f"{per_conn:,.0f} B"])
            print(
                table(
                    f"Server memory per idle connection ({args.idle:,} open)",
                    ["server", "RSS per connection"],
                    rows,
                )
            )
    if args.only in (None, "udp"):
        import udp  # benchmarks/udp.py: the datagram tables, pinned as it documents

        print(udp.report("all", seconds=args.seconds, rounds=args.rounds, senders=udp.SENDERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
