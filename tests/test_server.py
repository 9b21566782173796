"""SPEC §4 and `serve`: every model on every socket kind, the lifecycle, the handlers, bad input.

Servers run as `socketeer serve` subprocesses, as a person runs them: signals,
forking and the exit code are then the real thing. Clients are socketeer's own
asyncio layer (hundreds of connections at once in one thread), plain sockets,
ncat and socat.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import socketeer
from socketeer import aio

from .conftest import SOCKETEER, Background, cli_env, port_of, require_peer, run_cli

MODELS = ["thread", "fork", "async"]
KINDS = ["tcp", "unix", "udp", "unix-dgram"]


def bind_address(kind: str, sockdir: Path) -> str:
    return {
        "tcp": "tcp://127.0.0.1:0",
        "udp": "udp://127.0.0.1:0",
        "unix": f"unix:{sockdir}/serve.sock",
        "unix-dgram": f"unix-dgram:{sockdir}/serve-dgram.sock",
    }[kind]


def start(background: type[Background], *argv: str) -> tuple[Background, str]:
    server = background([*SOCKETEER, "serve", *argv], stdin=subprocess.DEVNULL)
    return server, server.wait_listening()


def stop(server: Background, signum: int = signal.SIGTERM) -> tuple[bytes, str, int]:
    server.proc.send_signal(signum)
    out, err, code = server.finish(timeout=30)
    return out, err.decode(), code


async def stream_echo_clients(address: str, count: int, size: int = 3000) -> int:
    """``count`` clients at once, each checks its echo byte for byte; returns the good ones."""

    async def one(i: int) -> bool:
        payload = os.urandom(size) + f"client {i}".encode()
        conn = await aio.connect(address, timeout=30)
        conn.timeout = 30
        try:
            await conn.send(payload[: size // 2])
            await conn.send(payload[size // 2 :])
            return await conn.recv_exactly(len(payload)) == payload
        finally:
            await conn.aclose()

    results = await asyncio.gather(*(one(i) for i in range(count)))
    return sum(results)


async def datagram_echo_clients(address: str, count: int) -> int:
    """``count`` datagram clients at once; a lost datagram is sent again (it is UDP)."""

    async def one(i: int) -> bool:
        payload = f"datagram from client {i} ".encode() + os.urandom(64).hex().encode()
        async with await aio.open_datagram(address) as endpoint:
            for _ in range(10):
                await endpoint.send(payload)
                try:
                    data, _ = await endpoint.recv(timeout=2)
                except socketeer.Timeout:
                    continue
                return data == payload
        return False

    results = await asyncio.gather(*(one(i) for i in range(count)))
    return sum(results)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", MODELS)
def test_echo_many_clients_every_model_every_kind(
    model: str, kind: str, background: type[Background], sockdir: Path
) -> None:
    server, address = start(background, "--model", model, bind_address(kind, sockdir), "echo")
    count = 50 if model == "fork" else 200
    if kind in ("udp", "unix-dgram"):
        good = aio.run(datagram_echo_clients(address, count))
    else:
        good = aio.run(stream_echo_clients(address, count))
    assert good == count
    _, err, code = stop(server)
    assert code == 0, err
    assert "Traceback" not in err
    assert not list(sockdir.iterdir())  # socket files removed


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def open_fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_fork_model_500_connections_no_zombies_no_fd_growth(background: type[Background]) -> None:
    server, address = start(background, "--model", "fork", "tcp://127.0.0.1:0", "echo")
    pid = server.proc.pid
    assert aio.run(stream_echo_clients(address, 10)) == 10  # warm up: imports, buffers
    time.sleep(0.2)
    fds_at_start = open_fd_count(pid)
    for _ in range(10):
        assert aio.run(stream_echo_clients(address, 50, size=100)) == 50
    deadline = time.monotonic() + 10
    while children_of(pid):  # zombies are children too, until reaped
        assert time.monotonic() < deadline, f"children left: {children_of(pid)}"
        time.sleep(0.05)
    assert open_fd_count(pid) <= fds_at_start
    _, err, code = stop(server)
    assert code == 0, err
    assert children_of(pid) == []


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_graceful_shutdown_lets_a_long_exchange_finish(
    model: str, background: type[Background]
) -> None:
    server, address = start(
        background, "--model", model, "--grace", "5", "tcp://127.0.0.1:0", "echo"
    )
    with socketeer.connect(address, timeout=10) as conn:
        conn.send_line("before")
        assert conn.recv_line() == b"before"
        server.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        deadline = time.monotonic() + 10
        while True:  # new clients are refused once the server stops accepting
            try:
                socketeer.connect(address, timeout=1).close()
            except socketeer.ConnectError:
                break
            assert time.monotonic() < deadline, "still accepting after SIGTERM"
            time.sleep(0.05)
        for i in range(5):  # the open exchange goes on
            conn.send_line(f"during {i}")
            assert conn.recv_line() == f"during {i}".encode()
            time.sleep(0.1)
        conn.shutdown_write()
        assert conn.recv() == b""
    _, err, code = server.finish(timeout=30)
    assert code == 0, err
    assert time.monotonic() - started < 5


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_grace_expires_then_connections_are_closed(
    model: str, background: type[Background]
) -> None:
    server, address = start(
        background, "--model", model, "--grace", "0.5", "tcp://127.0.0.1:0", "echo"
    )
    with socketeer.connect(address, timeout=10) as conn:
        conn.send_line("hold")
        assert conn.recv_line() == b"hold"
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert conn.recv() == b""  # closed by the server after the grace period
        assert time.monotonic() - started < 5
    _, err, code = server.finish(timeout=30)
    assert code == 0
    assert "grace period over" in err.decode()


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_second_sigint_closes_at_once(model: str, background: type[Background]) -> None:
    server, address = start(
        background, "--model", model, "--grace", "30", "tcp://127.0.0.1:0", "echo"
    )
    with socketeer.connect(address, timeout=10) as conn:
        conn.send_line("hold")
        assert conn.recv_line() == b"hold"
        started = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGINT)
        assert conn.recv() == b""
    _, _, code = server.finish(timeout=30)
    assert code == 0
    assert time.monotonic() - started < 10


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_worker_killed_is_replaced(model: str, background: type[Background]) -> None:
    server, address = start(
        background, "--model", model, "--workers", "2", "tcp://127.0.0.1:0", "echo"
    )
    pid = server.proc.pid
    deadline = time.monotonic() + 15
    while len(children_of(pid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim = children_of(pid)[0]
    os.kill(victim, signal.SIGKILL)
    while True:
        workers = children_of(pid)
        if len(workers) == 2 and victim not in workers:
            break
        assert time.monotonic() < deadline, f"workers now: {workers}"
        time.sleep(0.05)
    assert aio.run(stream_echo_clients(address, 40)) == 40
    _, err, code = stop(server)
    assert code == 0, err
    assert f"worker {victim} was killed by signal 9; starting a replacement" in err
    assert children_of(pid) == []


def test_workers_share_a_unix_socket(background: type[Background], sockdir: Path) -> None:
    server, address = start(background, "--workers", "0", f"unix:{sockdir}/w.sock", "echo")
    deadline = time.monotonic() + 15
    while len(children_of(server.proc.pid)) < (os.cpu_count() or 1):  # 0 = one per CPU
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert aio.run(stream_echo_clients(address, 20)) == 20
    _, err, code = stop(server)
    assert code == 0, err
    assert not (sockdir / "w.sock").exists()


# -- handlers ---------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_ack_is_the_tutorial_server(model: str, background: type[Background]) -> None:
    server, address = start(background, "--model", model, "tcp://127.0.0.1:0", "ack")
    with socketeer.connect(address, timeout=10) as conn:
        conn.send(b"one\ntwo\n")
        assert conn.recv_line() == b"I got your message"
        assert conn.recv_line() == b"I got your message"
    out, _, code = stop(server)
    assert code == 0
    assert out == b"Here is the message: one\nHere is the message: two\n"


def test_ack_over_udp(background: type[Background]) -> None:
    server, address = start(background, "udp://127.0.0.1:0", "ack")
    with socketeer.open_datagram(address, timeout=10) as endpoint:
        endpoint.send(b"hi there\n")
        assert endpoint.recv()[0] == b"I got your message\n"
    out, _, _ = stop(server)
    assert out == b"Here is the message: hi there\n"


@pytest.mark.parametrize("model", MODELS)
def test_exec_runs_a_program_per_connection(model: str, background: type[Background]) -> None:
    script = (
        "import os, sys; line = sys.stdin.readline(); "
        "print(os.environ['PROTO'], os.environ['TCPREMOTEIP'], os.environ['TCPREMOTEPORT'], "
        "os.environ['TCPLOCALIP'], os.environ['TCPLOCALPORT'], line.strip().upper())"
    )
    server, address = start(
        background,
        "--model",
        model,
        "tcp://127.0.0.1:0",
        "exec",
        "--",
        sys.executable,
        "-c",
        script,
    )
    with socketeer.connect(address, timeout=10) as conn:
        conn.send_line("shout")
        reply = conn.recv_line().decode().split()
        assert conn.recv() == b""
        assert reply == [
            "TCP",
            "127.0.0.1",
            str(conn.local.port),
            "127.0.0.1",  # type: ignore[union-attr]
            str(socketeer.Address.parse(address).port),
            "SHOUT",
        ]
    _, err, code = stop(server)
    assert code == 0, err


def test_exec_half_close_like_sort(background: type[Background]) -> None:
    server, address = start(background, "tcp://127.0.0.1:0", "exec", "--", "sort")
    result = run_cli("connect", address, input=b"pear\napple\nfig\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"apple\nfig\npear\n"
    stop(server)


@pytest.mark.parametrize("model", ["thread", "async"])
def test_chat_names_and_notices(model: str, background: type[Background]) -> None:
    server, address = start(background, "--model", model, "tcp://127.0.0.1:0", "chat")
    with socketeer.connect(address, timeout=10) as alice:
        assert alice.recv_line() == b"* you are user1"
        with socketeer.connect(address, timeout=10) as bob:
            assert bob.recv_line() == b"* you are user2"
            assert alice.recv_line() == b"* user2 joined"
            alice.send_line("hello bob")
            assert bob.recv_line() == b"<user1> hello bob"
            bob.send_line("hi alice")
            assert alice.recv_line() == b"<user2> hi alice"
        assert alice.recv_line() == b"* user2 left"
    stop(server)


@pytest.mark.parametrize("model", ["thread", "async"])
def test_broker_relays_raw_bytes_to_the_others(model: str, background: type[Background]) -> None:
    server, address = start(background, "--model", model, "tcp://127.0.0.1:0", "broker")
    clients = [socketeer.connect(address, timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)  # all three joined before the first message
        clients[0].send(b"\x00\x01binary")
        for other in clients[1:]:
            assert other.recv_exactly(8) == b"\x00\x01binary"
        clients[0].send(b"!")  # the sender itself hears nothing: this arrives first
        clients[1].send(b"?")
        assert clients[0].recv_exactly(1) == b"?"
    finally:
        for client in clients:
            client.close()
    stop(server)


def test_user_handlers_sync_async_and_datagram(
    background: type[Background], tmp_path: Path
) -> None:
    (tmp_path / "myhandlers.py").write_text(
        "def upper(conn):\n"
        "    for line in conn:\n"
        "        conn.send_line(line.upper())\n"
        "async def reverse(conn):\n"
        "    async for line in conn:\n"
        "        await conn.send_line(line[::-1])\n"
        "def dgram(data, sender, endpoint):\n"
        "    endpoint.send(data[::-1], to=sender)\n"
    )
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    cases = [
        ("thread", "tcp://127.0.0.1:0", "myhandlers:upper", b"abc", b"ABC"),
        ("async", "tcp://127.0.0.1:0", "myhandlers:reverse", b"abc", b"cba"),
    ]
    for model, bind, spec, send, expect in cases:
        server = background(
            [*SOCKETEER, "serve", "--model", model, bind, spec], env=env, stdin=subprocess.DEVNULL
        )
        address = server.wait_listening()
        with socketeer.connect(address, timeout=10) as conn:
            conn.send_line(send)
            assert conn.recv_line() == expect
        stop(server)
    server = background(
        [*SOCKETEER, "serve", "udp://127.0.0.1:0", "myhandlers:dgram"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    with socketeer.open_datagram(server.wait_listening(), timeout=10) as endpoint:
        endpoint.send(b"xyz")
        assert endpoint.recv()[0] == b"zyx"
    stop(server)


# -- limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_max_connections_closes_the_extra_client(model: str, background: type[Background]) -> None:
    server, address = start(
        background, "--model", model, "--max-conns", "1", "tcp://127.0.0.1:0", "echo"
    )
    with socketeer.connect(address, timeout=10) as first:
        first.send_line("one")
        assert first.recv_line() == b"one"
        with socketeer.connect(address, timeout=10) as second:
            assert second.recv() == b""  # accepted and closed at once
        first.send_line("still served")
        assert first.recv_line() == b"still served"
    _, err, _ = stop(server)
    assert "refused tcp://127.0.0.1:" in err
    assert "1 connections open (max_connections)" in err


@pytest.mark.parametrize("model", MODELS)
def test_idle_timeout_closes_a_silent_client(model: str, background: type[Background]) -> None:
    server, address = start(background, "--model", model, "-i", "0.5", "tcp://127.0.0.1:0", "echo")
    with socketeer.connect(address, timeout=10) as silent:
        started = time.monotonic()
        assert silent.recv() == b""
        assert 0.4 < time.monotonic() - started < 5
    with socketeer.connect(address, timeout=10) as talker:  # others are still served
        talker.send_line("x")
        assert talker.recv_line() == b"x"
    stop(server)


@pytest.mark.parametrize("model", MODELS)
def test_allow_and_deny(model: str, background: type[Background]) -> None:
    server, address = start(
        background,
        "--model",
        model,
        "--deny",
        "127.0.0.2/32",
        "--allow",
        "127.0.0.0/8",
        "tcp://127.0.0.1:0",
        "echo",
    )
    port = socketeer.Address.parse(address).port
    denied = socket.socket()
    denied.settimeout(10)
    try:
        denied.bind(("127.0.0.2", 0))
        denied.connect(("127.0.0.1", port))
        assert denied.recv(10) == b""  # closed before the handler ran
    finally:
        denied.close()
    with socketeer.connect(address, timeout=10) as allowed:
        allowed.send_line("ok")
        assert allowed.recv_line() == b"ok"
    _, err, _ = stop(server)
    assert "refused tcp://127.0.0.2:" in err
    assert "denied by --allow/--deny" in err


@pytest.mark.parametrize("model", MODELS)
def test_reset_mid_line_does_not_hurt_the_others(model: str, background: type[Background]) -> None:
    server, address = start(background, "--model", model, "tcp://127.0.0.1:0", "ack")
    rude = socketeer.connect(address, timeout=10)
    rude.send(b"half a li")
    rude.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rude.close()
    with socketeer.connect(address, timeout=10) as polite:
        polite.send_line("whole")
        assert polite.recv_line() == b"I got your message"
    _, err, code = stop(server)
    assert code == 0
    assert "Traceback" not in err


def test_json_log_lines(background: type[Background]) -> None:
    server, address = start(background, "--log-format", "json", "tcp://127.0.0.1:0", "echo")
    with socketeer.connect(address, timeout=10) as conn:
        conn.send(b"12345")
        conn.shutdown_write()
        assert conn.recv_exactly(5) == b"12345"
    deadline = time.monotonic() + 10
    _, err, _ = stop(server)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    closed = [e for e in events if e.get("event") == "closed"]
    assert time.monotonic() < deadline
    assert closed, err
    assert closed[0]["bytes_in"] == 5
    assert closed[0]["bytes_out"] == 5
    assert closed[0]["peer"].startswith("tcp://127.0.0.1:")


# -- socket activation ------------------------------------------------------------------


def test_socket_activation_listen_fds(tmp_path: Path) -> None:
    """What systemd does: the listening socket as fd 3, LISTEN_FDS=1, LISTEN_PID=the server."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    launcher = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
        "argv = [sys.executable, '-m', 'socketeer', 'serve', 'systemd:', 'echo']\n"
        "os.execv(sys.executable, argv)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, str(listener.fileno())],
        pass_fds=[listener.fileno()],
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    listener.close()  # only the server holds it now
    try:
        assert proc.stderr is not None
        assert f"listening on tcp://127.0.0.1:{port}".encode() in proc.stderr.readline()
        with socketeer.connect(f"127.0.0.1:{port}", timeout=10) as conn:
            conn.send_line("activated")
            assert conn.recv_line() == b"activated"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_socket_activation_for_another_pid_is_refused() -> None:
    env = cli_env()
    env.update(LISTEN_FDS="1", LISTEN_PID="1")
    result = subprocess.run(
        [*SOCKETEER, "serve", "systemd:", "echo"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"LISTEN_PID is 1, not this process" in result.stderr


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tcp://127.0.0.1:0", "frobnicate"], "unknown handler 'frobnicate'"),
        (["tcp://127.0.0.1:0", "no_such_module_xyz:handle"], "cannot import no_such_module_xyz"),
        (["tcp://127.0.0.1:0", "socketeer.framing:no_such_function"], "has no no_such_function"),
        (["tcp://127.0.0.1:0", "exec", "--", "no-such-program-xyz"], "program not found"),
        (["tcp://127.0.0.1:0", "exec"], "exec needs a program"),
        (["udp://127.0.0.1:0", "exec", "--", "cat"], "does not serve datagram sockets"),
        (["udp://127.0.0.1:0", "chat"], "does not serve datagram sockets"),
        (["--model", "fork", "tcp://127.0.0.1:0", "chat"], "needs the thread or async model"),
        (["--workers", "2", "tcp://127.0.0.1:0", "broker"], "needs workers=1"),
        (
            ["--model", "async", "tcp://127.0.0.1:0", "socketeer.framing:strip_eol"],
            "a plain function needs --model thread or fork",
        ),
        (["tcp://127.0.0.1:0", "echo", "extra"], "handler echo takes no arguments"),
        (["--model", "green", "tcp://127.0.0.1:0", "echo"], "invalid choice"),
        (["--allow", "not-a-net", "tcp://127.0.0.1:0", "echo"], "bad network"),
        ([f"tcp://127.0.0.1:{1 << 16}", "echo"], "bad address"),  # one past the last port
    ],
)
def test_bad_serve_input_exits_2(argv: list[str], message: str) -> None:
    result = run_cli("serve", *argv)
    assert result.returncode == 2, result.stderr
    text = result.stderr.decode()
    assert text.startswith("socketeer: error: ")
    assert text.count("\n") == 1, text
    assert message in text


