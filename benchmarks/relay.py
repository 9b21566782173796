"""Relay benchmark: socketeer relay against HAProxy, socat and a C splice relay, in one run.

    python benchmarks/relay.py [--part throughput|cost|idle|all] [--seconds S]
                               [--rounds N] [--pairs 1,100] [--idle 1,100,1000,8000]
                               [--relays NAME,NAME,...]

Three parts, printed as Markdown tables:

- **throughput**: bulk transfer through each relay to a sink, with 1 and 100
  pairs at once, driven two ways: the C client (``loadgen send``: 256 KiB
  writes on N connections to ``echo_epoll discard``) and ``iperf3`` (an
  ``iperf3 -s -1`` server behind the relay, ``iperf3 -c -P N``; its control
  connection goes through the relay too). Ratios to the C splice relay (the
  ceiling of any relay here, ``splice_relay.c``) and to HAProxy.
- **cost**: the relay's CPU-seconds per GB moved in those same runs
  (utime + stime from /proc, summed over the relay and its children).
- **idle**: N idle pairs opened all at once through the relay to an echo
  server (``loadgen hold``: every connection echoes one byte, so each pair is
  set up end to end); the relay's RSS, PSS and descriptors, and the set-up
  time of all N. Per pair: (value at N - value at 1) / (N - 1).

"direct" is the client straight to the sink. socketeer runs one worker (one
core) and HAProxy one thread (``nbthread 1``), so both are one server core.
Medians of N interleaved rounds. The machine is shared and noisy: compare
ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    background,
    build,
    compile_c,
    loadgen,
    python_env,
    reserve_port,
    table,
)
from proctree import cpu_seconds, descriptors, pss_bytes, rss_bytes

CEILING = "C splice relay"
HAPROXY = "HAProxy"
SOCAT = "socat -b 131072"
ASYNC = "socketeer async"
THROUGHPUT_RELAYS = [
    "direct",
    CEILING,
    ASYNC,
    "socketeer thread",
    "socketeer fork",
    SOCAT,
    HAPROXY,
]
# Also selectable with --relays (the earlier table's rows).
EXTRA_RELAYS = ["socketeer async --no-splice", "socat", "ncat -c ncat"]
IDLE_RELAYS = [ASYNC, HAPROXY, "socketeer thread", SOCAT]
# Relays that make a process (or a thread) per pair: measured at fewer pairs.
IDLE_LIMIT = {"socketeer thread": 1000, SOCAT: 1000, "socat": 1000, "socketeer fork": 1000}
ONE_PAIR_ONLY = {"socketeer fork"}
DRIVERS = ["loadgen", "iperf3"]
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
CONNECT_TIMEOUT = 60.0

Bulk = dict[tuple[str, str, int], float]  # (relay, driver, pairs) -> value
Idle = dict[tuple[str, int], dict[str, float]]  # (relay, pairs) -> figures


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by every child)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is not installed (apt-get install {tool})")
    return path


def listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:port (read from /proc: a probe
    connection would go through the relay and end an ``iperf3 -s -1`` test)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":
            return True
    return False


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_quiet(pid: int, timeout: float = 5.0) -> None:
    """Until the process tree stops using CPU (imports done)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


def haproxy_config(directory: Path, port: int, upstream: int, maxconn: int) -> Path:
    # Each pair takes 2 descriptors, each spare pipe 2: keep the sum under the
    # descriptor limit or HAProxy refuses to start.
    maxpipes = 512
    cfg = directory / "haproxy.cfg"
    cfg.write_text(
        f"""global
    maxconn {maxconn}
    maxpipes {maxpipes}
    nbthread 1

defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-auto

frontend relay
    bind 127.0.0.1:{port}
    default_backend sink

backend sink
    server sink 127.0.0.1:{upstream}
"""
    )
    return cfg


