"""The datagram fast path (SPEC §4, §6): servers and relays at the kernel's pace keep every
behaviour — the right sender, allow/deny, user handlers, ack, workers, Unix datagrams,
64 KB datagrams, failing handlers, sessions for 1,000 senders, expiry and the table bound."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import socketeer

from .conftest import SOCKETEER, Background, cli_env, fd_count, port_of

MODELS = ["thread", "fork", "async"]


def start(
    background: type[Background], *argv: str, env: dict[str, str] | None = None
) -> tuple[Background, str]:
    server = background([*SOCKETEER, *argv], stdin=subprocess.DEVNULL, env=env)
    return server, server.wait_listening()


def stop(server: Background) -> tuple[bytes, str, int]:
    server.proc.send_signal(signal.SIGTERM)
    out, err, code = server.finish(timeout=30)
    return out, err.decode(), code


def udp_client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


@pytest.mark.parametrize("model", MODELS)
def test_each_of_many_senders_gets_its_own_echo(model: str, background: type[Background]) -> None:
    server, address = start(background, "serve", "--model", model, "udp://127.0.0.1:0", "echo")
    clients = [udp_client() for _ in range(32)]
    try:
        for round_no in range(3):
            for i, client in enumerate(clients):
                client.sendto(b"%d:%d" % (i, round_no), ("127.0.0.1", port_of(address)))
            for i, client in enumerate(clients):
                assert client.recv(100) == b"%d:%d" % (i, round_no)
    finally:
        for client in clients:
            client.close()
    _, err, code = stop(server)
    assert code == 0, err


def test_64_kb_datagrams_come_back_whole(background: type[Background]) -> None:
    server, address = start(background, "serve", "udp://127.0.0.1:0", "echo")
    payload = os.urandom(65_000)
    with udp_client() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.sendto(payload, ("127.0.0.1", port_of(address)))
        assert client.recv(70_000) == payload
    stop(server)


def test_allow_and_deny_on_datagrams(background: type[Background]) -> None:
    server, address = start(background, "serve", "--deny", "127.0.0.2", "udp://127.0.0.1:0", "echo")
    port = port_of(address)
    with udp_client() as allowed:
        allowed.sendto(b"in", ("127.0.0.1", port))
        assert allowed.recv(10) == b"in"
    denied = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        denied.bind(("127.0.0.2", 0))
        denied.settimeout(0.5)
        denied.sendto(b"out", ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            denied.recv(10)
    finally:
        denied.close()
    server.wait_for_stderr(b"denied by --allow/--deny")
    stop(server)


def test_ack_prints_and_answers(background: type[Background]) -> None:
    server = background([*SOCKETEER, "serve", "udp://127.0.0.1:0", "ack"], stdin=subprocess.DEVNULL)
    address = server.wait_listening()
    with udp_client() as client:
        client.sendto(b"hello\n", ("127.0.0.1", port_of(address)))
        assert client.recv(100) == b"I got your message\n"
    out, _, code = stop(server)
    assert out == b"Here is the message: hello\n"
    assert code == 0


def test_a_failing_user_handler_is_logged_and_serving_goes_on(
    background: type[Background], tmp_path: Path
) -> None:
    (tmp_path / "flaky.py").write_text(
        "def handle(data, sender, endpoint):\n"
        "    if data == b'boom':\n"
        "        raise RuntimeError('boom')\n"
        "    endpoint.send(data.upper(), to=sender)\n"
    )
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    server, address = start(background, "serve", "udp://127.0.0.1:0", "flaky:handle", env=env)
    with udp_client() as client:
        client.sendto(b"boom", ("127.0.0.1", port_of(address)))
        server.wait_for_stderr(b"handler flaky:handle failed")
        client.sendto(b"fine", ("127.0.0.1", port_of(address)))
        assert client.recv(10) == b"FINE"
    _, err, code = stop(server)
    assert code == 0, err


def test_workers_share_the_senders(background: type[Background]) -> None:
    server, address = start(background, "serve", "--workers", "2", "udp://127.0.0.1:0", "echo")
    port = port_of(address)
    clients = [udp_client() for _ in range(64)]
    try:
        for i, client in enumerate(clients):
            client.sendto(b"w%d" % i, ("127.0.0.1", port))
        for i, client in enumerate(clients):
            assert client.recv(10) == b"w%d" % i
    finally:
        for client in clients:
            client.close()
    # Two sockets in one SO_REUSEPORT group, one per worker, each with its share.
    pids = [
        int(p)
        for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
        .read_text()
        .split()
    ]
    assert len(pids) == 2
    _, err, code = stop(server)
    assert code == 0, err


def test_unix_datagram_server_answers_autobound_clients(
    background: type[Background], sockdir: Path
) -> None:
    path = sockdir / "dgram.sock"
    server, address = start(background, "serve", f"unix-dgram:{path}", "echo")
    for i in range(5):
        with socketeer.open_datagram(address, timeout=5) as client:  # autobound: a name to answer
            client.send(b"unix %d" % i)
            data, _ = client.recv()
            assert data == b"unix %d" % i
    stop(server)
    assert not path.exists()


# -- relays ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_1000_senders_through_a_relay_each_get_only_their_replies(
    background: type[Background],
) -> None:
    _echo, echo_address = start(background, "serve", "udp://127.0.0.1:0", "echo")
    relay, address = start(
        background, "relay", "--max-sessions", "2000", "udp://127.0.0.1:0", echo_address
    )
    port = port_of(address)
    clients = [udp_client() for _ in range(1000)]
    try:
        # 1,000 sessions at once, their datagrams in waves of 100: a burst of
        # 1,000 would overflow a default socket buffer, and UDP drops then.
        for wave in range(0, 1000, 100):
            for i in range(wave, wave + 100):
                clients[i].sendto(b"sender %d" % i, ("127.0.0.1", port))
            for i in range(wave, wave + 100):
                assert clients[i].recv(100) == b"sender %d" % i
        # Every session is still open: a second round goes to the same 1,000.
        for wave in range(0, 1000, 100):
            for i in range(wave, wave + 100):
                clients[i].sendto(b"again %d" % i, ("127.0.0.1", port))
            for i in range(wave, wave + 100):
                assert clients[i].recv(100) == b"again %d" % i
    finally:
        for client in clients:
            client.close()
    _, err, code = stop(relay)
    assert code == 0, err


def test_expired_sessions_free_their_sockets(background: type[Background]) -> None:
    _echo, echo_address = start(background, "serve", "udp://127.0.0.1:0", "echo")
    relay, address = start(
        background, "relay", "-v", "-i", "0.5", "udp://127.0.0.1:0", echo_address
    )
    pid = relay.proc.pid
    time.sleep(0.2)
    baseline = fd_count(pid)
    clients = [udp_client() for _ in range(20)]
    try:
        for client in clients:
            client.sendto(b"x", ("127.0.0.1", port_of(address)))
            assert client.recv(10) == b"x"
        assert fd_count(pid) == baseline + 20  # a socket per session
        relay.wait_for_stderr(b"expired after 0.5s idle", count=20)
        deadline = time.monotonic() + 10
        while fd_count(pid) != baseline:
            assert time.monotonic() < deadline, f"{fd_count(pid)} descriptors, {baseline} at start"
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()
    stop(relay)


def test_the_table_bound_holds_under_a_flood(background: type[Background]) -> None:
    _echo, echo_address = start(background, "serve", "udp://127.0.0.1:0", "discard")
    relay, address = start(
        background, "relay", "--max-sessions", "8", "udp://127.0.0.1:0", echo_address
    )
    pid = relay.proc.pid
    time.sleep(0.2)
    baseline = fd_count(pid)
    port = port_of(address)
    most = 0
    for _ in range(10):
        clients = [udp_client() for _ in range(50)]
        for client in clients:
            client.sendto(b"flood", ("127.0.0.1", port))
        for client in clients:
            client.close()
        most = max(most, fd_count(pid) - baseline)
    assert most <= 8
    relay.wait_for_stderr(b"session table full (8): evicting")
    _, err, code = stop(relay)
    assert code == 0, err
    assert "Traceback" not in err