def test_serve_on_a_port_in_use_exits_1() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as taken:
        result = run_cli("serve", str(taken.address), "echo")
    assert result.returncode == 1
    assert b"address in use" in result.stderr


# -- interop ----------------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("peer", ["ncat", "socat", "python"])
@pytest.mark.parametrize("handler", ["echo", "ack", "chat"])
def test_peer_clients(peer: str, handler: str, background: type[Background]) -> None:
    server, address = start(background, "tcp://127.0.0.1:0", handler)
    port = socketeer.Address.parse(address).port
    request = b"hello from a peer\n"
    expected = {
        "echo": b"hello from a peer\n",
        "ack": b"I got your message\n",
        "chat": b"* you are user1\n",
    }[handler]
    if peer == "python":
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while data := sock.recv(4096):
                chunks.append(data)
        reply = b"".join(chunks)
    else:
        if peer == "ncat":
            argv = [require_peer("ncat"), "127.0.0.1", str(port)]
        else:
            argv = [require_peer("socat"), "-t", "2", "-", f"TCP:127.0.0.1:{port}"]
        reply = subprocess.run(
            argv, input=request, capture_output=True, timeout=30, check=False
        ).stdout
    if handler == "chat":
        assert reply.startswith(expected)
    else:
        assert reply == expected
    stop(server)


