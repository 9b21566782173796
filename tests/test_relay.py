"""SPEC §6: `socketeer relay` — integrity, half-close, peers, faults, datagram sessions, PROXY."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import socketeer
from socketeer import aio
from socketeer.proxyproto import encode_v2, parse_proxy_header

from .conftest import NOBODY, SOCKETEER, Background, cli_env, fd_count, require_peer, rss_kib
from .swap import BLOCK, blocks, digest_of

MODELS = ["thread", "fork", "async"]


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> str:
    """Every stream relay test runs in every server model."""
    return str(request.param)


def drain(sock: socket.socket) -> tuple[str, int]:
    h, total = hashlib.sha256(), 0
    buffer = bytearray(BLOCK)
    while n := sock.recv_into(buffer):
        h.update(memoryview(buffer)[:n])
        total += n
    return h.hexdigest(), total


def exchange(sock: socket.socket, megabytes: int, seed: bytes) -> tuple[str, int]:
    """Send ``megabytes`` (then SHUT_WR) while receiving everything the other side sends."""
    result: list[tuple[str, int]] = []
    reader = threading.Thread(target=lambda: result.append(drain(sock)))
    reader.start()
    for block in blocks(megabytes, seed):
        sock.sendall(block)
    sock.shutdown(socket.SHUT_WR)
    reader.join(120)
    return result[0]


class SwapServer:
    """Upstream for bulk tests: each connection sends ``megabytes`` and hashes what arrives."""

    def __init__(self, address: str, megabytes: int) -> None:
        self.listener = socketeer.listen(address)
        self.address = str(self.listener.address)
        self.megabytes = megabytes
        self.results: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.listener.accept(timeout=60) as conn:
            self.results.append(exchange(conn.socket, self.megabytes, b"down"))

    def close(self) -> None:
        self.thread.join(120)
        self.listener.close()


def start_relay(background: type[Background], *argv: str) -> tuple[Background, str]:
    relay = background([*SOCKETEER, "relay", *argv], stdin=subprocess.DEVNULL)
    return relay, relay.wait_listening()


def relay_stop(relay: Background) -> tuple[str, int]:
    relay.proc.terminate()
    _, err, code = relay.finish()
    return err.decode(), code


# -- integrity -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("front", "back", "splice"),
    [("tcp", "tcp", True), ("tcp", "tcp", False), ("tcp", "unix", True), ("unix", "tcp", True)],
)
def test_200_mb_each_way_at_once(
    front: str, back: str, splice: bool, background: type[Background], sockdir: Path, model: str
) -> None:
    size = 200
    upstream = SwapServer("tcp://127.0.0.1:0" if back == "tcp" else f"unix:{sockdir}/up.sock", size)
    listen_on = "tcp://127.0.0.1:0" if front == "tcp" else f"unix:{sockdir}/front.sock"
    relay, address = start_relay(
        background,
        "--model",
        model,
        *([] if splice else ["--no-splice"]),
        listen_on,
        upstream.address,
    )
    with socketeer.connect(address, timeout=30) as client:
        got = exchange(client.socket, size, b"up")
    upstream.close()
    assert got == (digest_of(size, b"down"), size * BLOCK)  # upstream -> client
    assert upstream.results == [(digest_of(size, b"up"), size * BLOCK)]  # client -> upstream
    err, code = relay_stop(relay)
    assert code == 0, err


@pytest.mark.slow
def test_stdio_to_tcp_200_mb_each_way(tmp_path: Path) -> None:
    size = 200
    source = tmp_path / "in.bin"
    with source.open("wb") as f:
        for block in blocks(size, b"stdin"):
            f.write(block)
    upstream = SwapServer("tcp://127.0.0.1:0", size)
    out = tmp_path / "out.bin"
    with source.open("rb") as stdin, out.open("wb") as stdout:
        result = subprocess.run(
            [*SOCKETEER, "relay", "-", upstream.address],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=cli_env(),
            timeout=120,
            check=False,
        )
    upstream.close()
    assert result.returncode == 0, result.stderr
    assert upstream.results == [(digest_of(size, b"stdin"), size * BLOCK)]
    with out.open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest_of(size, b"down")


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_50_concurrent_pairs_of_2_mb(
    background: type[Background], model: str, workers: str
) -> None:
    echo = background(
        [*SOCKETEER, "serve", "--model", "async", "-q", "tcp://127.0.0.1:0", "echo"],
        stdin=subprocess.DEVNULL,
    )
    echo_address = _listening_quietly(echo)
    relay, address = start_relay(
        background, "--model", model, "--workers", workers, "tcp://127.0.0.1:0", echo_address
    )

    async def one(i: int) -> bool:
        payload = hashlib.shake_256(b"pair %d" % i).digest(2 * BLOCK)
        conn = await aio.connect(address, timeout=30)
        conn.timeout = 60
        sending = asyncio.ensure_future(conn.send(payload))
        back = await conn.recv_exactly(len(payload))
        await sending
        await conn.aclose()
        return back == payload

    async def main() -> int:
        return sum(await asyncio.gather(*(one(i) for i in range(50))))

    assert aio.run(main()) == 50
    err, code = relay_stop(relay)
    assert code == 0, err


def _listening_quietly(server: Background) -> str:
    """An address for a -q server: it prints nothing, so ask /proc which port it bound."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            inode = fields[9]
            if fields[3] == "0A" and _owned_by(server.proc.pid, inode):
                port = int(fields[1].split(":")[1], 16)
                return f"tcp://127.0.0.1:{port}"
        time.sleep(0.05)
    raise AssertionError("server did not listen")


