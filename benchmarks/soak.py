"""Soak: many short connections, then minutes of mixed load, through socketeer's servers.

    python benchmarks/soak.py [--connections N] [--minutes M] [--targets async,thread,relay]
                              [--interval S] [--json FILE] [--src DIR]

For each target -- ``serve --model async … echo``, ``serve --model thread …
echo`` and ``relay`` (async, to a ``serve --model async`` echo server) -- on
127.0.0.1:

1. **warm-up**: a tenth of the connections (at most 10,000) and a tenth of
   the mixed minutes (10 to 60 s) of the mixed load, so that every code path
   has allocated what it keeps and the high-water marks (thread stacks,
   allocator arenas, buffers at peak concurrency) are reached;
2. **connections**: the rest of N short connections (connect, one 64-byte
   request and its echo, close), 32 in flight, by the C client
   ``soak_client.c``;
3. **mixed** for M minutes, all at once: short connections (8 in flight),
   ``socketeer bench`` round trips on 16 long-lived connections and a bulk
   stream both ways, and clients that misbehave (reset mid-request, half-close
   and wait for the rest of the echo, vanish without reading, connect and say
   nothing, 100 idle connections held for a while);
4. **settle**: the load stops; the server is polled until its descriptors and
   threads are back to their warm figures (at most 30 s).

The server's VmRSS and thread count (``/proc/PID/status``), its open
descriptors (``/proc/PID/fd``), its child processes and zombies are sampled at
the start, after the warm-up, every ``--interval`` seconds (default 60), at each
phase's end and at the end. Goal: RSS at the end within 1 % of the warm figure,
the same descriptors and threads as after the warm-up, no zombie, no failed
request, and not one traceback on the server's stderr. Prints a table, writes
the whole run (every sample) as JSON, and exits 1 when a goal is missed.

Every load is bounded in count and time, and loopback only. The machine is
shared: the rates are what it gave, not a limit of the servers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import ROOT, compile_c, table
from proctree import descendants

TARGETS = ("async", "thread", "relay")
SIZE = 64
CONCURRENCY = 32  # short connections in flight in the connections phase
MIXED_CONCURRENCY = 8
REQUEST_TIMEOUT = 5.0  # one short connection, connect to echo
RSS_GOAL = 1.0  # per cent of the warm figure
SETTLE = 30.0


# -- what is sampled ------------------------------------------------------------------------


@dataclass
class Sample:
    """One look at the server process (and the processes below it)."""

    elapsed: float
    phase: str
    rss_kib: int
    threads: int
    fds: int
    children: int
    zombies: int


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def sample(pid: int, phase: str, began: float) -> Sample:
    status = _status(pid)
    below = [p for p in descendants(pid) if p != pid]
    zombies = 0
    for child in below:
        with contextlib.suppress(OSError):
            zombies += _status(child)["State"].startswith("Z")
    return Sample(
        elapsed=round(time.monotonic() - began, 2),
        phase=phase,
        rss_kib=int(status["VmRSS"].split()[0]),
        threads=int(status["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        children=len(below),
        zombies=zombies,
    )


class Sampler:
    """Samples every ``interval`` seconds in a thread, and on demand between phases."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.began = time.monotonic()
        self.samples: list[Sample] = []
        self.phase = "start"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def take(self, phase: str | None = None) -> Sample:
        with self._lock:
            taken = sample(self.pid, phase or self.phase, self.began)
            self.samples.append(taken)
            return taken

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()

    def __enter__(self) -> Sampler:
        self.take("start")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the servers ------------------------------------------------------------------------------


