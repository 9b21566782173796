"""The polled copiers: ``connect``/``listen``'s pump and the relay's TLS, stdio and exec pairs.

A half-close is not a close: when the peer's EOF arrives while stdin (or the
other side of a pair) is still being sent, the sending goes on to the end,
and a peer that resets before then is an error saying what it missed. Real
processes and sockets on loopback; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import socketeer
from socketeer._flow import Outlet, receive_ready
from socketeer.relay.stream import Pair, Side

from .conftest import SOCKETEER, Background, assert_one_line_error, cli_env, serve_once

SIZE = 20 * 1024 * 1024
LINGER_ZERO = struct.pack("ii", 1, 0)  # close() then sends RST


@dataclass
class Payload:
    path: Path
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Payload:
    """20 MB of random bytes, in memory and in a file (stdin for the commands)."""
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("pump") / "big.bin"
    path.write_bytes(data)
    return Payload(path, data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_to_eof(conn: socketeer.Connection) -> bytes:
    chunks = []
    while data := conn.recv():
        chunks.append(data)
    return b"".join(chunks)


def reset_after(size: int):  # type: ignore[no-untyped-def]
    """A handler that reads ``size`` bytes, then resets the connection."""

    def handler(conn: socketeer.Connection) -> None:
        conn.recv_exactly(size)
        conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        conn.close()

    return handler


# -- connect and listen: a half-close is not a close --------------------------------------


def test_listen_sends_all_of_stdin_to_a_client_that_half_closed(
    big: Payload, background: type[Background]
) -> None:
    with big.path.open("rb") as stdin:
        server = background([*SOCKETEER, "listen", "tcp://127.0.0.1:0"], stdin=stdin.fileno())
    address = server.wait_listening()
    client = subprocess.run(
        [*SOCKETEER, "connect", address],
        input=b"small",
        capture_output=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    out, err, code = server.finish(timeout=60)
    assert client.returncode == 0, client.stderr
    assert len(client.stdout) == SIZE
    assert sha256(client.stdout) == big.digest
    assert (out, code) == (b"small", 0), err


def test_connect_sends_all_of_stdin_to_a_server_that_half_closed(
    big: Payload, background: type[Background], tmp_path: Path
) -> None:
    received = tmp_path / "received.bin"
    with received.open("wb") as stdout:
        server = background([*SOCKETEER, "listen", "tcp://127.0.0.1:0"], stdout=stdout)
    address = server.wait_listening()
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"small")
    server.proc.stdin.close()  # the server half-closes first
    with big.path.open("rb") as stdin:
        client = subprocess.run(
            [*SOCKETEER, "connect", address],
            stdin=stdin,
            capture_output=True,
            env=cli_env(),
            timeout=60,
            check=False,
        )
    _, err, code = server.finish(timeout=60)
    assert client.returncode == 0, client.stderr
    assert client.stdout == b"small"
    assert code == 0, err
    assert sha256(received.read_bytes()) == big.digest


def test_stdin_that_comes_after_the_peers_eof_is_still_sent() -> None:
    got: list[bytes] = []

    def early_eof(conn: socketeer.Connection) -> None:
        conn.send(b"hi\n")
        conn.shutdown_write()
        got.append(read_to_eof(conn))

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, early_eof)
        proc = subprocess.Popen(
            [*SOCKETEER, "connect", str(listener.address)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline() == b"hi\n"  # the peer's EOF is in by now
            out, err = proc.communicate(b"typed later\n", timeout=30)
        finally:
            proc.kill()
            proc.wait(10)
    thread.join(10)
    assert proc.returncode == 0, err
    assert out == b""
    assert got == [b"typed later\n"]


def test_no_shutdown_finishes_when_the_outbox_is_out() -> None:
    payload = os.urandom(2 * 1024 * 1024)
    got: list[bytes] = []

    def early_eof(conn: socketeer.Connection) -> None:
        conn.send(b"x")
        conn.shutdown_write()
        got.append(read_to_eof(conn))  # the EOF is the client's close, not a SHUT_WR

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, early_eof)
        result = subprocess.run(
            [*SOCKETEER, "connect", "--no-shutdown", str(listener.address)],
            input=payload,
            capture_output=True,
            env=cli_env(),
            timeout=60,
            check=False,
        )
    thread.join(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"x"
    assert got == [payload]


def test_a_terminal_ends_the_session_with_the_peers_eof() -> None:
    def goodbye(conn: socketeer.Connection) -> None:
        conn.send(b"bye\n")

    controller, terminal = pty.openpty()
    try:
        with socketeer.listen("tcp://127.0.0.1:0") as listener:
            thread = serve_once(listener, goodbye)
            result = subprocess.run(
                [*SOCKETEER, "connect", str(listener.address)],
                stdin=terminal,
                capture_output=True,
                env=cli_env(),
                timeout=30,
                check=False,
            )
        thread.join(10)
    finally:
        os.close(terminal)
        os.close(controller)
    # No Ctrl-D needed: at a terminal the server's close ends the session.
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"bye\n"


@pytest.mark.parametrize("stdin_kind", ["file", "pipe"])
def test_connect_reset_before_stdin_is_through_exits_1(
    stdin_kind: str, big: Payload, tmp_path: Path
) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, reset_after(65536))
        argv = [*SOCKETEER, "connect", str(listener.address)]
        if stdin_kind == "file":
            with big.path.open("rb") as stdin:
                result = subprocess.run(
                    argv, stdin=stdin, capture_output=True, env=cli_env(), timeout=60, check=False
                )
        else:
            result = subprocess.run(
                argv, input=big.data, capture_output=True, env=cli_env(), timeout=60, check=False
            )
        thread.join(10)
    assert result.returncode == 1, result.stderr
    assert result.stdout == b""
    if stdin_kind == "file":  # the size of the rest is known: it is counted
        assert_one_line_error(
            result.stderr, "connection reset by peer", "bytes of stdin not delivered"
        )
        missed = int(result.stderr.split(b": ")[-1].split()[0])
        assert 0 < missed <= SIZE - 65536
    else:  # a pipe's rest is unknown: it says where delivery stopped
        assert_one_line_error(
            result.stderr, "connection reset by peer", "stdin not delivered after"
        )


def test_listen_reset_before_stdin_is_through_exits_1(
    big: Payload, background: type[Background]
) -> None:
    with big.path.open("rb") as stdin:
        server = background([*SOCKETEER, "listen", "tcp://127.0.0.1:0"], stdin=stdin.fileno())
    address = server.wait_listening()
    with socketeer.connect(address, timeout=10) as client:
        client.timeout = 30
        client.recv_exactly(65536)  # reads a little, then resets
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    _, err, code = server.finish(timeout=60)
    assert code == 1, err
    assert_one_line_error(err.split(b"\n", 1)[1], "connection reset by peer", "bytes of stdin")


# -- listen -k ---------------------------------------------------------------------------


def test_keep_open_half_closed_clients_stay_until_stdin_ends(
    background: type[Background],
) -> None:
    server = background([*SOCKETEER, "listen", "-k", "-v", "tcp://127.0.0.1:0"])
    address = server.wait_listening()
    assert server.proc.stdin is not None and server.proc.stdout is not None
    with socketeer.connect(address, timeout=10) as writer_only:
        writer_only.send_line("a")
        writer_only.shutdown_write()
        assert server.proc.stdout.readline() == b"a\n"
        server.wait_for_stderr(b"closed its side; still sending stdin")
        server.proc.stdin.write(b"to all\n")
        server.proc.stdin.flush()
        assert writer_only.recv_line() == b"to all"  # still a peer, write-only
        # A client that fails is dropped with a warning; the listener serves on.
        quitter = socketeer.connect(address, timeout=10)
        server.wait_for_stderr(b"connection from", count=2)
        quitter.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        quitter.close()
        server.wait_for_stderr(b"warning: ")
        with socketeer.connect(address, timeout=10) as late:
            late.send_line("c")
            assert server.proc.stdout.readline() == b"c\n"
            server.proc.stdin.write(b"second\n")
            server.proc.stdin.close()  # stdin ends: half-closed clients are shut down and dropped
            assert writer_only.recv_line() == b"second"
            assert writer_only.recv() == b""
            assert late.recv_line() == b"second"
            assert late.recv() == b""  # SHUT_WR once stdin ended
    server.proc.send_signal(signal.SIGINT)
    _, err, code = server.finish()
    assert code == 130, err
    assert b"Traceback" not in err


_PUMP_SCRIPT = """
import sys
from socketeer.access import AccessList
from socketeer.cli._pump import StreamPump
from socketeer.cli._report import Reporter
from socketeer.listener import listen