def _owned_by(pid: int, inode: str) -> bool:
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


# -- semantics ---------------------------------------------------------------------------


def test_half_close_request_then_whole_reply(background: type[Background], model: str) -> None:
    sorter = background(
        [*SOCKETEER, "serve", "tcp://127.0.0.1:0", "exec", "--", "sort"], stdin=subprocess.DEVNULL
    )
    relay, address = start_relay(
        background, "--model", model, "-v", "tcp://127.0.0.1:0", sorter.wait_listening()
    )
    result = subprocess.run(
        [*SOCKETEER, "connect", address],
        input=b"pear\napple\nfig\n",
        capture_output=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert result.stdout == b"apple\nfig\npear\n"
    relay.wait_for_stderr(b"15 bytes in, 15 bytes out")
    relay_stop(relay)


def test_exec_target_and_once(background: type[Background], model: str) -> None:
    relay, address = start_relay(
        background, "--model", model, "--once", "tcp://127.0.0.1:0", "exec:sort -r"
    )
    with socketeer.connect(address, timeout=10) as conn:
        conn.send(b"a\nc\nb\n")
        conn.shutdown_write()
        assert list(conn) == [b"c", b"b", b"a"]
    _, _, code = relay.finish()  # --once: it ends by itself
    assert code == 0


def test_hexdump_of_a_pair(background: type[Background], tmp_path: Path, model: str) -> None:
    dump = tmp_path / "dump.txt"
    relay, address = start_relay(
        background, "--model", model, "--hexdump", str(dump), "tcp://127.0.0.1:0", "exec:cat"
    )
    with socketeer.connect(address, timeout=10) as conn:
        conn.send(b"hi")
        conn.shutdown_write()
        assert conn.recv_exactly(2) == b"hi"
    relay_stop(relay)
    text = dump.read_text()
    assert "> 00000000  68 69" in text
    assert "< 00000000  68 69" in text


# -- real peers -------------------------------------------------------------------------


@pytest.mark.peer
def test_socat_client_through_relay_to_ncat_server(
    background: type[Background], model: str
) -> None:
    ncat, socat = require_peer("ncat"), require_peer("socat")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # ncat cannot bind port 0 and tell us the port
    server = background([ncat, "-v", "-l", "127.0.0.1", str(port)])
    server.wait_for_stderr(b"Listening on")
    relay, address = start_relay(
        background, "--model", model, "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{port}"
    )
    relay_port = socketeer.Address.parse(address).port
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"from ncat\n")
    server.proc.stdin.flush()
    result = subprocess.run(
        [socat, "-t", "2", "-", f"TCP:127.0.0.1:{relay_port}"],
        input=b"from socat\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == b"from ncat\n"
    server.proc.stdin.close()
    out, _, _ = server.finish()
    assert out == b"from socat\n"
    relay_stop(relay)


@pytest.mark.peer
def test_ncat_client_through_relay_to_socat_server(
    background: type[Background], model: str
) -> None:
    ncat, socat = require_peer("ncat"), require_peer("socat")
    server = background([socat, "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1", "SYSTEM:'tr a-z A-Z'"])
    server.wait_for_stderr(b"listening on")
    line = next(x for x in server.stderr_lines if b"listening on" in x)
    port = int(line.rsplit(b":", 1)[1])
    relay, address = start_relay(
        background, "--model", model, "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{port}"
    )
    relay_port = str(socketeer.Address.parse(address).port)
    result = subprocess.run(
        [ncat, "127.0.0.1", relay_port],
        input=b"shout\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == b"SHOUT\n"
    relay_stop(relay)


# -- faults ----------------------------------------------------------------------------------


def wait_fds(pid: int, expected: int) -> None:
    deadline = time.monotonic() + 10
    while fd_count(pid) != expected:
        assert time.monotonic() < deadline, f"{fd_count(pid)} descriptors open, not {expected}"
        time.sleep(0.05)


def test_faults_leave_no_descriptors_behind(background: type[Background], model: str) -> None:
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    refused_port = refusing.getsockname()[1]
    upstream = socketeer.listen("tcp://127.0.0.1:0")
    try:
        # 1. upstream refuses: the client is closed, the error logged, the relay keeps serving.
        relay, address = start_relay(
            background, "--model", model, "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{refused_port}"
        )
        pid = relay.proc.pid
        time.sleep(0.2)
        baseline = fd_count(pid)
        for _ in range(3):
            with socketeer.connect(address, timeout=10) as conn:
                assert conn.recv() == b""
        relay.wait_for_stderr(b"connection refused", count=3)
        wait_fds(pid, baseline)
        relay_stop(relay)

        # 2-4 go to a live upstream that misbehaves in turn.
        relay, address = start_relay(
            background, "--model", model, "tcp://127.0.0.1:0", str(upstream.address)
        )
        pid = relay.proc.pid
        time.sleep(0.2)
        baseline = fd_count(pid)

        # 2. the upstream resets mid-transfer
        client = socketeer.connect(address, timeout=10)
        server_side = upstream.accept(timeout=10)
        client.send(b"x" * 100_000)
        server_side.recv_exactly(1000)
        server_side.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server_side.close()
        with pytest.raises((socketeer.ConnectionReset, socketeer.ConnectionClosed)):
            while True:
                client.send(b"y" * 65536)
                if not client.recv(1):
                    raise socketeer.ConnectionClosed("closed")
        client.close()
        wait_fds(pid, baseline)

        # 3. the client disappears mid-transfer
        client = socketeer.connect(address, timeout=10)
        server_side = upstream.accept(timeout=10)
        client.send(b"z" * 10_000)
        assert server_side.recv_exactly(10_000) == b"z" * 10_000
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        server_side.timeout = 10
        with pytest.raises((socketeer.ConnectionReset, socketeer.ConnectionClosed)):
            server_side.recv_exactly(1)
        server_side.close()
        wait_fds(pid, baseline)

        # 4. the upstream never reads: the relay does not buffer without bound
        client = socketeer.connect(address, timeout=10)
        server_side = upstream.accept(timeout=10)
        before = rss_kib(pid)
        client.socket.setblocking(False)
        pushed, deadline = 0, time.monotonic() + 3
        chunk = b"w" * 65536
        while time.monotonic() < deadline:
            try:
                pushed += client.socket.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        grown = rss_kib(pid) - before
        assert pushed < 64 * BLOCK  # the kernel buffers filled, then the sender was held
        assert grown < 8 * 1024, f"relay grew by {grown} KiB while the upstream did not read"
        client.close()
        server_side.close()
        wait_fds(pid, baseline)
        err, code = relay_stop(relay)
        assert code == 0
        assert "Traceback" not in err
    finally:
        refusing.close()
        upstream.close()


# -- datagrams -------------------------------------------------------------------------------


def test_udp_relay_keeps_a_session_per_client(background: type[Background]) -> None:
    echo = background([*SOCKETEER, "serve", "udp://127.0.0.1:0", "echo"], stdin=subprocess.DEVNULL)
    relay, address = start_relay(
        background, "-v", "-i", "0.5", "udp://127.0.0.1:0", echo.wait_listening()
    )
    clients = [socketeer.open_datagram(address, timeout=2) for _ in range(3)]
    try:
        for round_no in range(5):
            for i, client in enumerate(clients):
                client.send(b"client %d round %d" % (i, round_no))
            for i, client in enumerate(clients):
                data, _ = client.recv()
                assert data == b"client %d round %d" % (i, round_no)
    finally:
        for client in clients:
            client.close()
    relay.wait_for_stderr(b"opened", count=3)
    relay.wait_for_stderr(b"expired after 0.5s idle", count=3)
    err, code = relay_stop(relay)
    assert code == 0, err


def test_udp_session_table_is_bounded(background: type[Background]) -> None:
    echo = background(
        [*SOCKETEER, "serve", "udp://127.0.0.1:0", "discard"], stdin=subprocess.DEVNULL
    )
    relay, address = start_relay(
        background, "--max-sessions", "4", "udp://127.0.0.1:0", echo.wait_listening()
    )
    time.sleep(0.2)
    baseline = fd_count(relay.proc.pid)
    for _ in range(20):
        with socketeer.open_datagram(address) as client:
            client.send(b"flood")
    relay.wait_for_stderr(b"session table full (4): evicting")  # a line a second at most
    wait_fds(relay.proc.pid, baseline + 4)
    relay_stop(relay)


# -- PROXY protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_tells_the_upstream_who_connected(
    version: str, background: type[Background], model: str
) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        relay, address = start_relay(
            background,
            "--model",
            model,
            "--proxy-protocol",
            version,
            "tcp://127.0.0.1:0",
            str(upstream.address),
        )
        with socketeer.connect(address, timeout=10) as client:
            client.send(b"payload")
            with upstream.accept(timeout=10) as conn:
                conn.timeout = 10
                data = b""
                while (found := parse_proxy_header(data)) is None:
                    data += conn.recv()
                header, used = found
                rest = data[used:] + conn.recv_exactly(len(b"payload") - len(data[used:]))
        assert header.source == client.local
        assert header.destination == socketeer.Address.parse(address)
        assert rest == b"payload"
        relay_stop(relay)


def test_accept_proxy_protocol(background: type[Background], model: str) -> None:
    relay, address = start_relay(
        background, "--model", model, "--accept-proxy-protocol", "tcp://127.0.0.1:0", "exec:cat"
    )
    header = encode_v2(
        socketeer.Address.parse("tcp://203.0.113.7:4242"),
        socketeer.Address.parse(f"tcp://127.0.0.1:{NOBODY}"),
    )
    with socketeer.connect(address, timeout=10) as conn:
        conn.send(header + b"only this")
        conn.shutdown_write()
        assert conn.recv_exactly(9) == b"only this"  # the header is not passed on
        assert conn.recv() == b""
    with socketeer.connect(address, timeout=10) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")  # no header: refused, nothing passed through
        assert conn.recv() == b""
    relay.wait_for_stderr(b"missing PROXY header")
    relay_stop(relay)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["tcp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}"],
            "datagram relay needs datagram addresses",
        ),
        (["exec:no-such-program-xyz", f"tcp://127.0.0.1:{NOBODY}"], "program not found"),
        (["tcp://127.0.0.1:0", "exec:no-such-program-xyz"], "program not found"),
        (["tcp://127.0.0.1:0", "exec:"], "exec: needs a command"),
        (["tcp://127.0.0.1:0", "exec:'unbalanced"], "No closing quotation"),
        (["nonsense", f"tcp://127.0.0.1:{NOBODY}"], "bad address"),
        (
            ["tcp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}", "--proxy-protocol", "v3"],
            "invalid choice",
        ),
    ],
)
def test_bad_relay_input_exits_2(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [*SOCKETEER, "relay", *argv], capture_output=True, env=cli_env(), timeout=30, check=False
    )
    assert result.returncode == 2, result.stderr
    text = result.stderr.decode()
    assert text.startswith("socketeer: error: ")
    assert text.count("\n") == 1
    assert message in text


