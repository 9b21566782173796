"""SPEC §9 on the command line: readiness (-z, --wait, wait_for) and the ncat/nc parity
options (--send-only, --recv-only, -o, --output-in/--output-out, --delay)."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import socketeer
from socketeer.tls import TLSConfig

from .conftest import (
    NOBODY,
    SOCKETEER,
    assert_one_line_error,
    free_port_refusing,
    run_cli,
    serve_once,
)

# -- helpers -----------------------------------------------------------------------


class LateListener:
    """A TCP port that refuses connections until ``delay`` seconds have passed, then accepts.

    The socket is bound at once (so the port is known and refused), and a
    timer thread calls ``listen()`` on it later; accepted clients are counted
    and what they sent is kept.
    """

    def __init__(self, delay: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.accepted = 0
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(delay,), daemon=True)
        self._thread.start()

    def _run(self, delay: float) -> None:
        if self._stop.wait(delay):
            return
        self.sock.listen()
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                self.accepted += 1
                conn.settimeout(5)
                chunks = []
                try:
                    while data := conn.recv(65536):
                        chunks.append(data)
                        conn.sendall(data)
                except OSError:
                    pass
                self.received.append(b"".join(chunks))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def late() -> Iterator[type[LateListener]]:
    made: list[LateListener] = []

    class Tracked(LateListener):
        def __init__(self, delay: float) -> None:
            super().__init__(delay)
            made.append(self)

    yield Tracked
    for item in made:
        item.close()


class CountingServer:
    """Accepts on ``listener`` in a thread until closed; counts clients and their bytes."""

    def __init__(self, listener: socketeer.Listener) -> None:
        self.listener = listener
        self.clients = 0
        self.bytes = 0
        self.errors: list[Exception] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn = self.listener.accept(timeout=0.05)
            except socketeer.Timeout:
                continue
            except socketeer.SocketeerError as exc:  # closed, or a failed TLS handshake
                if self.listener.socket.fileno() < 0:
                    return
                self.errors.append(exc)
                continue
            with conn:
                self.clients += 1
                conn.timeout = 5
                try:
                    while data := conn.recv():
                        self.bytes += len(data)
                except socketeer.SocketeerError:
                    pass

    def close(self) -> None:
        self.listener.close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "other_ca": tmp_path / "other.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    return {name: str(path) for name, path in paths.items()}


# -- -z: check without sending -------------------------------------------------------


def test_check_open_ports_exits_0_and_sends_nothing() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as a, socketeer.listen("tcp://127.0.0.1:0") as b:
        servers = [CountingServer(a), CountingServer(b)]
        result = run_cli("connect", "-z", "-v", str(a.address), str(b.address), input=b"data\n")
        deadline = time.monotonic() + 5
        while sum(s.clients for s in servers) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for server in servers:
            server.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert [s.clients for s in servers] == [1, 1]
    assert [s.bytes for s in servers] == [0, 0]  # stdin is never read
    assert f"{a.address} is up".encode() in result.stderr


def test_check_names_each_closed_port_and_not_the_open_one() -> None:
    held = [free_port_refusing() for _ in range(2)]
    closed = [f"tcp://127.0.0.1:{port}" for _, port in held]
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        server = CountingServer(listener)
        result = run_cli("connect", "-z", closed[0], str(listener.address), closed[1])
        server.close()
    for sock, _ in held:
        sock.close()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "not ready", closed[0], closed[1], "refused")
    assert str(listener.address) not in result.stderr.decode()


def test_check_unix_socket_and_missing_file(sockdir: Path) -> None:
    with socketeer.listen(f"unix:{sockdir}/up.sock") as listener:
        server = CountingServer(listener)
        ok = run_cli("connect", "-z", f"unix:{sockdir}/up.sock")
        missing = run_cli("connect", "-z", f"unix:{sockdir}/nobody.sock")
        server.close()
    assert ok.returncode == 0, ok.stderr
    assert missing.returncode == 1
    assert_one_line_error(missing.stderr, "nobody.sock")


def test_wait_until_a_late_port_opens(late: type[LateListener]) -> None:
    port = late(0.3)
    started = time.monotonic()
    result = run_cli("connect", "-z", "--wait", "10", port.address)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed >= 0.3


def test_wait_gives_up_naming_only_the_port_that_stayed_closed(
    late: type[LateListener],
) -> None:
    opens = late(0.3)
    held, port = free_port_refusing()
    closed = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    result = run_cli("connect", "-z", "--wait", "1.5", opens.address, closed)
    elapsed = time.monotonic() - started
    held.close()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "not ready after 1.5s", closed, "refused")
    assert opens.address not in result.stderr.decode()
    assert elapsed >= 1.5


def test_wait_before_a_session_retries_the_connect_itself(late: type[LateListener]) -> None:
    port = late(0.3)
    result = run_cli("connect", "--wait", "10", port.address, input=b"hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\n"
    deadline = time.monotonic() + 5
    while not port.received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert port.accepted == 1  # no extra connection to find out it was up
    assert port.received == [b"hello\n"]


def test_check_tls_completes_the_handshake_and_verifies(tls_files: dict[str, str]) -> None:
    config = TLSConfig(cert=tls_files["cert"], key=tls_files["key"])
    with socketeer.listen("tls://127.0.0.1:0", tls=config) as listener:
        server = CountingServer(listener)
        address = str(listener.address)
        good = run_cli("connect", "-z", "--ca", tls_files["ca"], address)
        started = time.monotonic()
        wrong = run_cli("connect", "-z", "--wait", "20", "--ca", tls_files["other_ca"], address)
        wrong_took = time.monotonic() - started
        server.close()
    assert good.returncode == 0, good.stderr
    assert wrong.returncode == 1
    assert_one_line_error(wrong.stderr, "not ready", "certificate verify failed", address)
    assert wrong_took < 15  # a certificate that fails is not retried for the whole wait


def test_check_plain_port_as_tls_fails(tls_files: dict[str, str]) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        server = CountingServer(listener)
        port = listener.address.port
        result = run_cli(
            "connect", "-z", "-t", "0.5", "--ca", tls_files["ca"], f"tls://127.0.0.1:{port}"
        )
        server.close()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "not ready", f"tls://127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-z", f"udp://127.0.0.1:{NOBODY}"], "cannot be checked without sending data"),
        (["-z", "--send-only", f"127.0.0.1:{NOBODY}"], "--send-only"),
        (["-z", "-o", "/dev/null", f"127.0.0.1:{NOBODY}"], "--output"),
        (["-z", "--hexdump", "-", f"127.0.0.1:{NOBODY}"], "--hexdump"),
        ([f"127.0.0.1:{NOBODY}", f"127.0.0.1:{NOBODY}"], "several only with -z"),
        (["--wait", "0", f"127.0.0.1:{NOBODY}"], "--wait"),
    ],
)
def test_readiness_usage_errors(argv: list[str], needle: str) -> None:
    result = run_cli("connect", *argv)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, needle)


# -- the library -------------------------------------------------------------------------


def test_wait_for_returns_the_addresses_once_up(late: type[LateListener]) -> None:
    port = late(0.3)
    assert socketeer.wait_for([port.address], timeout=10) == [socketeer.Address.parse(port.address)]


def test_wait_for_not_ready_lists_the_failures() -> None:
    held, port = free_port_refusing()
    closed = socketeer.Address.parse(f"tcp://127.0.0.1:{port}")
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        server = CountingServer(listener)
        with pytest.raises(socketeer.NotReady) as caught:
            socketeer.wait_for([listener.address, closed], timeout=0.3)
        server.close()
    held.close()
    assert set(caught.value.failures) == {closed}
    assert isinstance(caught.value.failures[closed], socketeer.ConnectError)
    assert isinstance(caught.value, socketeer.Timeout)


def test_wait_for_unix_datagram_means_a_bound_socket(sockdir: Path) -> None:
    path = f"unix-dgram:{sockdir}/d.sock"
    with pytest.raises(socketeer.NotReady):
        socketeer.wait_for(path, timeout=0)
    with socketeer.open_datagram(bind=path):
        assert socketeer.wait_for(path, timeout=0) == [socketeer.Address.parse(path)]


def test_wait_for_udp_is_a_usage_error() -> None:
    with pytest.raises(socketeer.UsageError):
        socketeer.wait_for([f"udp://127.0.0.1:{NOBODY}"], timeout=5)


# -- --send-only / --recv-only ---------------------------------------------------------


def test_send_only_drops_what_arrives_and_ends_after_stdin() -> None:
    got: list[bytes] = []

    def talker(conn: socketeer.Connection) -> None:
        conn.send(b"you should not see this\n")
        got.append(conn.recv_exactly(6))
        assert conn.recv() == b""  # the client's SHUT_WR
        time.sleep(0.5)  # the client must not wait for this server to close

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, talker)
        started = time.monotonic()
        result = run_cli("connect", "--send-only", str(listener.address), input=b"hello\n")
        took = time.monotonic() - started
        thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert got == [b"hello\n"]
    assert took < 5


def test_recv_only_never_reads_stdin_nor_half_closes() -> None:
    seen: list[object] = []

    def talker(conn: socketeer.Connection) -> None:
        conn.send(b"news\n")
        seen.append(_recv_within(conn, 0.5))

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, talker)
        result = run_cli("connect", "--recv-only", str(listener.address), input=b"secret\n")
        thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"news\n"
    assert seen == ["nothing"]  # neither stdin nor an EOF arrived


def _recv_within(conn: socketeer.Connection, seconds: float) -> object:
    conn.timeout = seconds
    try:
        return conn.recv()
    except socketeer.Timeout:
        return "nothing"


def test_send_only_and_recv_only_exclude_each_other() -> None:
    result = run_cli("connect", "--send-only", "--recv-only", f"127.0.0.1:{NOBODY}")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "not allowed with")


# -- -o / --output-in / --output-out ----------------------------------------------------


def test_captures_are_byte_exact(tmp_path: Path) -> None:
    sent = os.urandom(200_000) + b"\r\n\x00\xff"
    reply = os.urandom(100_000)

    def answer_after_eof(conn: socketeer.Connection) -> None:
        chunks = []
        while data := conn.recv():
            chunks.append(data)
        assert b"".join(chunks) == sent
        conn.send(reply)

    both, inward, outward = tmp_path / "both", tmp_path / "in", tmp_path / "out"
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, answer_after_eof)
        result = run_cli(
            "connect",
            str(listener.address),
            "-o",
            str(both),
            "--output-in",
            str(inward),
            "--output-out",
            str(outward),
            input=sent,
        )
        thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == reply
    assert outward.read_bytes() == sent
    assert inward.read_bytes() == reply
    assert both.read_bytes() == sent + reply  # in the order it happened


def test_listen_output_captures_the_client(tmp_path: Path, background: type) -> None:
    capture = tmp_path / "capture"
    server = background([*SOCKETEER, "listen", "127.0.0.1:0", "-o", str(capture)])
    address = server.wait_listening()
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"from the listener\n")
    server.proc.stdin.close()
    with socketeer.connect(address, timeout=5) as conn:
        assert conn.recv_line() == b"from the listener"
        conn.send(b"from the client\n")
        conn.shutdown_write()
        assert conn.recv() == b""
    out, _, code = server.finish()
    assert code == 0
    assert out == b"from the client\n"
    assert capture.read_bytes() == b"from the listener\nfrom the client\n"


def test_output_to_a_missing_folder_fails_before_connecting() -> None:
    held, port = free_port_refusing()
    result = run_cli("connect", "-o", "/nonexistent/dir/f", f"127.0.0.1:{port}")
    held.close()
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "/nonexistent/dir/f")
    assert "refused" not in result.stderr.decode()


def test_output_files_must_differ(tmp_path: Path) -> None:
    same = str(tmp_path / "f")
    result = run_cli("connect", "-o", same, "--output-in", same, f"127.0.0.1:{NOBODY}")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "different files")


def test_datagram_captures(tmp_path: Path) -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0") as server:

        def echo() -> None:
            for _ in range(2):
                data, sender = server.recv(timeout=5)
                server.send(data.upper(), to=sender)

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        out = tmp_path / "out"
        both = tmp_path / "both"
        result = run_cli(
            "connect",
            str(server.local),
            "--output-out",
            str(out),
            "-o",
            str(both),
            "-i",
            "0.5",
            input=b"one\ntwo\n",
        )
        thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ONE\nTWO\n"
    assert out.read_bytes() == b"one\ntwo\n"
    assert sorted(both.read_bytes().splitlines()) == sorted([b"one", b"ONE", b"two", b"TWO"])


# -- --delay ------------------------------------------------------------------------------


def test_delay_spaces_the_lines() -> None:
    times: list[float] = []
    rest: list[bytes] = []

    def record(conn: socketeer.Connection) -> None:
        for _ in range(3):
            conn.recv_line()
            times.append(time.monotonic())
        rest.append(conn.recv_exactly(4))
        times.append(time.monotonic())
        assert conn.recv() == b""

    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, record)
        result = run_cli("connect", "--delay", "0.2", str(listener.address), input=b"a\nb\nc\nlast")
        thread.join(30)
    assert result.returncode == 0, result.stderr
    assert rest == [b"last"]  # the last line, without its newline, is sent too
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    assert all(gap >= 0.15 for gap in gaps), gaps  # a lower bound only


def test_delay_spaces_datagrams() -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0") as server:
        times: list[float] = []

        def record() -> None:
            for _ in range(3):
                server.recv(timeout=10)
                times.append(time.monotonic())

        thread = threading.Thread(target=record, daemon=True)
        thread.start()
        result = run_cli(
            "connect", "--delay", "0.2", "--send-only", str(server.local), input=b"1\n2\n3\n"
        )
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert len(times) == 3
    assert times[2] - times[0] >= 0.3


# -- absurd values and late-opened files (issue #13) --------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["connect", "--timeout", "1e308", f"127.0.0.1:{NOBODY}"],
        ["listen", "-k", "--idle-timeout", "1e308", "127.0.0.1:0"],
        ["connect", "--wait", "1e308", f"127.0.0.1:{NOBODY}"],
        ["connect", "--delay", "1e308", f"127.0.0.1:{NOBODY}"],
        ["relay", "--grace", "1e300", "127.0.0.1:0", f"127.0.0.1:{NOBODY}"],
    ],
)
def test_huge_seconds_are_usage_errors(argv: list[str]) -> None:
    result = run_cli(*argv, timeout=15)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "at most", "24 days")


def test_relay_hexdump_in_a_missing_folder_fails_at_once() -> None:
    result = run_cli(
        "relay",
        "--hexdump",
        "/nonexistent/dir/f",
        "127.0.0.1:0",
        f"tls://127.0.0.1:{NOBODY}",
        timeout=15,
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "/nonexistent/dir/f")


def test_listen_recv_only_sends_nothing_to_the_client(background: type) -> None:
    server = background([*SOCKETEER, "listen", "--recv-only", "127.0.0.1:0"])
    address = server.wait_listening()
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"never sent\n")
    server.proc.stdin.flush()
    with socketeer.connect(address, timeout=5) as conn:
        conn.send(b"hello\n")
        assert _recv_within(conn, 0.5) == "nothing"  # neither stdin nor a half-close
        conn.shutdown_write()
        conn.timeout = 5
        assert conn.recv() == b""
    out, _, code = server.finish()
    assert code == 0
    assert out == b"hello\n"
