"""A relay is a server (SPEC §4, §6): grace, workers, scale, PROXY chains, TLS on
inherited sockets, running out of descriptors."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme

import socketeer
from socketeer.proxyproto import encode_v1, encode_v2, parse_proxy_header

from .conftest import SOCKETEER, Background, cli_env, limit_descriptors
from .test_relay import fd_count, start_relay

MODELS = ["thread", "fork", "async"]


class SlowSink:
    """An upstream that reads slowly and hashes what it gets (a transfer that takes a while)."""

    def __init__(self, delay: float = 0.002) -> None:
        self.listener = socketeer.listen("tcp://127.0.0.1:0")
        self.address = str(self.listener.address)
        self.delay = delay
        self.result: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.listener.accept(timeout=30) as conn:
            h, total = hashlib.sha256(), 0
            conn.timeout = 60
            while data := conn.recv(65536):
                h.update(data)
                total += len(data)
                time.sleep(self.delay)
            self.result.append((h.hexdigest(), total))

    def close(self) -> None:
        self.thread.join(60)
        self.listener.close()


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_sigterm_lets_a_transfer_in_progress_finish(
    model: str, background: type[Background]
) -> None:
    sink = SlowSink()
    relay, address = start_relay(
        background, "--model", model, "--grace", "30", "tcp://127.0.0.1:0", sink.address
    )
    payload = hashlib.shake_256(b"grace").digest(8 << 20)
    with socketeer.connect(address, timeout=10) as client:
        sender = threading.Thread(
            target=lambda: (client.send(payload), client.shutdown_write()), daemon=True
        )
        sender.start()
        time.sleep(0.3)  # in flight: the sink reads slowly
        relay.proc.send_signal(signal.SIGTERM)
        sender.join(60)
        sink.close()
        assert client.recv() == b""  # the pair ended once both ways were done
    assert sink.result == [(hashlib.sha256(payload).hexdigest(), len(payload))]
    _, err, code = relay.finish(timeout=30)
    assert code == 0, err
    assert b"Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_second_sigint_cuts_them(model: str, background: type[Background]) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        relay, address = start_relay(
            background,
            "--model",
            model,
            "--grace",
            "30",
            "tcp://127.0.0.1:0",
            str(upstream.address),
        )
        with socketeer.connect(address, timeout=10) as client, upstream.accept(timeout=10) as far:
            client.send(b"x")
            assert far.recv_exactly(1) == b"x"
            started = time.monotonic()
            relay.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            relay.proc.send_signal(signal.SIGINT)
            client.timeout = 10
            assert client.recv() == b""
        _, err, code = relay.finish(timeout=30)
        assert time.monotonic() - started < 10
        assert code == 0, err
        assert b"Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_two_workers_carry_20_mb_each_way(model: str, background: type[Background]) -> None:
    echo = background(
        [*SOCKETEER, "serve", "--model", "async", "tcp://127.0.0.1:0", "echo"],
        stdin=subprocess.DEVNULL,
    )
    relay, address = start_relay(
        background, "--model", model, "--workers", "2", "tcp://127.0.0.1:0", echo.wait_listening()
    )
    results: list[bool] = []

    def one(i: int) -> None:
        payload = hashlib.shake_256(b"worker %d" % i).digest(20 << 20)
        with socketeer.connect(address, timeout=30) as conn:
            conn.timeout = 60
            sender = threading.Thread(
                target=lambda: (conn.send(payload), conn.shutdown_write()), daemon=True
            )
            sender.start()
            back = conn.recv_exactly(len(payload))
            sender.join(60)
            results.append(back == payload and conn.recv() == b"")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [True] * 4
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0, err


# -- scale ------------------------------------------------------------------------------------


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest.mark.slow
def test_5000_idle_pairs_on_one_loop(background: type[Background]) -> None:
    pairs = 5000
    limit = _raise_nofile(3 * pairs + 200)  # our clients and the echo server's sockets
    if limit < 2 * pairs + 100:
        pytest.skip(f"the descriptor limit ({limit}) cannot hold {pairs} pairs here")
    # The echo server and the relay inherit the raised limit.
    echo = background(
        [*SOCKETEER, "serve", "--model", "async", "-q", "tcp://127.0.0.1:0", "echo"],
        stdin=subprocess.DEVNULL,
    )
    from .test_relay import _listening_quietly

    echo_address = _listening_quietly(echo)
    relay = background(
        [*SOCKETEER, "relay", "--model", "async", "-q", "tcp://127.0.0.1:0", echo_address],
        stdin=subprocess.DEVNULL,
    )
    address = _listening_quietly(relay)
    pid = relay.proc.pid
    time.sleep(0.3)
    threads_before, fds_before = thread_count(pid), fd_count(pid)
    port = socketeer.Address.parse(address).port
    clients: list[socket.socket] = []
    try:
        # In waves of 1,000, so no listen backlog on the way (the relay's 4,096,
        # the echo server's 1,024) overflows into SYN retries.
        deadline = time.monotonic() + 90
        for wave in range(0, pairs, 1000):
            for _ in range(min(1000, pairs - wave)):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                clients.append(sock)
            while fd_count(pid) < fds_before + 2 * len(clients):
                assert time.monotonic() < deadline, f"{fd_count(pid) - fds_before} descriptors"
                time.sleep(0.1)
        assert fd_count(pid) <= fds_before + 2 * pairs + 16
        assert thread_count(pid) == threads_before
        # All of them still work: each echoes once.
        for i, sock in enumerate(clients):
            sock.setblocking(True)
            sock.settimeout(30)
            sock.sendall(b"%d\n" % i)
        for i, sock in enumerate(clients):
            expected = b"%d\n" % i
            got = b""
            while len(got) < len(expected):
                chunk = sock.recv(64)
                assert chunk, f"pair {i} closed"
                got += chunk
            assert got == expected
        assert thread_count(pid) == threads_before
    finally:
        for sock in clients:
            sock.close()
    deadline = time.monotonic() + 60
    while fd_count(pid) > fds_before + 2:
        assert time.monotonic() < deadline, (
            f"{fd_count(pid)} descriptors left, {fds_before} at start"
        )
        time.sleep(0.2)
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0, err
    assert b"Traceback" not in err


# -- the PROXY chain -----------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_chain_passes_the_original_client_on(
    version: str, model: str, background: type[Background]
) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        relay, address = start_relay(
            background,
            "--model",
            model,
            "--accept-proxy-protocol",
            "--proxy-protocol",
            version,
            "tcp://127.0.0.1:0",
            str(upstream.address),
        )
        balancer_says = socketeer.Address.parse("tcp://203.0.113.7:4242")
        front = socketeer.Address.parse("tcp://198.51.100.1:443")
        encode = encode_v1 if version == "v1" else encode_v2
        with socketeer.connect(address, timeout=10) as client:
            client.send(encode(balancer_says, front) + b"payload")
            with upstream.accept(timeout=10) as conn:
                conn.timeout = 10
                data = b""
                while (found := parse_proxy_header(data)) is None:
                    data += conn.recv()
                header, used = found
                rest = data[used:]
                while len(rest) < len(b"payload"):
                    rest += conn.recv()
        assert header.source == balancer_says  # not the relay's client (the balancer)
        assert header.destination == front
        assert rest == b"payload"
        relay.proc.terminate()
        relay.finish()


# -- TLS on an inherited socket ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("inherited-tls")
    ca = trustme.CA()
    ca_path, pem = folder / "ca.pem", folder / "server.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return str(ca_path), str(pem)


def test_listen_on_an_inherited_socket_wraps_tls(server_pem: tuple[str, str]) -> None:
    ca, pem = server_pem
    raw = socket.create_server(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    from socketeer.tls import TLSConfig

    fd = raw.detach()  # the listener owns the descriptor from here on
    with socketeer.listen(f"fd:{fd}", tls=TLSConfig(cert=pem)) as listener:
        result: list[bytes] = []

        def serve() -> None:
            with listener.accept(timeout=10) as conn:
                assert conn.is_tls
                result.append(conn.recv_line())

        t = threading.Thread(target=serve)
        t.start()
        with socketeer.connect(f"tls://127.0.0.1:{port}", tls=TLSConfig(ca=ca), timeout=10) as c:
            c.send_line("over TLS")
        t.join(10)
    assert result == [b"over TLS"]


LAUNCHER = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'socketeer', *sys.argv[2:]])\n"
)


@pytest.mark.parametrize("address", ["systemd:", "fd:3"])
@pytest.mark.parametrize("command", ["serve", "relay"])
def test_tls_serve_and_relay_on_socket_activation(
    address: str, command: str, server_pem: tuple[str, str], background: type[Background]
) -> None:
    ca, pem = server_pem
    echo = background(
        [*SOCKETEER, "serve", "--model", "async", "tcp://127.0.0.1:0", "echo"],
        stdin=subprocess.DEVNULL,
    )
    tail = ["echo"] if command == "serve" else [echo.wait_listening()]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCHER,
            str(listener.fileno()),
            command,
            "--cert",
            pem,
            address,
            *tail,
        ],
        pass_fds=[listener.fileno()],
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    listener.close()
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"listening on tcp://127.0.0.1:{port}".encode() in line, line
        from socketeer.tls import TLSConfig

        with socketeer.connect(f"tls://127.0.0.1:{port}", tls=TLSConfig(ca=ca), timeout=10) as conn:
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


# -- running out of descriptors -----------------------------------------------------------------


# The fork model's parent holds no client's descriptors (each child has its own
# table), so only the thread and async models can run out in the parent.
@pytest.mark.parametrize("model", ["thread", "async"])
def test_out_of_descriptors_closes_the_client_and_keeps_serving(model: str, tmp_path: Path) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        stop = threading.Event()

        def hold_until_eof(conn: socketeer.Connection) -> None:
            with conn:
                conn.timeout = 30
                with contextlib.suppress(socketeer.SocketeerError):
                    while conn.recv():
                        pass

        def accept_all() -> None:
            while not stop.is_set():
                try:
                    conn = upstream.accept(timeout=0.2)
                except socketeer.Timeout:
                    continue
                threading.Thread(target=hold_until_eof, args=(conn,), daemon=True).start()

        acceptor = threading.Thread(target=accept_all, daemon=True)
        acceptor.start()
        err_path = tmp_path / "err"
        with err_path.open("wb") as err_file:
            proc = subprocess.Popen(
                [*SOCKETEER, "relay", "--model", model, "tcp://127.0.0.1:0", str(upstream.address)],
                stdin=subprocess.DEVNULL,
                stderr=err_file,
                env=cli_env(),
                preexec_fn=limit_descriptors(48),  # noqa: PLW1509 - the limit must be set before exec
            )
        clients: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 15
            while b"listening on" not in err_path.read_bytes():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            text = err_path.read_bytes().decode()
            port = int(text.split("listening on tcp://127.0.0.1:")[1].split()[0])
            for _ in range(60):  # far more pairs than 48 descriptors can hold
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                clients.append(sock)
            # Some were closed at once, and the relay said so in one line, no traceback.
            deadline = time.monotonic() + 20
            while "a client was closed at once" not in err_path.read_text() and (
                "too many open files" not in err_path.read_text()
            ):
                assert time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.1)
            for sock in clients:
                sock.close()
            clients.clear()
            # Descriptors are free again: a new client is served.
            deadline = time.monotonic() + 20
            while True:
                with socketeer.connect(f"tcp://127.0.0.1:{port}", timeout=10) as conn:
                    conn.timeout = 2
                    try:
                        conn.send(b"ping")
                        conn.recv(1)  # the upstream holds it open: a timeout means relayed
                    except socketeer.Timeout:
                        break
                    except (socketeer.ConnectionReset, socketeer.ConnectionClosed):
                        pass  # still closed at once: the relay's pairs are ending
                assert time.monotonic() < deadline, "not served after descriptors freed up"
                time.sleep(0.2)
            assert proc.poll() is None  # still serving
        finally:
            for sock in clients:
                sock.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            stop.set()
            acceptor.join(10)
        err = err_path.read_text()
        assert "Traceback" not in err, err
        assert proc.returncode == 0, err