def test_stdio_relay_to_a_refused_port_exits_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = subprocess.run(
            [*SOCKETEER, "relay", "-", f"tcp://127.0.0.1:{port}"],
            input=b"x",
            capture_output=True,
            env=cli_env(),
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert b"connection refused" in result.stderr


# -- limits --------------------------------------------------------------------------------


def test_idle_timeout_ends_a_silent_pair(background: type[Background], model: str) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        relay, address = start_relay(
            background, "-v", "-i", "0.5", "tcp://127.0.0.1:0", str(upstream.address)
        )
        with socketeer.connect(address, timeout=10) as client:
            with upstream.accept(timeout=10) as far_end:
                started = time.monotonic()
                assert client.recv() == b""  # cut by the relay, both sides
                assert 0.4 < time.monotonic() - started < 5
                far_end.timeout = 5
                assert far_end.recv() == b""
        relay.wait_for_stderr(b"idle for 0.5s: closing")
        relay_stop(relay)


def test_max_conns_and_deny(background: type[Background], model: str) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        relay, address = start_relay(
            background,
            "--model",
            model,
            "--max-conns",
            "1",
            "--deny",
            "127.0.0.2",
            "tcp://127.0.0.1:0",
            str(upstream.address),
        )
        with socketeer.connect(address, timeout=10) as first:
            first.send(b"1")
            with upstream.accept(timeout=10) as far_end:
                assert far_end.recv_exactly(1) == b"1"
                with socketeer.connect(address, timeout=10) as second:
                    assert second.recv() == b""  # over the limit: closed at once
        port = socketeer.Address.parse(address).port
        denied = socket.socket()
        denied.settimeout(10)
        try:
            denied.bind(("127.0.0.2", 0))
            denied.connect(("127.0.0.1", port))
            assert denied.recv(1) == b""
        finally:
            denied.close()
        relay.wait_for_stderr(b"1 connections open (max_connections)")
        relay.wait_for_stderr(b"denied by --allow/--deny")
        relay_stop(relay)


def test_stream_only_options_on_a_datagram_relay_exit_2() -> None:
    for option, name in (
        ("--once", "once"),
        ("--deny=127.0.0.2", "deny"),
        ("--model=async", "model"),
        ("--workers=2", "workers"),
    ):
        result = subprocess.run(
            [*SOCKETEER, "relay", option, "udp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}"],
            capture_output=True,
            env=cli_env(),
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr == f"socketeer: error: for stream relays only: {name}\n".encode()


def test_accept_proxy_protocol_header_after_a_pause(
    background: type[Background], model: str
) -> None:
    """A header that is not there at accept time (its own packet, later) is waited for."""
    relay, address = start_relay(
        background, "--model", model, "--accept-proxy-protocol", "tcp://127.0.0.1:0", "exec:cat"
    )
    header = encode_v2(
        socketeer.Address.parse("tcp://203.0.113.7:4242"),
        socketeer.Address.parse(f"tcp://127.0.0.1:{NOBODY}"),
    )
    with socketeer.connect(address, timeout=10) as conn:
        time.sleep(0.3)
        conn.send(header[:5])
        time.sleep(0.1)
        conn.send(header[5:] + b"late")
        conn.shutdown_write()
        assert conn.recv_exactly(4) == b"late"
    err, code = relay_stop(relay)
    assert code == 0 and "Traceback" not in err
    assert "timed out" not in err, err