def socketeer_env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextlib.contextmanager
def socketeer(
    args: list[str], src: Path, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``socketeer ARGS fd:N …`` on a socket bound here (port 0, deep backlog); yields (proc, port).

    Handing over a bound socket lets the server run with ``-q`` (no line per
    connection) and be connected to at once. Its stderr goes to ``log``.
    """
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    argv = [sys.executable, "-m", "socketeer"]
    argv += [a.replace("{fd}", f"fd:{listener.fileno()}") for a in args]
    with log.open("ab") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            pass_fds=(listener.fileno(),),
            env=socketeer_env(src),
            start_new_session=True,
        )
    listener.close()
    try:
        served(port)
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()


@contextlib.contextmanager
def target(name: str, src: Path, logs: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """The server under test; yields (its process, its port, its stderr log)."""
    log = logs / f"{name}.log"
    if name in ("async", "thread"):
        with socketeer(["serve", "-q", "--model", name, "{fd}", "echo"], src, log) as (proc, port):
            yield proc, port, log
        return
    upstream_log = logs / "relay-upstream.log"
    with (
        socketeer(["serve", "-q", "--model", "async", "{fd}", "echo"], src, upstream_log) as (
            _,
            up,
        ),
        socketeer(["relay", "-q", "{fd}", f"tcp://127.0.0.1:{up}"], src, log) as (proc, port),
    ):
        yield proc, port, log


def served(port: int, timeout: float = 10) -> None:
    """Wait until one request on 127.0.0.1:PORT is echoed (the server has started)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"ping")
                if s.recv(4) == b"ping":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing echoed on port {port} in {timeout:.0f} s")
        time.sleep(0.05)


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Counts:
    """Requests that succeeded and failed, by kind of client."""

    ok: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the failures were
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, ok: int = 0, failed: int = 0) -> None:
        with self.lock:
            self.ok[kind] = self.ok.get(kind, 0) + ok
            self.failed[kind] = self.failed.get(kind, 0) + failed

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())


def short_connections(
    client: Path,
    port: int,
    counts: Counts,
    kind: str,
    *,
    total: int,
    concurrency: int,
    seconds: float,
) -> tuple[int, float]:
    """TOTAL (or as many as SECONDS allow) short connections by the C client: (done, seconds)."""
    limits = [str(total), str(concurrency), str(SIZE), f"{seconds:.1f}", str(REQUEST_TIMEOUT)]
    try:
        out = subprocess.run(
            [client, "127.0.0.1", str(port), *limits],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        counts.add(kind, failed=1)
        counts.notes.append(f"{kind}: the client had not ended 60 s after its time (killed)")
        return 0, seconds
    if out.returncode != 0:
        raise RuntimeError(f"soak_client: {out.stderr.strip()}")
    fields = out.stdout.split()
    done, failed, elapsed = int(fields[0]), int(fields[1]), float(fields[2])
    counts.add(kind, ok=done, failed=failed)
    if failed:
        counts.notes.append(f"{kind}: {' '.join(f for f in fields[3:] if not f.endswith('=0'))}")
    return done, elapsed


def bench(src: Path, port: int, seconds: float, counts: Counts, kind: str, *args: str) -> None:
    """``socketeer bench`` for SECONDS; its requests and errors go into ``counts``."""
    argv = [sys.executable, "-m", "socketeer", "bench", f"tcp://127.0.0.1:{port}", "--json"]
    argv += ["--duration", f"{seconds:.1f}", "--max-errors", "1000000000", *args]
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            env=socketeer_env(src),
            check=False,
        )
    except subprocess.TimeoutExpired:
        counts.add(kind, failed=1)
        counts.notes.append(f"{kind} had not ended 60 s after its {seconds:.0f} s (killed)")
        return
    try:
        result = json.loads(out.stdout)["result"]
    except (ValueError, KeyError):
        counts.add(kind, failed=1)
        counts.notes.append(f"{kind} did not run: {out.stderr.strip()[:200]}")
        return
    # A stream run has no requests: the run itself is the one request.
    ok = result["requests"] or int(result["bytes_received"] > 0 and not result["error_total"])
    counts.add(kind, ok=ok, failed=result["error_total"])
    if result["errors"]:
        counts.notes.append(f"{kind}: {result['errors']}")