def signal_thread(pid: int, tid: int, signum: int) -> None:
    """Send ``signum`` to one thread of ``pid`` (tgkill), as the kernel may pick any."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("this C library has no tgkill")
    if libc.tgkill(pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def listening_on(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:``port`` (read from /proc, not by connecting)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return True
    return False


def worker_threads(pid: int, at_least: int) -> list[int]:
    """The thread ids of ``pid`` other than its main thread, once there are ``at_least``."""
    deadline = time.monotonic() + 10
    while True:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        if len(tids) >= at_least or time.monotonic() > deadline:
            return tids
        time.sleep(0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tgkill and /proc are Linux's")
@pytest.mark.parametrize("command", ["serve", "relay"])
def test_a_sigterm_taken_by_a_worker_thread_still_stops_the_server(
    command: str, background: type[Background]
) -> None:
    """The kernel gives a process's signal to any thread; the main loop must still wake."""
    if command == "serve":
        server, address = start(background, "--model", "thread", "tcp://127.0.0.1:0", "echo")
    else:
        _, upstream = start(background, "tcp://127.0.0.1:0", "echo")
        server = background(
            [*SOCKETEER, "relay", "--model", "thread", "tcp://127.0.0.1:0", upstream],
            stdin=subprocess.DEVNULL,
        )
        address = server.wait_listening()
    clients = [socketeer.connect(address, timeout=10) for _ in range(3)]
    try:
        for conn in clients:  # each one served: its thread is running
            conn.send(b"ping")
            assert conn.recv_exactly(4) == b"ping"
        tids = worker_threads(server.proc.pid, at_least=3)
        assert tids, "no worker thread to take the signal"
        signal_thread(server.proc.pid, tids[-1], signal.SIGTERM)
        # Watched from outside: a connect would wake the loop by itself.
        deadline = time.monotonic() + 5
        while listening_on(port_of(address)):  # the main loop woke: it closed its listener
            assert time.monotonic() < deadline, "the stop was not noticed"
            time.sleep(0.05)
    finally:
        for conn in clients:
            conn.close()  # the grace period ends as they leave
    _, err, code = server.finish(timeout=15)
    assert code == 0, err
    assert b"Traceback" not in err
