"""Relay throughput: socketeer relay against socat and ncat, and the direct connection.

    python benchmarks/relay.py [--seconds S] [--rounds N]

A C client (``loadgen send``) writes 256 KiB blocks for S seconds through each
relay to a C sink that reads and drops (``echo_epoll discard``), both with
TCP_NODELAY; the relays run with TCP_NODELAY on both sides too. "direct" is
the client straight to the sink: the limit. "C splice relay" is the ceiling of
any relay on this machine: a minimal C program that does only what
socketeer's splice path does (``splice_relay.c``). Medians of N interleaved
rounds, as ratios, printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from run import announced_port, background, build, compile_c, loadgen, reserve_port, table

RELAYS = [
    "direct",
    "C splice relay (ceiling)",
    "socketeer relay (splice)",
    "socketeer relay (buffered)",
    "socat",
    "socat -b 131072",
    "ncat -c ncat",
]


@contextlib.contextmanager
def sink(echo_bin: Path) -> Iterator[int]:
    with background([str(echo_bin), "discard"]) as proc:
        yield announced_port(proc, "sink")


@contextlib.contextmanager
def relay(name: str, sink_port: int, splice_bin: Path) -> Iterator[int]:
    """Start relay ``name`` to the sink; yields the port clients connect to."""
    if name == "direct":
        yield sink_port
        return
    if name.startswith("C splice"):
        with background([str(splice_bin), str(sink_port)]) as proc:
            yield announced_port(proc, name)
        return
    if name.startswith("socketeer"):
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        argv = [
            sys.executable,
            "-m",
            "socketeer",
            "relay",
            "-q",
            f"fd:{listener.fileno()}",
            f"tcp://127.0.0.1:{sink_port}",
        ]
        if "buffered" in name:
            argv.insert(4, "--no-splice")
        with background(argv, pass_fds=(listener.fileno(),)):
            listener.close()
            time.sleep(0.5)
            yield port
        return
    if name.startswith("socat"):
        socat = shutil.which("socat")
        if socat is None:
            raise SystemExit("socat is not installed (apt-get install socat)")
        extra = ["-b", "131072"] if "-b" in name else []
        argv = [
            socat,
            "-d",
            "-d",
            *extra,
            "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork,nodelay",
            f"TCP:127.0.0.1:{sink_port},nodelay",
        ]
        with background(argv) as proc:
            assert proc.stderr is not None
            line = proc.stderr.readline().decode()
            match = re.search(r":(\d+)\s*$", line)
            if match is None:
                raise RuntimeError(f"socat did not listen: {line}")
            yield int(match.group(1))
        return
    ncat = shutil.which("ncat")
    if ncat is None:
        raise SystemExit("ncat is not installed (apt-get install ncat)")
    port = reserve_port()  # ncat cannot bind port 0 and report it
    argv = [ncat, "-l", "-k", "127.0.0.1", str(port), "-c", f"{ncat} 127.0.0.1 {sink_port}"]
    with background(argv):
        time.sleep(0.5)
        yield port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in RELAYS}
    with tempfile.TemporaryDirectory() as tmp:
        loadgen_bin, echo_bin = build(Path(tmp))
        splice_bin = compile_c("splice_relay", Path(tmp), "-pthread")
        for _ in range(args.rounds):
            for name in RELAYS:
                with sink(echo_bin) as sink_port, relay(name, sink_port, splice_bin) as port:
                    rates[name].append(
                        loadgen(loadgen_bin, "send", "127.0.0.1", port, args.seconds)[0]
                    )
    median = {name: statistics.median(values) for name, values in rates.items()}
    direct, socat = median["direct"], median["socat"]
    ceiling = median["C splice relay (ceiling)"]
    rows = [
        [
            name,
            f"{median[name] / 1e9:.2f} GB/s",
            f"{median[name] / direct:.2f}x",
            f"{median[name] / socat:.2f}x",
            f"{median[name] / ceiling:.2f}x",
        ]
        for name in RELAYS
    ]
    print(f"{args.rounds} rounds of {args.seconds:g} s, medians; {os.cpu_count()} CPUs\n")
    print(
        table(
            "Bulk throughput through a relay (256 KiB writes, TCP_NODELAY)",
            ["path", "throughput", "vs direct", "vs socat", "vs C splice relay"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
