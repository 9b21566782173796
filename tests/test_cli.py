"""SPEC §5: ``connect`` and ``listen`` end to end, as a person runs them."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import socketeer

from .conftest import (
    NOBODY,
    SOCKETEER,
    Background,
    assert_one_line_error,
    cli_env,
    free_port_refusing,
    run_cli,
    serve_once,
)


def sort_server(conn: socketeer.Connection) -> None:
    """Answers only after EOF, like `sort`: the half-close test's server."""
    lines = list(conn)
    for line in sorted(lines):
        conn.send_line(line)


# -- connect -----------------------------------------------------------------------


def test_version_and_module_entry_point() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"socketeer {socketeer.__version__}".encode()


def test_half_close_request_then_whole_reply() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, sort_server)
        result = run_cli("connect", str(listener.address), input=b"pear\napple\nfig\n")
    thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"apple\nfig\npear\n"
    assert result.stderr == b""


def test_binary_data_both_ways_is_byte_exact() -> None:
    payload = os.urandom(2 * 1024 * 1024) + bytes(range(256)) * 4
    received: list[bytes] = []

    def exchange(conn: socketeer.Connection) -> None:
        chunks = []
        while data := conn.recv():
            chunks.append(data)
        received.append(b"".join(chunks))
        conn.send(payload[::-1])

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, exchange)
        result = run_cli("connect", str(listener.address), input=payload)
    thread.join(5)
    assert result.returncode == 0, result.stderr
    assert received == [payload]
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(payload[::-1]).digest()


def test_no_shutdown_keeps_writing_half_open() -> None:
    got_eof = threading.Event()

    def watcher(conn: socketeer.Connection) -> None:
        conn.timeout = 1.0
        assert conn.recv_line() == b"hi"
        try:
            conn.recv()
            got_eof.set()
        except socketeer.Timeout:
            conn.send_line("still open")

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, watcher)
        result = run_cli("connect", "--no-shutdown", str(listener.address), input=b"hi\n")
    thread.join(5)
    assert not got_eof.is_set()
    assert result.returncode == 0
    assert result.stdout == b"still open\n"


def test_crlf_verbose_and_hexdump(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def grab(conn: socketeer.Connection) -> None:
        seen.append(conn.recv_exactly(len(b"a\r\nb\r\n")))
        conn.send(b"ok")

    dump = tmp_path / "dump.txt"
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, grab)
        result = run_cli(
            "connect",
            "-v",
            "--crlf",
            "--hexdump",
            str(dump),
            str(listener.address),
            input=b"a\nb\n",
        )
    thread.join(5)
    assert result.returncode == 0, result.stderr
    assert seen == [b"a\r\nb\r\n"]
    assert f"connected to {listener.address}".encode() in result.stderr
    text = dump.read_text()
    assert "> 00000000  61 0d 0a 62 0d 0a" in text
    assert "< 00000000  6f 6b" in text and "|ok|" in text


def test_unix_stream_connect(sockdir: Path) -> None:
    with socketeer.listen(f"unix:{sockdir}/c.sock") as listener:
        thread = serve_once(listener, sort_server)
        result = run_cli("connect", str(listener.address), input=b"b\na\n")
    thread.join(5)
    assert (result.returncode, result.stdout) == (0, b"a\nb\n")


def test_abstract_connect(abstract_name: str) -> None:
    with socketeer.listen(f"unix:@{abstract_name}") as listener:
        thread = serve_once(listener, sort_server)
        result = run_cli("connect", f"unix:@{abstract_name}", input=b"z\ny\n")
    thread.join(5)
    assert (result.returncode, result.stdout) == (0, b"y\nz\n")


# -- listen ------------------------------------------------------------------------


def test_listen_prints_address_then_serves_one_client(background: type[Background]) -> None:
    server = background([*SOCKETEER, "listen", "tcp://127.0.0.1:0"])
    address = server.wait_listening()
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"from the server\n")
    server.proc.stdin.close()
    with socketeer.connect(address, timeout=10) as client:
        client.send(b"from the client\n")
        client.shutdown_write()
        assert client.recv_line() == b"from the server"
    out, err, code = server.finish()
    assert code == 0, err
    assert out == b"from the client\n"


