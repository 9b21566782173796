"""SPEC §7 over stream sockets: `socketeer bench` modes against real servers, and the truth
about latency (a stalling server shows in open loop; a corrupting one is a mismatch)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import socketeer
from socketeer import bench

from .conftest import NOBODY, SOCKETEER, Background, cli_env, require_peer

SHORT = 0.6  # seconds per run: enough requests to judge, quick on two CPUs


def start(background: type[Background], *argv: str) -> str:
    server = background([*SOCKETEER, "serve", "--model", "async", *argv], stdin=subprocess.DEVNULL)
    return server.wait_listening()


def assert_sane(result: bench.Result) -> None:
    assert result.counts.requests > 0
    assert result.counts.errors == {}
    assert result.rate > 0
    latency = result.latency
    p = [latency.percentile(q) for q in (50, 90, 99, 99.9, 100)]
    assert p == sorted(p) and p[0] > 0


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "unix", "abstract"])
def test_rr_over_every_stream_kind(kind: str, background: type[Background], sockdir: Path) -> None:
    bind = {
        "tcp4": "tcp://127.0.0.1:0",
        "tcp6": "tcp://[::1]:0",
        "unix": f"unix:{sockdir}/bench.sock",
        "abstract": f"unix:@socketeer-bench-{time.monotonic_ns()}",
    }[kind]
    address = start(background, bind, "echo")
    result = bench.run(address, connections=4, duration=SHORT)
    assert_sane(result)
    assert result.connections == 4


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("bench-tls")
    ca = trustme.CA()
    ca_path, pem = folder / "ca.pem", folder / "server.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return str(ca_path), str(pem)


def test_rr_and_connect_over_tls(tls_files: tuple[str, str], background: type[Background]) -> None:
    from socketeer.tls import TLSConfig

    ca, pem = tls_files
    address = start(background, "--cert", pem, "tls://127.0.0.1:0", "echo")
    assert_sane(bench.run(address, connections=2, duration=SHORT, tls=TLSConfig(ca=ca)))
    result = bench.run(address, mode="connect", connections=2, duration=SHORT, tls=TLSConfig(ca=ca))
    assert_sane(result)
    handshake = result.handshake
    assert handshake is not None and handshake.count == result.counts.requests


def test_stream_mode_to_discard_and_echo(background: type[Background]) -> None:
    discard = start(background, "tcp://127.0.0.1:0", "discard")
    sent = bench.run(discard, mode="stream", duration=SHORT)
    assert sent.counts.bytes_sent > 1 << 20
    assert sent.throughput > 0
    echo = start(background, "tcp://127.0.0.1:0", "echo")
    echoed = bench.run(echo, mode="stream", duration=SHORT)
    assert echoed.counts.bytes_received > 1 << 20  # counted as it comes back


def test_connect_mode_counts_connections(background: type[Background]) -> None:
    address = start(background, "tcp://127.0.0.1:0", "echo")
    result = bench.run(address, mode="connect", connections=4, duration=SHORT)
    assert_sane(result)


def test_pipeline_and_requests(background: type[Background]) -> None:
    address = start(background, "tcp://127.0.0.1:0", "echo")
    result = bench.run(address, connections=2, requests=400, duration=None, pipeline=4)
    assert result.counts.errors == {}
    assert 400 <= result.counts.requests <= 400 + 2 * 4


def test_two_workers_share_the_connections(background: type[Background]) -> None:
    address = start(background, "tcp://127.0.0.1:0", "echo")
    result = bench.run(address, connections=4, workers=2, duration=SHORT)
    assert_sane(result)
    assert {i.worker for i in result.intervals} == {0, 1}
    assert result.connections == 4


@pytest.mark.peer
@pytest.mark.parametrize("peer", ["ncat", "socat"])
def test_rr_against_real_echo_peers(peer: str, background: type[Background]) -> None:
    binary = require_peer(peer)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if peer == "ncat":
        server = background([binary, "-l", "-k", "127.0.0.1", str(port), "-e", "/bin/cat"])
    else:
        server = background([binary, f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", "PIPE"])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, f"{peer} did not listen"
            time.sleep(0.05)
    assert_sane(bench.run(f"tcp://127.0.0.1:{port}", connections=2, duration=SHORT))
    server.stop()


# -- the truth about latency -------------------------------------------------------------


class StallingEcho:
    """An echo server that stops answering for 100 ms once a second."""

    def __init__(self, corrupt: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.corrupt = corrupt
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        started = time.monotonic()
        answered = 0
        with conn:
            conn.settimeout(0.5)
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                if not self.corrupt and (time.monotonic() - started) % 1.0 < 0.1:
                    time.sleep(0.1 - (time.monotonic() - started) % 1.0)
                if self.corrupt and answered == 10:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                answered += 1
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(2)
        self.listener.close()


@pytest.fixture
def stalling() -> Iterator[StallingEcho]:
    server = StallingEcho()
    yield server
    server.close()


def test_open_loop_shows_a_stalling_server(stalling: StallingEcho) -> None:
    result = bench.run(stalling.address, connections=2, rate=400, duration=2.5)
    assert result.counts.errors == {}
    assert result.latency.percentile(99) >= 50_000_000  # corrected: the stall shows
    uncorrected = result.uncorrected
    assert uncorrected is not None
    assert result.counts.late > 0  # sends that could not leave on time


def test_a_corrupted_byte_is_a_mismatch_and_exit_1() -> None:
    server = StallingEcho(corrupt=True)
    try:
        result = bench.run(server.address, requests=50, duration=None)
        assert result.counts.errors.get("mismatch") == 1
        cli = subprocess.run(
            [*SOCKETEER, "bench", "--requests", "50", server.address],
            capture_output=True,
            env=cli_env(),
            timeout=60,
            check=False,
        )
        assert cli.returncode == 1, cli.stderr
        assert cli.stderr.decode().count("\n") == 1
        assert b"mismatch" in cli.stderr
    finally:
        server.close()


# -- the command ---------------------------------------------------------------------------


def test_cli_table_and_json(background: type[Background]) -> None:
    address = start(background, "tcp://127.0.0.1:0", "echo")
    table = subprocess.run(
        [*SOCKETEER, "bench", "-c", "2", "--duration", str(SHORT), address],
        capture_output=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert table.returncode == 0, table.stderr
    assert b"p99" in table.stdout
    assert table.stderr == b""  # not a terminal: no progress line
    out = subprocess.run(
        [*SOCKETEER, "bench", "--json", "--duration", str(SHORT), address],
        capture_output=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["schema"].startswith("socketeer.bench/")
    assert document["result"]["rate"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mode", "nope", f"tcp://127.0.0.1:{NOBODY}"], "invalid choice"),
        (["-c", "0", f"tcp://127.0.0.1:{NOBODY}"], "at least 1"),
        (["--rate", "-5", f"tcp://127.0.0.1:{NOBODY}"], "positive"),
        (["--mode", "stream", f"udp://127.0.0.1:{NOBODY}"], "needs a stream address"),
        (["nonsense"], "bad address"),
    ],
)
def test_bad_bench_input_exits_2(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [*SOCKETEER, "bench", *argv], capture_output=True, env=cli_env(), timeout=30, check=False
    )
    assert result.returncode == 2, result.stderr
    text = result.stderr.decode()
    assert text.startswith("socketeer: error: ") and text.count("\n") == 1
    assert message in text


def test_refused_connections_are_counted_not_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = bench.run(f"tcp://127.0.0.1:{port}", connections=2, duration=SHORT)
    assert result.counts.errors.get("connect_refused") == 2
    assert result.connections == 0


def test_library_run_is_importable_from_the_package() -> None:
    assert socketeer.Address is not None
    assert callable(bench.run)


def test_cli_plot_writes_a_png(background: type[Background], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (socketeer[plot])")
    address = start(background, "tcp://127.0.0.1:0", "echo")
    image = tmp_path / "latency.png"
    result = subprocess.run(
        [*SOCKETEER, "bench", "--duration", str(SHORT), "--plot", str(image), address],
        capture_output=True,
        env=cli_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_progress_line_on_a_terminal_only(background: type[Background]) -> None:
    import os

    address = start(background, "tcp://127.0.0.1:0", "echo")
    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen(
            [*SOCKETEER, "bench", "--duration", "1.6", address],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=cli_env(),
        )
        os.close(follower)
        follower = -1
        seen = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            import select

            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    break
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert b"req/s" in seen and b"\r" in seen  # redrawn in place on the terminal
        assert b"p99" in out
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


def test_warmup_is_counted_apart_and_not_measured(background: type[Background]) -> None:
    address = start(background, "tcp://127.0.0.1:0", "echo")
    result = bench.run(address, connections=2, warmup=0.4, duration=SHORT)
    assert result.warmup.requests > 0
    assert result.latency.count == result.counts.requests  # only measured requests timed
    assert 0 < result.elapsed < SHORT + 0.5


def test_a_worker_that_cannot_run_raises_as_one_worker_does() -> None:
    for workers in (1, 2):
        with pytest.raises(socketeer.ConnectError, match="host not found"):
            bench.run("udp://no-such-host.invalid:9", connections=2, workers=workers, duration=0.5)