allow, deny = (sys.argv[1].split(",") if sys.argv[1] else []), sys.argv[2:]
report = Reporter(verbose=1)
with listen("tcp://127.0.0.1:0") as listener:
    report.notice(f"listening on {listener.address}")
    try:
        StreamPump(report).run(listener, access=AccessList(allow, deny))
    except KeyboardInterrupt:
        sys.exit(130)
"""


@pytest.mark.parametrize(
    ("allow", "deny", "served"),
    [
        ("", ["127.0.0.1"], False),
        ("10.0.0.0/8", [], False),
        ("127.0.0.0/8", ["10.0.0.0/8"], True),
    ],
    ids=["denied", "not-allowed", "allowed"],
)
def test_keep_open_allow_and_deny(
    allow: str, deny: list[str], served: bool, background: type[Background]
) -> None:
    server = background([sys.executable, "-c", _PUMP_SCRIPT, allow, *deny])
    address = server.wait_listening()
    assert server.proc.stdout is not None
    with socketeer.connect(address, timeout=10) as client:
        client.timeout = 10
        if served:
            client.send_line("let in")
            assert server.proc.stdout.readline() == b"let in\n"
            server.wait_for_stderr(b"connection from")
        else:
            assert client.recv() == b""  # closed at once
            server.wait_for_stderr(b"closed: denied by --allow/--deny")
            line = next(line for line in server.stderr_lines if b"denied" in line)
            assert (
                line
                == (
                    f"socketeer: warning: connection from {client.local} "
                    "closed: denied by --allow/--deny\n"
                ).encode()
            )
    server.proc.send_signal(signal.SIGINT)
    out, err, code = server.finish()
    assert code == 130, err
    assert out == b""  # what the served client sent was read above


# -- the relay's polled pairs (TLS, standard I/O, programs) -------------------------------


@dataclass
class TLSFiles:
    ca: str
    server: str  # key and chain in one PEM
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    folder = tmp_path_factory.mktemp("pump-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_context)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_context)
    return TLSFiles(
        str(folder / "ca.pem"), str(folder / "server.pem"), server_context, client_context
    )


def open_tls_link(tls: TLSFiles) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """(the relay's end, the client's end) of a TLS connection on loopback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, _ = listener.accept()
    accepted.settimeout(10)
    clients: list[ssl.SSLSocket] = []
    thread = threading.Thread(
        target=lambda: clients.append(
            tls.client_context.wrap_socket(raw, server_hostname="127.0.0.1")
        )
    )
    thread.start()
    relay_end = tls.server_context.wrap_socket(accepted, server_side=True)
    thread.join(10)
    (client,) = clients
    client.settimeout(30)
    return relay_end, client


