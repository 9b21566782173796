"""Real components in front of and behind socketeer, started from generated configs.

HAProxy (``mode tcp``, PROXY v1/v2, health checks) in front of a relay, nginx
``stream`` with ``proxy_protocol on`` behind one, ``systemd-socket-activate``
starting socketeer on the first connection, and Redis with ``redis-benchmark``
through a TCP to Unix relay. Every program runs on loopback, on ports it is
given (picked free by binding port 0), in a temporary folder, and is stopped
at teardown.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import socketeer
from socketeer.proxyproto import parse_proxy_header

from .conftest import (
    SOCKETEER,
    Background,
    ServingThread,
    cli_env,
    fd_count,
    free_port,
    require_peer,
)

pytestmark = pytest.mark.peer


def wait_accepting(port: int, timeout: float = 15) -> None:
    """Until something accepts on 127.0.0.1:``port`` (a program's readiness)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)


@contextlib.contextmanager
def program(argv: list[str], *, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A peer program in its own process group, killed and reaped at the end."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def start_relay(background: type[Background], *argv: str) -> tuple[Background, str]:
    relay = background([*SOCKETEER, "relay", *argv], stdin=subprocess.DEVNULL)
    return relay, relay.wait_listening()


def settles_to(pid: int, limit: int, timeout: float = 10) -> bool:
    """Whether ``pid``'s descriptors come down to ``limit`` (spare splice pipes are
    kept for a second after use, so a count right after traffic is high)."""
    deadline = time.monotonic() + timeout
    while fd_count(pid) > limit:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _name_the_header_source(conn: socketeer.Connection) -> None:
    """Read the PROXY header the client starts with, answer with the source it
    names, then echo the rest."""
    data = b""
    while (found := parse_proxy_header(data)) is None:
        more = conn.recv()
        if not more:
            return
        data += more
    header, used = found
    conn.send_line(str(header.source).encode())
    conn.send(data[used:])
    while chunk := conn.recv():
        conn.send(chunk)


@pytest.fixture
def header_echo() -> Iterator[ServingThread]:
    upstream = ServingThread(_name_the_header_source)
    yield upstream
    upstream.close()


def haproxy_config(tmp_path: Path, front: int, relay_port: int, send: str) -> Path:
    path = tmp_path / "haproxy.cfg"
    path.write_text(
        f"""global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{front}
    default_backend relays
backend relays
    server relay 127.0.0.1:{relay_port} {send} check inter 100ms fall 3 rise 1
"""
    )
    return path


@pytest.mark.parametrize("send", ["send-proxy-v2", "send-proxy"])
@pytest.mark.parametrize("model", ["async", "thread"])
def test_haproxy_in_front_the_upstream_sees_the_real_client(
    send: str, model: str, tmp_path: Path, background: type[Background], header_echo: ServingThread
) -> None:
    haproxy = require_peer("haproxy")
    relay, address = start_relay(
        background,
        "--model",
        model,
        "--accept-proxy-protocol",
        "--proxy-protocol",
        "v2",
        "tcp://127.0.0.1:0",
        header_echo.address,
    )
    relay_port = socketeer.Address.parse(address).port
    assert relay_port is not None
    front = free_port()
    config = haproxy_config(tmp_path, front, relay_port, send)
    with program([haproxy, "-db", "-f", str(config)]):
        wait_accepting(front)
        # Health checks every 100 ms: plain connects that send nothing.
        time.sleep(1.0)
        baseline = fd_count(relay.proc.pid)
        for _ in range(3):
            client = socket.socket()
            client.bind(("127.0.0.2", 0))  # a client HAProxy is not
            client.settimeout(10)
            client.connect(("127.0.0.1", front))
            with client, client.makefile("rb") as reader:
                client.sendall(b"ping\n")
                named = reader.readline().strip().decode()
                assert named == f"tcp://127.0.0.2:{client.getsockname()[1]}"
                assert reader.readline() == b"ping\n"
        time.sleep(0.5)  # more checks
        # One health check may be open at any moment.
        assert settles_to(relay.proc.pid, baseline + 1), fd_count(relay.proc.pid)
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0, err
    text = err.decode()
    assert "Traceback" not in text
    # The checks (dozens by now) are not warnings: nothing but the start line.
    assert text.strip().splitlines() == [f"socketeer: listening on {address}"], text


def test_haproxy_health_checks_leak_nothing(tmp_path: Path, background: type[Background]) -> None:
    haproxy = require_peer("haproxy")
    relay, address = start_relay(
        background, "-v", "--accept-proxy-protocol", "tcp://127.0.0.1:0", "exec:cat"
    )
    relay_port = socketeer.Address.parse(address).port
    assert relay_port is not None
    front = free_port()
    config = haproxy_config(tmp_path, front, relay_port, "send-proxy-v2")
    with program([haproxy, "-db", "-f", str(config)]):
        wait_accepting(front)
        relay.wait_for_stderr(b"0 bytes in, 0 bytes out", count=3)
        first = fd_count(relay.proc.pid)
        relay.wait_for_stderr(b"0 bytes in, 0 bytes out", count=15)
        assert settles_to(relay.proc.pid, first + 1), fd_count(relay.proc.pid)
        with socket.create_connection(("127.0.0.1", front), timeout=10) as client:
            client.sendall(b"through haproxy")
            client.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := client.recv(65536):
                got += chunk
        assert got == b"through haproxy"
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0
    assert b"Traceback" not in err
    assert b"warning" not in err.lower()


def test_nginx_behind_the_relay_logs_the_real_client(
    tmp_path: Path, background: type[Background]
) -> None:
    nginx = require_peer("nginx")
    module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
    load = f"load_module {module};" if module.exists() else ""
    if (
        not load
        and subprocess.run([nginx, "-V"], capture_output=True, check=False).stderr.find(
            b"--with-stream"
        )
        < 0
    ):
        pytest.skip("nginx has no stream module (apt-get install libnginx-mod-stream)")
    upstream = socketeer.listen("tcp://127.0.0.1:0")
    nginx_port = free_port()
    (tmp_path / "logs").mkdir()
    config = tmp_path / "nginx.conf"
    for version in ("v1", "v2"):
        log = tmp_path / f"stream-{version}.log"
        config.write_text(
            f"""{load}
worker_processes 1;
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 64; }}
stream {{
    log_format who '$proxy_protocol_addr:$proxy_protocol_port $remote_addr';
    server {{
        listen 127.0.0.1:{nginx_port} proxy_protocol;
        access_log {log} who;
        proxy_pass {upstream.address.host}:{upstream.address.port};
    }}
}}
"""
        )
        (tmp_path / "nginx.pid").unlink(missing_ok=True)
        with program([nginx, "-p", str(tmp_path), "-c", str(config)]):
            # Ready when its pid file is written (after it binds): a probe
            # connect would be one more client, without a PROXY header.
            pid_file = tmp_path / "nginx.pid"
            deadline = time.monotonic() + 15
            while not pid_file.exists():
                assert time.monotonic() < deadline, (tmp_path / "error.log").read_text()
                time.sleep(0.05)
            relay, address = start_relay(
                background,
                "--proxy-protocol",
                version,
                "tcp://127.0.0.1:0",
                f"tcp://127.0.0.1:{nginx_port}",
            )
            client = socket.socket()
            client.bind(("127.0.0.3", 0))
            client.settimeout(10)
            client.connect(("127.0.0.1", socketeer.Address.parse(address).port))
            client_port = client.getsockname()[1]
            with client:
                client.sendall(b"hello nginx")
                with upstream.accept(timeout=10) as conn:
                    conn.timeout = 10
                    assert conn.recv_exactly(11) == b"hello nginx"
            relay.proc.terminate()
            relay.finish()
            deadline = time.monotonic() + 10
            while not log.exists() or not log.read_text().strip():
                assert time.monotonic() < deadline, "nginx logged nothing"
                time.sleep(0.05)
        line = log.read_text().strip().splitlines()[-1]
        # $proxy_protocol_addr is the relay's client; $remote_addr, the relay.
        assert line == f"127.0.0.3:{client_port} 127.0.0.1", line
    upstream.close()


@pytest.mark.parametrize("command", ["serve", "relay"])
def test_systemd_socket_activation_starts_socketeer_on_first_connection(
    command: str, tmp_path: Path
) -> None:
    activate = require_peer("systemd-socket-activate")
    port = free_port()
    if command == "serve":
        tail = [*SOCKETEER, "serve", "systemd:", "echo"]
    else:
        tail = [*SOCKETEER, "relay", "systemd:", "exec:cat"]
    env = cli_env()
    proc = subprocess.Popen(
        [activate, "-l", f"127.0.0.1:{port}", *[f"-E{k}={env[k]}" for k in ("PYTHONPATH",)], *tail],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "Listening on 127.0.0.1:PORT as 3."
        assert b"Listening" in line, line
        with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
            client.sendall(b"activated\n")
            client.shutdown(socket.SHUT_WR)
            client.settimeout(15)
            got = b""
            while chunk := client.recv(65536):
                got += chunk
        assert got == b"activated\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        rest = proc.stderr.read() if proc.stderr else b""
        if proc.stderr:
            proc.stderr.close()
    assert b"Traceback" not in rest


@pytest.mark.slow
def test_redis_benchmark_through_a_tcp_to_unix_relay(
    tmp_path: Path, background: type[Background]
) -> None:
    redis_server = require_peer("redis-server")
    redis_benchmark = require_peer("redis-benchmark")
    sock_path = tmp_path / "redis.sock"
    with program(
        [
            redis_server,
            "--port",
            "0",
            "--unixsocket",
            str(sock_path),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ]
    ):
        deadline = time.monotonic() + 15
        while not sock_path.exists():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        relay, address = start_relay(background, "tcp://127.0.0.1:0", f"unix:{sock_path}")
        port = socketeer.Address.parse(address).port
        done = subprocess.run(
            [redis_benchmark, "-h", "127.0.0.1", "-p", str(port), "-q", "-n", "20000", "-c", "20"],
            capture_output=True,
            timeout=300,
            check=False,
        )
        out = done.stdout.decode() + done.stderr.decode()
        assert done.returncode == 0, out
        assert re.search(r"SET: [\d.]+ requests per second", out), out
        assert re.search(r"GET: [\d.]+ requests per second", out), out
        assert "error" not in out.lower(), out
        relay.proc.terminate()
        _, err, code = relay.finish()
        assert code == 0 and b"Traceback" not in err, err


@pytest.mark.parametrize("send", ["send-proxy-v2", "send-proxy"])
@pytest.mark.parametrize("model", ["async", "thread", "fork"])
def test_haproxy_in_front_of_serve_the_log_names_the_real_client(
    send: str, model: str, tmp_path: Path, background: type[Background]
) -> None:
    haproxy = require_peer("haproxy")
    server = background(
        [
            *SOCKETEER,
            "serve",
            "--model",
            model,
            "--accept-proxy-protocol",
            "tcp://127.0.0.1:0",
            "echo",
        ],
        stdin=subprocess.DEVNULL,
    )
    port = socketeer.Address.parse(server.wait_listening()).port
    assert port is not None
    front = free_port()
    with program([haproxy, "-db", "-f", str(haproxy_config(tmp_path, front, port, send))]):
        wait_accepting(front)
        time.sleep(0.5)  # health checks: plain connects that send nothing
        baseline = fd_count(server.proc.pid)
        client = socket.socket()
        client.bind(("127.0.0.2", 0))  # a client HAProxy is not
        client.settimeout(10)
        client.connect(("127.0.0.1", front))
        client_port = client.getsockname()[1]
        with client:
            client.sendall(b"echo me")
            client.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := client.recv(65536):
                got += chunk
        assert got == b"echo me"
        server.wait_for_stderr(f"closed tcp://127.0.0.2:{client_port} ".encode())
        assert settles_to(server.proc.pid, baseline + 1), fd_count(server.proc.pid)
    server.proc.terminate()
    _, err, code = server.finish()
    assert code == 0, err
    assert b"Traceback" not in err
    assert b"warning" not in err.lower() and b"error" not in err.lower(), err[-2000:]
