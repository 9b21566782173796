"""UDP benchmark: datagram echo servers and datagram relays, side by side, in one run.

    python benchmarks/udp.py [--part echo|relay|all] [--seconds S] [--rounds N] [--senders 1,16,128]

Closed-loop round trips of 64-byte datagrams from the C load generator
(``loadgen udp``): S sender sockets, each sends one datagram and waits for its
reply before sending the next (a datagram unanswered for 200 ms is resent and
counted as lost). Before timing, every sender has one datagram answered (so
socat has forked its child per sender), then 0.5 s is not counted.

- echo: socketeer's datagram server (``socketeer serve -q --model M fd:N echo``
  on a UDP socket the harness bound), the plain blocking ``recvfrom``/``sendto``
  loop and a uvloop ``DatagramProtocol`` (``udp_peers.py``), and a C epoll UDP
  echo server (``udp_echo_epoll.c``) as the ceiling. The load generator runs on
  CPU 0, the server on CPU 1.
- relay: client -> relay -> the C UDP echo server, through ``socketeer relay -q``,
  through ``socat UDP4-LISTEN:…,fork`` and direct (no relay). The relay runs on
  CPU 1; the load generator and the C echo server share CPU 0.

Every server is measured once per round, rounds interleaved; cells are medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import HERE, announced_port, background, compile_c, loadgen, table

SENDERS = [1, 16, 128]
RELAY_SENDERS = [1, 16]  # socat forks a child per sender: 128 take longer to start than to measure
ECHO_SERVERS = [
    "socketeer thread",
    "socketeer async",
    "socketeer fork",
    "Python blocking loop",
    "uvloop DatagramProtocol",
    "C epoll",
]
RELAYS = ["socketeer relay", "socat", "direct"]


def pinning() -> bool:
    """Pin with taskset when there are two CPUs to pin to."""
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def on_cpu(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if pinning() else argv


def udp_port() -> int:
    """A free loopback UDP port, for socat (which cannot report a port-0 bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bound_udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


@contextlib.contextmanager
def handed_over(argv_for_fd: list[str], cpu: int) -> Iterator[tuple[int, int]]:
    """A socketeer process given a bound UDP socket as fd:N (so it can run with -q)."""
    sock = bound_udp()
    argv = [arg.replace("{fd}", str(sock.fileno())) for arg in argv_for_fd]
    with background(on_cpu(cpu, argv), (sock.fileno(),)) as proc:
        port = sock.getsockname()[1]
        sock.close()
        time.sleep(0.5)  # imports: the socket queues datagrams meanwhile anyway
        yield proc.pid, port


@contextlib.contextmanager
def announced(argv: list[str], cpu: int, name: str) -> Iterator[tuple[int, int]]:
    with background(on_cpu(cpu, argv)) as proc:
        port = announced_port(proc, name)
        time.sleep(0.2)
        yield proc.pid, port


def echo_server(
    name: str, echo_bin: Path, cpu: int = 1
) -> contextlib.AbstractContextManager[tuple[int, int]]:
    if name.startswith("socketeer"):
        model = name.rsplit(maxsplit=1)[-1]
        argv = [
            sys.executable,
            "-m",
            "socketeer",
            "serve",
            "-q",
            "--model",
            model,
            "fd:{fd}",
            "echo",
        ]
        return handed_over(argv, cpu)
    if name == "C epoll":
        return announced([str(echo_bin)], cpu, name)
    peer = {"Python blocking loop": "blocking", "uvloop DatagramProtocol": "uvloop"}[name]
    return announced([sys.executable, str(HERE / "udp_peers.py"), peer], cpu, name)


@contextlib.contextmanager
def relay(name: str, echo_port: int) -> Iterator[int]:
    """Relay ``name`` on CPU 1 to the echo server; yields the port to send to."""
    target = f"udp://127.0.0.1:{echo_port}"
    if name == "direct":
        yield echo_port
    elif name == "socketeer relay":
        # The relay cannot take FROM as fd:N (it must see a datagram address),
        # and with -q it does not announce its port: a reserved port, as for socat.
        port = udp_port()
        argv = [sys.executable, "-m", "socketeer", "relay", "-q", f"udp://127.0.0.1:{port}", target]
        with background(on_cpu(1, argv)):
            time.sleep(0.5)  # imports; the load generator's warm-up resends until answered
            yield port
    elif name == "socat":
        port = udp_port()
        argv = [
            "socat",
            f"UDP4-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
            f"UDP4:127.0.0.1:{echo_port}",
        ]
        with background(on_cpu(1, argv)):
            time.sleep(0.3)
            yield port
    else:
        raise ValueError(name)


def round_trips(loadgen_bin: Path, port: int, senders: int, seconds: float) -> tuple[float, int]:
    """Round trips/s and datagrams lost, the load generator on CPU 0."""
    argv: list[object] = [loadgen_bin, "udp", "127.0.0.1", port, senders, 64, seconds]
    if pinning():
        argv = ["-c", "0", *argv]
    binary = Path(shutil.which("taskset") or "taskset") if pinning() else loadgen_bin
    rate, _p50, _p99, lost = loadgen(
        binary, *(argv if pinning() else argv[1:]), timeout=seconds + 30
    )
    return rate, int(lost)


def ratio(rate: float, base: float) -> str:
    return f"{rate / base:.2f}x" if base else "-"


def echo_tables(
    loadgen_bin: Path,
    echo_bin: Path,
    *,
    servers: list[str],
    senders: list[int],
    seconds: float,
    rounds: int,
) -> str:
    def measure_all(name: str) -> list[tuple[float, int]]:
        with echo_server(name, echo_bin) as (_, port):
            return [round_trips(loadgen_bin, port, n, seconds) for n in senders]

    samples: dict[str, list[list[float]]] = {name: [] for name in servers}
    lost = {name: 0 for name in servers}
    for round_no in range(rounds):
        for name in servers:
            results = measure_all(name)
            samples[name].append([rate for rate, _ in results])
            lost[name] += sum(dropped for _, dropped in results)
        print(f"  udp echo round {round_no + 1} done", file=sys.stderr)
    rr = {
        name: [statistics.median(c) for c in zip(*runs, strict=True)]
        for name, runs in samples.items()
    }
    c_ref = rr.get("C epoll")
    py_ref = rr.get("Python blocking loop")
    rows = []
    for name in servers:
        cells = []
        for i, rate in enumerate(rr[name]):
            ratios = []
            if c_ref:
                ratios.append(f"{ratio(rate, c_ref[i])} C")
            if py_ref:
                ratios.append(f"{ratio(rate, py_ref[i])} loop")
            cells.append(f"{rate:,.0f} ({', '.join(ratios)})")
        rows.append([name, *cells, f"{lost[name]}"])
    return table(
        "UDP echo: round trips per second, 64-byte datagrams "
        "(ratio to the C server, to the Python loop)",
        ["server", *[f"{n} sender{'s' if n > 1 else ''}" for n in senders], "lost"],
        rows,
    )


def relay_tables(
    loadgen_bin: Path,
    echo_bin: Path,
    *,
    relays: list[str],
    senders: list[int],
    seconds: float,
    rounds: int,
) -> str:
    samples: dict[str, list[list[float]]] = {name: [] for name in relays}
    lost = {name: 0 for name in relays}
    for round_no in range(rounds):
        for name in relays:
            results = []
            for n in senders:
                # a fresh relay (and echo server) per cell: socat's children and the
                # relay's sessions from the previous sender count do not linger
                with (
                    echo_server("C epoll", echo_bin, cpu=0) as (_, echo_port),
                    relay(name, echo_port) as port,
                ):
                    results.append(round_trips(loadgen_bin, port, n, seconds))
            samples[name].append([rate for rate, _ in results])
            lost[name] += sum(dropped for _, dropped in results)
        print(f"  udp relay round {round_no + 1} done", file=sys.stderr)
    rr = {
        name: [statistics.median(c) for c in zip(*runs, strict=True)]
        for name, runs in samples.items()
    }
    socat = rr.get("socat")
    direct = rr.get("direct")
    rows = []
    for name in relays:
        cells = []
        for i, rate in enumerate(rr[name]):
            ratios = []
            if socat:
                ratios.append(f"{ratio(rate, socat[i])} socat")
            if direct:
                ratios.append(f"{ratio(rate, direct[i])} direct")
            cells.append(f"{rate:,.0f} ({', '.join(ratios)})")
        rows.append([name, *cells, f"{lost[name]}"])
    return table(
        "UDP relay to the C echo server: round trips per second, 64-byte datagrams "
        "(ratio to socat, to direct)",
        ["relay", *[f"{n} sender{'s' if n > 1 else ''}" for n in senders], "lost"],
        rows,
    )


def report(
    part: str,
    *,
    seconds: float,
    rounds: int,
    senders: list[int],
    servers: list[str] | None = None,
) -> str:
    out = [
        "UDP, pinned with taskset: load generator on CPU 0, server or relay on CPU 1 "
        "(relay runs: the C echo server on CPU 0)\n"
        if pinning()
        else "UDP, not pinned (taskset missing or one CPU)\n"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        loadgen_bin = compile_c("loadgen", Path(tmp))
        echo_bin = compile_c("udp_echo_epoll", Path(tmp))
        if part in ("echo", "all"):
            out.append(
                echo_tables(
                    loadgen_bin,
                    echo_bin,
                    servers=servers or ECHO_SERVERS,
                    senders=senders,
                    seconds=seconds,
                    rounds=rounds,
                )
            )
        if part in ("relay", "all"):
            relays = RELAYS if shutil.which("socat") else [r for r in RELAYS if r != "socat"]
            out.append(
                relay_tables(
                    loadgen_bin,
                    echo_bin,
                    relays=relays,
                    senders=[n for n in senders if n in RELAY_SENDERS] or senders,
                    seconds=seconds,
                    rounds=rounds,
                )
            )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("echo", "relay", "all"), default="all")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--senders", default=",".join(map(str, SENDERS)), help="e.g. 1,16")
    parser.add_argument("--servers", help="comma-separated subset of the echo servers")
    args = parser.parse_args()
    senders = [int(n) for n in args.senders.split(",")]
    servers = [s for s in ECHO_SERVERS if s in args.servers.split(",")] if args.servers else None
    print(
        f"{args.rounds} rounds of {args.seconds:g} s, medians; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        report(
            args.part,
            seconds=args.seconds,
            rounds=args.rounds,
            senders=senders,
            servers=servers,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