def test_listen_quiet_says_nothing(background: type[Background], sockdir: Path) -> None:
    path = sockdir / "q.sock"
    server = background([*SOCKETEER, "listen", "-q", f"unix:{path}"], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not path.exists():
        assert time.monotonic() < deadline, "server did not bind"
        time.sleep(0.02)
    with socketeer.connect(f"unix:{path}", timeout=10) as client:
        client.send(b"x")
        client.shutdown_write()
        assert client.recv() == b""
    out, err, code = server.finish()
    assert (out, err, code) == (b"x", b"", 0)
    assert not path.exists()


def test_listen_keep_open_many_clients(background: type[Background]) -> None:
    server = background([*SOCKETEER, "listen", "-k", "-v", "tcp://127.0.0.1:0"])
    address = server.wait_listening()
    clients = [socketeer.connect(address, timeout=10) for _ in range(3)]
    try:
        for i, client in enumerate(clients):
            client.send_line(f"client {i}")
        assert server.proc.stdin is not None
        server.wait_for_stderr(b"connection from", count=3)  # all in before broadcasting
        server.proc.stdin.write(b"to everyone\n")
        server.proc.stdin.flush()
        for client in clients:
            assert client.recv_line() == b"to everyone"
        assert server.proc.stdout is not None
        received = sorted(server.proc.stdout.readline() for _ in clients)
    finally:
        for client in clients:
            client.close()
    assert received == [b"client 0\n", b"client 1\n", b"client 2\n"]
    server.proc.send_signal(signal.SIGINT)
    _, err, code = server.finish()
    assert code == 130, err


def test_listen_max_conns_closes_extra_clients(background: type[Background]) -> None:
    server = background([*SOCKETEER, "listen", "-k", "--max-conns", "1", "tcp://127.0.0.1:0"])
    address = server.wait_listening()
    assert server.proc.stdout is not None
    with socketeer.connect(address, timeout=10) as first:
        first.send_line("one")
        assert server.proc.stdout.readline() == b"one\n"  # the first client is served
        with socketeer.connect(address, timeout=10) as second:
            assert second.recv() == b""  # accepted and closed at once
    server.wait_for_stderr(b"--max-conns 1 reached")
    server.proc.send_signal(signal.SIGINT)
    out, err, code = server.finish()
    assert out == b""
    assert code == 130, err


def test_sigterm_removes_the_socket_file(background: type[Background], sockdir: Path) -> None:
    path = sockdir / "term.sock"
    server = background([*SOCKETEER, "listen", "-k", f"unix:{path}"])
    assert server.wait_listening() == f"unix:{path}"
    assert path.exists()
    server.proc.send_signal(signal.SIGTERM)
    _, err, code = server.finish()
    assert code == 143, err
    assert not path.exists()


# -- datagrams ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["udp", "unix-dgram"])
def test_datagram_connect_and_listen(
    kind: str, background: type[Background], sockdir: Path
) -> None:
    bind = "udp://127.0.0.1:0" if kind == "udp" else f"unix-dgram:{sockdir}/d.sock"
    server = background([*SOCKETEER, "listen", "-i", "3", bind])
    address = server.wait_listening()
    client = subprocess.run(
        [*SOCKETEER, "connect", address],
        input=b"one\ntwo\n",
        capture_output=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert client.returncode == 0, client.stderr
    out, err, code = server.finish()
    assert code == 0, err
    assert out == b"one\ntwo\n"


def test_datagram_replies_go_to_the_sender(background: type[Background]) -> None:
    server = background([*SOCKETEER, "listen", "-i", "5", "udp://127.0.0.1:0"])
    address = server.wait_listening()
    with socketeer.open_datagram(address, timeout=10) as client:
        client.send(b"hello\n")
        # Once the datagram is on the server's stdout, the server knows its sender.
        assert server.proc.stdout is not None
        assert server.proc.stdout.readline() == b"hello\n"
        assert server.proc.stdin is not None
        server.proc.stdin.write(b"reply\n")
        server.proc.stdin.flush()
        assert client.recv()[0] == b"reply\n"


def test_datagram_client_waits_for_replies_then_exits_0() -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0", timeout=10) as server:

        def answer() -> None:
            for _ in range(2):
                data, sender = server.recv()
                server.send(data.upper(), to=sender)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        started = time.monotonic()
        result = run_cli("connect", "-i", "0.5", str(server.local), input=b"a\nb\n")
        thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"A\nB\n"
    assert time.monotonic() - started < 10


# -- bad input: one line, the right exit code, nothing left behind -------------------------


@pytest.mark.parametrize(
    "address",
    [
        "",
        "ftp://h:1",
        "tcp://h",
        "h:http",
        "h:70000",
        "[::1:80",
        "::1:80",
        "unix:",
        "unix:@",
        "unix:/" + "x" * 300,
        "udp:9",
    ],
)
def test_malformed_address_exits_2(address: str) -> None:
    for command in ("connect", "listen"):
        result = run_cli(command, address)
        assert result.returncode == 2
        assert_one_line_error(result.stderr, "bad address", "accepted forms")
        assert result.stdout == b""


@pytest.mark.parametrize(
    "argv",
    [
        ["connect"],
        ["frobnicate"],
        ["connect", "--bogus", f"127.0.0.1:{NOBODY}"],
        ["connect", "-t", "soon", f"127.0.0.1:{NOBODY}"],
        ["listen", "-k", "--max-conns", "0", "1"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    result = run_cli(*argv)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "--help")


def test_refused_exits_1() -> None:
    sock, port = free_port_refusing()
    with sock:
        result = run_cli("connect", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"connection refused: tcp://127.0.0.1:{port}")


def test_unknown_host_exits_1() -> None:
    result = run_cli("connect", "no-such-host.invalid:80")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "host not found")


def test_connect_timeout_exits_1() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = [socket.socket() for _ in range(4)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        result = run_cli("connect", "-t", "0.5", f"127.0.0.1:{port}")
    finally:
        for filler in fillers:
            filler.close()
        server.close()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "connect timed out after 0.5s")


def test_reset_mid_stream_exits_1_after_delivering_what_came() -> None:
    def reset(conn: socketeer.Connection) -> None:
        conn.send(b"some data\n")
        time.sleep(0.3)
        conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, reset)
        proc = subprocess.Popen(
            [*SOCKETEER, "connect", str(listener.address)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        out, err = proc.communicate(timeout=30)  # stdin stays open until the reset
    thread.join(5)
    assert proc.returncode == 1
    assert out == b"some data\n"
    assert_one_line_error(err, "connection reset by peer")


def test_idle_timeout_is_a_failure_for_streams() -> None:
    hold = threading.Event()
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, lambda conn: hold.wait(10))
        proc = subprocess.Popen(
            [*SOCKETEER, "connect", "-i", "0.5", str(listener.address)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        out, err = proc.communicate(timeout=30)
        hold.set()
    thread.join(5)
    assert proc.returncode == 1
    assert out == b""
    assert_one_line_error(err, "idle timeout")


def test_listen_on_a_live_unix_path_exits_1(sockdir: Path) -> None:
    path = sockdir / "busy.sock"
    with socketeer.listen(f"unix:{path}"):
        result = run_cli("listen", f"unix:{path}")
        assert path.exists()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "address in use", "a server is listening there")


def test_listen_on_a_port_in_use_exits_1() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        result = run_cli("listen", str(listener.address))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "address in use")


def test_datagram_larger_than_the_limit_exits_1() -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0") as server:
        result = run_cli("connect", str(server.local), input=b"x" * 70000 + b"\n")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "datagram too large")


def test_datagram_to_nobody_is_refused() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    result = run_cli("connect", "-i", "2", f"udp://127.0.0.1:{port}", input=b"hello\n")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "connection refused")


def test_unix_datagram_to_a_missing_path(sockdir: Path) -> None:
    result = run_cli("connect", f"unix-dgram:{sockdir}/none.sock", input=b"x\n")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "no such socket")


def test_debug_shows_the_traceback() -> None:
    sock, port = free_port_refusing()
    with sock:
        result = run_cli("connect", "--debug", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert b"Traceback" in result.stderr
    assert result.stderr.rstrip().endswith(f"connection refused: tcp://127.0.0.1:{port}".encode())


def test_sigint_exits_130_and_cleans_up(sockdir: Path) -> None:
    path = sockdir / "int.sock"
    proc = subprocess.Popen(
        [*SOCKETEER, "listen", f"unix:{path}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert proc.stderr is not None
    assert b"listening on" in proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert out == b""
    assert b"Traceback" not in err
    assert not path.exists()


def test_console_script_matches_module() -> None:
    script = Path(sys.executable).parent / "socketeer"
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    result = subprocess.run([str(script), "--version"], capture_output=True, check=False)
    assert result.stdout.strip() == f"socketeer {socketeer.__version__}".encode()