@contextlib.contextmanager
def relay(name: str, upstream: int, splice_bin: Path, tmp: Path) -> Iterator[tuple[int, int]]:
    """Start relay ``name`` to ``upstream``; yields (pid or 0, port) once it is ready."""
    if name == "direct":
        yield 0, upstream
        return
    listener: socket.socket | None = None
    pass_fds: tuple[int, ...] = ()
    port = 0
    if name == CEILING:
        argv = [str(splice_bin), str(upstream)]
    elif name.startswith("socketeer"):
        # The harness binds (port 0, deep backlog) and hands the socket over.
        listener = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
        port = listener.getsockname()[1]
        pass_fds = (listener.fileno(),)
        model = name.split()[1]
        argv = [sys.executable, "-m", "socketeer", "relay", "-q", "--model", model]
        if "--no-splice" in name:
            argv.append("--no-splice")
        argv += [f"fd:{listener.fileno()}", f"tcp://127.0.0.1:{upstream}"]
    elif name.startswith("socat"):
        port = reserve_port()  # no -d -d: per-connection notices would fill the pipe
        extra = ["-b", "131072"] if "-b" in name else []
        argv = [
            need("socat"),
            *extra,
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog={BACKLOG}",
            f"TCP:127.0.0.1:{upstream},nodelay",
        ]
    elif name == HAPROXY:
        port = reserve_port()
        cfg = haproxy_config(tmp, port, upstream, maxconn=8200)
        argv = [need("haproxy"), "-f", str(cfg), "-db"]
    elif name.startswith("ncat"):
        ncat = need("ncat")
        port = reserve_port()
        argv = [ncat, "-l", "-k", "127.0.0.1", str(port), "-c", f"{ncat} 127.0.0.1 {upstream}"]
    else:
        raise SystemExit(f"unknown relay {name!r}")
    with background(argv, pass_fds) as proc:
        if listener is not None:
            listener.close()
        elif name == CEILING:
            assert proc.stderr is not None
            port = int(proc.stderr.readline().decode().rsplit(":", 1)[1])
        wait_listening(port)
        wait_quiet(proc.pid)
        yield proc.pid, port


@contextlib.contextmanager
def discard_sink(echo_bin: Path, mode: str = "discard") -> Iterator[int]:
    with background([str(echo_bin), mode] if mode else [str(echo_bin)]) as proc:
        assert proc.stderr is not None
        yield int(proc.stderr.readline().decode().rsplit(":", 1)[1])