def _exchange(port: int, data: bytes, *, half_close: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while len(got) < len(data) and (chunk := s.recv(65536)):
            got += chunk
        return bytes(got)


def misbehaving(port: int, deadline: float, counts: Counts) -> None:
    """Clients that end badly, one after another until ``deadline``.

    Only the half-closed exchange is a request (its echo must come back whole
    after the client's FIN); the others count as done when the server let them go.
    """
    payload = os.urandom(16384)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        kind = ("reset", "half-close", "vanish", "silent")[n % 4]
        try:
            if kind == "half-close":
                ok = _exchange(port, payload, half_close=True) == payload
                counts.add("half-close", ok=int(ok), failed=int(not ok))
                continue
            with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as s:
                if kind == "reset":  # half a request, then RST
                    s.sendall(payload[:8000])
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif kind == "vanish":  # a big request, its echo never read
                    s.sendall(payload * 8)
            counts.add(f"misbehaving ({kind})", ok=1)
        except OSError:
            # The server may reset the vanishing client: that is its right.
            counts.add(f"misbehaving ({kind}, refused or reset)", ok=1)


def idle_holders(port: int, deadline: float, counts: Counts) -> None:
    """100 connections that say nothing for a second, then close; again until ``deadline``."""
    while time.monotonic() < deadline - 2:
        held: list[socket.socket] = []
        try:
            for _ in range(100):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT))
            time.sleep(1)
            held[0].sendall(b"still there?")  # the server still serves an old idle one
            ok = held[0].recv(64) == b"still there?"
            counts.add("idle holders", ok=int(ok), failed=int(not ok))
        except OSError:
            counts.add("idle holders", failed=1)
        finally:
            for s in held:
                s.close()


def mixed(client: Path, src: Path, port: int, seconds: float, counts: Counts) -> None:
    """Everything at once for SECONDS (see the module's docstring)."""
    deadline = time.monotonic() + seconds
    jobs: list[Callable[[], object]] = [
        lambda: short_connections(
            client,
            port,
            counts,
            "mixed short",
            total=10**9,
            concurrency=MIXED_CONCURRENCY,
            seconds=seconds,
        ),
        lambda: bench(src, port, seconds, counts, "bench rr", "-c", "16", "--size", "512"),
        lambda: bench(
            src, port, seconds, counts, "bench stream", "--mode", "stream", "--direction", "both"
        ),
        lambda: misbehaving(port, deadline, counts),
        lambda: idle_holders(port, deadline, counts),
    ]
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:  # reported below, after every job has ended
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# -- one target ---------------------------------------------------------------------------


def settle(sampler: Sampler, base: Sample, phase: str) -> Sample:
    """Poll until descriptors, threads and children are down to ``base`` (at most 30 s)."""
    deadline = time.monotonic() + SETTLE
    while True:
        now = sample(sampler.pid, phase, sampler.began)
        back = now.fds <= base.fds and now.threads <= base.threads and now.children <= base.children
        if back or time.monotonic() > deadline:
            return sampler.take(phase)
        time.sleep(0.2)