@pytest.fixture
def tls_link(tls: TLSFiles) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    relay_end, client = open_tls_link(tls)
    yield relay_end, client
    relay_end.close()
    client.close()


def start(pair: Pair) -> threading.Thread:
    thread = threading.Thread(target=pair.run, daemon=True)
    thread.start()
    return thread


def test_tls_pair_goes_on_after_the_upstreams_eof(
    tls_link: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    relay_end, client = tls_link
    upstream, upstream_relay_end = socket.socketpair()
    payload = os.urandom(5 * 1024 * 1024)
    pair = Pair(Side.of_socket(relay_end, "client"), Side.of_socket(upstream_relay_end, "up"))
    running = start(pair)
    got: list[bytes] = []
    with upstream:
        upstream.settimeout(30)
        upstream.sendall(b"hello")
        upstream.shutdown(socket.SHUT_WR)  # the upstream is done talking first
        reader = threading.Thread(
            target=lambda: got.append(b"".join(iter(lambda: upstream.recv(65536), b"")))
        )
        reader.start()
        assert client.recv(100) == b"hello"
        client.sendall(payload)
        # Not close(): the relay's close_notify is unread here, and a close
        # with unread bytes is a reset, losing what is in flight.
        client.shutdown(socket.SHUT_WR)
        reader.join(30)
    running.join(30)
    assert not running.is_alive()
    assert got == [payload]
    assert (pair.bytes_up, pair.bytes_down, pair.error) == (len(payload), 5, None)


def test_tls_pair_goes_on_after_a_programs_output_ends(
    tls_link: tuple[ssl.SSLSocket, ssl.SSLSocket], tmp_path: Path
) -> None:
    relay_end, client = tls_link
    digest_file = tmp_path / "digest"
    program = (
        "import hashlib, os, sys; os.close(1); h = hashlib.sha256()\n"
        "for chunk in iter(lambda: sys.stdin.buffer.read(65536), b''): h.update(chunk)\n"
        f"open({str(digest_file)!r}, 'w').write(h.hexdigest())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    payload = os.urandom(5 * 1024 * 1024)
    pair = Pair(Side.of_socket(relay_end, "client"), Side.of_program(proc, "program"))
    running = start(pair)
    client.sendall(payload)
    # Not close(): unread session tickets would make it a reset, losing what is in flight.
    client.shutdown(socket.SHUT_WR)
    running.join(30)
    assert not running.is_alive()
    assert proc.wait(10) == 0
    assert digest_file.read_text() == sha256(payload)
    assert (pair.bytes_up, pair.bytes_down, pair.error) == (len(payload), 0, None)


def test_tls_pair_to_cat_with_a_slow_reader_does_not_stall(
    tls_link: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    """cat blocks on its output while we do not read it: a blocking write to it would hang."""
    relay_end, client = tls_link
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    pair = Pair(Side.of_socket(relay_end, "client"), Side.of_program(proc, "cat"))
    running = start(pair)
    payload = os.urandom(32 * 1024 * 1024)
    client.setblocking(False)
    outlet = Outlet(client)
    outlet.queue(payload)
    # Send without reading until sending stalls: every buffer on the way is
    # full then, cat is blocked on its output, and so is its input.
    last_progress = time.monotonic()
    while outlet.pending and time.monotonic() - last_progress < 0.5:
        select.select([], [client], [], 0.1)
        if outlet.flush():
            last_progress = time.monotonic()
    echoed = bytearray()
    deadline = time.monotonic() + 30
    while len(echoed) < len(payload):
        assert time.monotonic() < deadline, f"stalled: {len(echoed)} bytes back"
        select.select([client], [client] if outlet.pending else [], [], 0.1)
        outlet.flush()
        data = receive_ready(client, 65536)
        assert data != b"", "EOF before the echo was complete"
        echoed += data or b""
    assert echoed == payload
    client.close()
    running.join(30)
    assert not running.is_alive()
    assert pair.error is None


def test_abort_wakes_a_polled_pair_at_once(
    tls_link: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    relay_end, client = tls_link
    upstream, upstream_relay_end = socket.socketpair()
    with upstream:
        pair = Pair(Side.of_socket(relay_end, "client"), Side.of_socket(upstream_relay_end, "up"))
        running = start(pair)
        client.sendall(b"ping")
        upstream.settimeout(10)
        assert upstream.recv(10) == b"ping"  # the loop runs, and then waits with no timer
        began = time.monotonic()
        pair.abort()
        running.join(10)
        assert not running.is_alive()
        assert time.monotonic() - began < 0.5
        assert upstream.recv(10) == b""  # both sides were cut
        assert pair.error is None and pair.bytes_up == 4


def test_a_polled_pair_aborted_before_it_runs_returns_at_once(tls: TLSFiles) -> None:
    relay_end, client = open_tls_link(tls)
    upstream, upstream_relay_end = socket.socketpair()
    with client, upstream:
        pair = Pair(Side.of_socket(relay_end, "client"), Side.of_socket(upstream_relay_end, "up"))
        pair.abort()
        began = time.monotonic()
        pair.run()
        assert time.monotonic() - began < 0.5
        assert relay_end.fileno() == -1 and upstream_relay_end.fileno() == -1  # closed
        pair.abort()  # after the end: harmless


def test_tls_relay_to_stdio_receives_everything(
    tls: TLSFiles, background: type[Background], tmp_path: Path
) -> None:
    received = tmp_path / "stdout.bin"
    with received.open("wb") as stdout:
        relay = background(
            [*SOCKETEER, "relay", "--once", "--cert", tls.server, "tls://127.0.0.1:0", "-"],
            stdin=subprocess.DEVNULL,  # stdin ends first: nothing goes to the client
            stdout=stdout,
        )
    address = socketeer.Address.parse(relay.wait_listening())
    payload = os.urandom(5 * 1024 * 1024)
    with socket.create_connection((address.host, address.port), timeout=10) as raw:
        client = tls.client_context.wrap_socket(raw, server_hostname="127.0.0.1")
        client.settimeout(30)
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)  # not close(): see the program test
        _, err, code = relay.finish(timeout=60)
        client.close()
    assert code == 0, err
    assert sha256(received.read_bytes()) == sha256(payload)