@contextlib.contextmanager
def iperf3_server(tmp: Path) -> Iterator[int]:
    """``iperf3 -s -1`` on a free loopback port, logging to a file (not a pipe)."""
    port = reserve_port()
    log = tmp / f"iperf3-{port}.log"
    argv = [
        need("iperf3"),
        "-s",
        "-B",
        "127.0.0.1",
        "-p",
        str(port),
        "-1",
        "-i",
        "0",
        "--forceflush",
    ]
    argv += ["--logfile", str(log)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while "listening" not in (log.read_text() if log.exists() else ""):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        log.unlink(missing_ok=True)


def iperf3_client(port: int, pairs: int, seconds: float) -> tuple[float, float]:
    """(bytes/s, bytes) received by the iperf3 server through the relay."""
    argv = [need("iperf3"), "-c", "127.0.0.1", "-B", "127.0.0.1", "-p", str(port)]
    whole = max(1, round(seconds))  # iperf3 takes whole seconds (-t 0 runs forever)
    argv += ["-t", str(whole), "-P", str(pairs), "-J"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=whole + 20, check=False)
    report = json.loads(out.stdout or "{}")
    if "error" in report or out.returncode != 0:
        raise RuntimeError(f"iperf3 -P {pairs}: {report.get('error', out.stderr.strip())}")
    received = report["end"]["sum_received"]
    return received["bits_per_second"] / 8, float(received["bytes"])


def bulk_cell(
    name: str, driver: str, pairs: int, *, seconds: float, bins: dict[str, Path], tmp: Path
) -> tuple[float, float, float]:
    """One run: (bytes/s, bytes moved, relay CPU-seconds)."""
    sink = iperf3_server(tmp) if driver == "iperf3" else discard_sink(bins["echo"])
    with sink as sink_port, relay(name, sink_port, bins["splice"], tmp) as (pid, port):
        before = cpu_seconds(pid) if pid else 0.0
        if driver == "iperf3":
            rate, moved = iperf3_client(port, pairs, seconds)
        else:
            rate, moved = loadgen(bins["loadgen"], "send", "127.0.0.1", port, seconds, pairs)
        time.sleep(0.2)  # let the relay drain and reap what it forked
        cpu = cpu_seconds(pid) - before if pid else 0.0
    return rate, moved, cpu


def idle_cell(name: str, count: int, bins: dict[str, Path], tmp: Path) -> dict[str, float]:
    """``count`` idle pairs through relay ``name`` to an echo server."""
    with (
        discard_sink(bins["echo"], mode="") as echo_port,
        relay(name, echo_port, bins["splice"], tmp) as (pid, port),
    ):
        holder = subprocess.Popen(
            [
                str(bins["loadgen"]),
                "hold",
                "127.0.0.1",
                str(port),
                str(count),
                str(CONNECT_TIMEOUT),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline().split()
            if not line or line[0] != "ready":
                raise RuntimeError(f"{name}: {count} idle pairs were not set up")
            time.sleep(0.5)
            result = {
                "setup": float(line[1]),
                "rss": rss_bytes(pid),
                "pss": pss_bytes(pid),
                "fds": descriptors(pid),
            }
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(60)
            if holder.stdout is not None:
                holder.stdout.close()
    return result


def gbs(rate: float) -> str:
    return f"{rate / 1e9:.2f} GB/s"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "—"


def run_bulk(
    args: argparse.Namespace, relays: list[str], bins: dict[str, Path], tmp: Path
) -> tuple[Bulk, Bulk]:
    cells = [
        (name, driver, pairs)
        for name in relays
        for driver in DRIVERS
        for pairs in args.pairs
        if not (name in ONE_PAIR_ONLY and pairs > 1)
        and not (driver == "iperf3" and name.startswith("ncat"))  # iperf3 stalls behind it
    ]
    samples: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {c: [] for c in cells}
    for round_no in range(args.rounds):
        for cell in cells:
            try:
                samples[cell].append(bulk_cell(*cell, seconds=args.seconds, bins=bins, tmp=tmp))
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                print(f"  {cell}: {exc}", file=sys.stderr)
        print(f"  bulk round {round_no + 1} done", file=sys.stderr)
    rate = {c: statistics.median(s[0] for s in v) for c, v in samples.items() if v}
    cost = {
        c: statistics.median(s[2] / (s[1] / 1e9) for s in v)
        for c, v in samples.items()
        if v and v[0][1] and c[0] != "direct"
    }
    return rate, cost


def throughput_tables(args: argparse.Namespace, relays: list[str], rate: Bulk) -> str:
    out = []
    for driver in DRIVERS:
        header = ["relay"]
        for pairs in args.pairs:
            header += [f"{pairs} pair{'s' * (pairs > 1)}", "vs C splice", "vs HAProxy"]
        rows = []
        for name in relays:
            row = [name]
            for pairs in args.pairs:
                r = rate.get((name, driver, pairs))
                row += [
                    gbs(r) if r else "—",
                    ratio(r, rate.get((CEILING, driver, pairs))),
                    ratio(r, rate.get((HAPROXY, driver, pairs))),
                ]
            rows.append(row)
        what = (
            "C client, 256 KiB writes on N connections, to a C sink"
            if driver == "loadgen"
            else "iperf3 -c -P N to iperf3 -s, control connection through the relay too"
        )
        out.append(table(f"Bulk throughput through the relay: {what}", header, rows))
    return "\n".join(out)


def cost_table(args: argparse.Namespace, relays: list[str], cost: Bulk) -> str:
    header = ["relay"] + [
        f"{driver}, {pairs} pair{'s' * (pairs > 1)}" for driver in DRIVERS for pairs in args.pairs
    ]
    cols = [(driver, pairs) for driver in DRIVERS for pairs in args.pairs]
    rows = []
    for name in relays:
        if name == "direct":
            continue
        rows.append(
            [name]
            + [
                f"{cost[(name, c[0], c[1])]:.2f}" if (name, c[0], c[1]) in cost else "—"
                for c in cols
            ]
        )
    for other in (HAPROXY, SOCAT):
        rows.append(
            [f"*{ASYNC} / {other}*"]
            + [ratio(cost.get((ASYNC, c[0], c[1])), cost.get((other, c[0], c[1]))) for c in cols]
        )
    return table("Relay CPU-seconds per GB moved (same runs; lower is better)", header, rows)


def run_idle(args: argparse.Namespace, bins: dict[str, Path], tmp: Path) -> Idle:
    cells = [(name, n) for name in IDLE_RELAYS for n in args.idle if n <= IDLE_LIMIT.get(name, n)]
    samples: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in cells}
    for round_no in range(args.rounds):
        for name, n in cells:
            try:
                samples[(name, n)].append(idle_cell(name, n, bins, tmp))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"  idle {name} {n}: {exc}", file=sys.stderr)
        print(f"  idle round {round_no + 1} done", file=sys.stderr)
    return {
        c: {key: statistics.median(s[key] for s in v) for key in v[0]}
        for c, v in samples.items()
        if v
    }


def per_pair(idle: Idle, name: str, key: str) -> tuple[float, int] | None:
    ns = sorted(n for (r, n) in idle if r == name and n > 1)
    if (name, 1) not in idle or not ns:
        return None
    n = ns[-1]
    return (idle[(name, n)][key] - idle[(name, 1)][key]) / (n - 1), n


def idle_tables(args: argparse.Namespace, idle: Idle) -> str:
    header = ["relay"] + [f"{n:,} pair{'s' * (n > 1)}" for n in args.idle]
    rows = []
    for name in IDLE_RELAYS:
        row = [name]
        for n in args.idle:
            m = idle.get((name, n))
            row.append(
                f"{m['setup'] * 1000:,.0f} ms, {m['rss'] / 2**20:.1f} / "
                f"{m['pss'] / 2**20:.1f} MiB, {m['fds']:,.0f} fds"
                if m
                else "—"
            )
        rows.append(row)
    first = table(
        "Idle pairs through the relay: set-up time of all N, relay RSS / PSS, relay descriptors",
        header,
        rows,
    )
    biggest = max(args.idle)
    rows = []
    for name in IDLE_RELAYS:
        rss, pss, fds = (per_pair(idle, name, k) for k in ("rss", "pss", "fds"))
        if rss is None or pss is None or fds is None:
            continue
        n = rss[1]
        setup = idle[(name, n)]["setup"]
        hap = idle.get((HAPROXY, n))
        rows.append(
            [
                name,
                f"{n:,}",
                f"{rss[0] / 1000:.2f} KB",
                f"{pss[0] / 1000:.2f} KB",
                f"{fds[0]:.2f}",
                f"{setup * 1000:,.0f} ms",
                ratio(setup, hap["setup"]) if hap else "—",
            ]
        )
    second = table(
        f"Per idle pair: (value at N - value at 1) / (N - 1), N up to {biggest:,}",
        [
            "relay",
            "N",
            "RSS per pair",
            "PSS per pair",
            "fds per pair",
            "set-up of N",
            "set-up vs HAProxy",
        ],
        rows,
    )
    return first + "\n" + second


def goals(args: argparse.Namespace, rate: Bulk, cost: Bulk, idle: Idle) -> str:
    rows = []

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "not met")

    for driver in DRIVERS if rate else ():
        for pairs in args.pairs:
            a = rate.get((ASYNC, driver, pairs))
            c = rate.get((CEILING, driver, pairs))
            h = rate.get((HAPROXY, driver, pairs))
            rows.append(
                [
                    f"throughput ≥ 0.95x C splice relay ({driver}, {pairs})",
                    ratio(a, c),
                    verdict(a / c >= 0.95 if a and c else None),
                ]
            )
            rows.append(
                [
                    f"throughput ≥ 1.0x HAProxy ({driver}, {pairs})",
                    ratio(a, h),
                    verdict(a / h >= 1.0 if a and h else None),
                ]
            )
    for driver in DRIVERS if cost else ():
        for pairs in args.pairs:
            a = cost.get((ASYNC, driver, pairs))
            h = cost.get((HAPROXY, driver, pairs))
            s = cost.get((SOCAT, driver, pairs))
            rows.append(
                [
                    f"CPU/GB ≤ HAProxy's ({driver}, {pairs})",
                    ratio(a, h),
                    verdict(a <= h if a and h else None),
                ]
            )
            rows.append(
                [
                    f"CPU/GB ≤ 0.5x socat's ({driver}, {pairs})",
                    ratio(a, s),
                    verdict(a <= 0.5 * s if a and s else None),
                ]
            )
    if idle:
        rss = per_pair(idle, ASYNC, "rss")
        fds = per_pair(idle, ASYNC, "fds")
        if rss:
            rows.append(
                ["≤ 3 KB RSS per idle pair", f"{rss[0] / 1000:.2f} KB", verdict(rss[0] <= 3000)]
            )
        if fds:
            rows.append(["≤ 2 descriptors per idle pair", f"{fds[0]:.2f}", verdict(fds[0] <= 2.0)])
        n = max(args.idle)
        mine, theirs = idle.get((ASYNC, n)), idle.get((HAPROXY, n))
        ours = mine["setup"] if mine else None
        hap = theirs["setup"] if theirs else None
        rows.append(
            [
                f"set-up of {n:,} pairs no slower than HAProxy's",
                ratio(ours, hap),
                verdict(ours <= hap if ours and hap else None),
            ]
        )
    return table("Goals (socketeer async)", ["goal", "measured", "verdict"], rows)


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("throughput", "cost", "idle", "all"), default="all")
    parser.add_argument("--seconds", type=float, default=2.0, help="per bulk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--pairs", type=numbers, default=[1, 100], help="concurrent bulk pairs")
    parser.add_argument(
        "--idle", type=numbers, default=[1, 100, 1000, 8000], help="idle pair counts"
    )
    parser.add_argument(
        "--relays",
        help="comma-separated bulk relays (default: "
        + ", ".join(THROUGHPUT_RELAYS)
        + "; also: "
        + ", ".join(EXTRA_RELAYS)
        + ")",
    )
    args = parser.parse_args()
    # Stopped from outside (timeout, kill): still stop every server started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    relays = THROUGHPUT_RELAYS
    if args.relays:
        relays = [r.strip() for r in args.relays.split(",")]
    limit = raise_nofile()
    python_env()  # the socketeer relays run from src/, as in run.py
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        loadgen_bin, echo_bin = build(tmp)
        bins = {
            "loadgen": loadgen_bin,
            "echo": echo_bin,
            "splice": compile_c("splice_relay", tmp, "-pthread"),
        }
        print(
            f"{args.rounds} rounds, {args.seconds:g} s per bulk run, medians; "
            f"{os.cpu_count()} CPUs; descriptor limit {limit:,}\n"
        )
        rate: Bulk = {}
        cost: Bulk = {}
        idle: Idle = {}
        if args.part in ("throughput", "cost", "all"):
            rate, cost = run_bulk(args, relays, bins, tmp)
            if args.part in ("throughput", "all"):
                print(throughput_tables(args, relays, rate))
            if args.part in ("cost", "all"):
                print(cost_table(args, relays, cost))
            if args.part == "cost":
                rate = {}
        if args.part in ("idle", "all"):
            idle = run_idle(args, bins, tmp)
            print(idle_tables(args, idle))
        print(goals(args, rate, cost, idle))
    print(f"(run took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