def soak(
    name: str, client: Path, src: Path, logs: Path, args: argparse.Namespace
) -> dict[str, Any]:
    counts = Counts()
    warm_count = min(10_000, args.connections // 10)
    warm_mixed = max(10.0, min(60.0, args.minutes * 6))
    with target(name, src, logs) as (proc, port, log), Sampler(proc.pid, args.interval) as sampler:
        sampler.phase = "warm-up"
        short_connections(
            client, port, counts, "warm-up", total=warm_count, concurrency=CONCURRENCY, seconds=3600
        )
        mixed(client, src, port, warm_mixed, counts)
        warm = settle(sampler, sampler.samples[0], "warm")
        sampler.phase = "connections"
        rest = args.connections - warm_count
        done, elapsed = short_connections(
            client, port, counts, "connections", total=rest, concurrency=CONCURRENCY, seconds=3600
        )
        sampler.take("connections")
        sampler.phase = "mixed"
        mixed(client, src, port, args.minutes * 60, counts)
        sampler.take("mixed")
        sampler.phase = "settle"
        end = settle(sampler, warm, "end")
        alive = proc.poll() is None
    stderr = log.read_text(errors="replace")
    start = sampler.samples[0]
    growth = 100.0 * (end.rss_kib - warm.rss_kib) / warm.rss_kib
    result = {
        "target": name,
        "start": asdict(start),
        "warm": asdict(warm),
        "end": asdict(end),
        "peak_rss_kib": max(s.rss_kib for s in sampler.samples),
        "rss_growth_percent": round(growth, 2),
        "fds_leaked": end.fds - warm.fds,
        "threads_left": end.threads - warm.threads,
        "max_zombies": max(s.zombies for s in sampler.samples),
        "max_children": max(s.children for s in sampler.samples),
        "connections": args.connections,
        "connections_per_second": round(done / elapsed, 1) if elapsed else 0.0,
        "requests": dict(counts.ok),
        "failures": {k: v for k, v in counts.failed.items() if v},
        "failure_notes": counts.notes,
        "failed": counts.total_failed,
        "alive_at_end": alive,
        "tracebacks": stderr.count("Traceback"),
        "stderr_lines": len(stderr.splitlines()),
        "samples": [asdict(s) for s in sampler.samples],
    }
    result["goals_met"] = (
        growth <= RSS_GOAL
        and result["fds_leaked"] <= 0
        and result["threads_left"] <= 0
        and result["max_zombies"] == 0
        and result["failed"] == 0
        and result["tracebacks"] == 0
        and alive
    )
    return result


def report(results: list[dict[str, Any]]) -> str:
    header = ["target", "RSS start", "RSS warm", "RSS end", "growth", "fds start/warm/end"]
    header += ["threads warm/end", "zombies", "failed", "conn/s", "goals"]
    rows = []
    for r in results:
        s, w, e = r["start"], r["warm"], r["end"]
        rows.append(
            [
                r["target"],
                f"{s['rss_kib'] / 1024:.1f} MiB",
                f"{w['rss_kib'] / 1024:.1f} MiB",
                f"{e['rss_kib'] / 1024:.1f} MiB",
                f"{r['rss_growth_percent']:+.2f} %",
                f"{s['fds']}/{w['fds']}/{e['fds']}",
                f"{w['threads']}/{e['threads']}",
                str(r["max_zombies"]),
                str(r["failed"]),
                f"{r['connections_per_second']:.0f}",
                "met" if r["goals_met"] else "MISSED",
            ]
        )
    return table("Soak", header, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--minutes", type=float, default=10.0, metavar="M")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--interval", type=float, default=60.0, metavar="S")
    parser.add_argument("--json", type=Path, default=Path("soak.json"), metavar="FILE")
    parser.add_argument("--src", type=Path, default=ROOT / "src", metavar="DIR")
    args = parser.parse_args()
    names = [n for n in args.targets.split(",") if n]
    if unknown := set(names) - set(TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.connections < 10 or args.minutes <= 0 or args.interval <= 0:
        parser.error("--connections must be at least 10, --minutes and --interval above 0")
    results: list[dict[str, Any]] = []
    summary = {
        "parameters": {
            "connections": args.connections,
            "minutes": args.minutes,
            "interval": args.interval,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "results": results,
    }
    with tempfile.TemporaryDirectory() as tmp:
        client = compile_c("soak_client", Path(tmp))
        for name in names:
            print(
                f"soak: {name}: {args.connections} connections, {args.minutes:g} min mixed",
                file=sys.stderr,
            )
            result = soak(name, client, args.src, Path(tmp), args)
            results.append(result)
            # After each target, so a run cut short keeps what it measured.
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
            if result["tracebacks"]:
                print((Path(tmp) / f"{name}.log").read_text(errors="replace"), file=sys.stderr)
    print(report(results))
    return 0 if all(r["goals_met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
