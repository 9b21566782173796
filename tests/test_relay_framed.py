"""SPEC §10: `relay --frame` — datagrams over a stream as SPEC §2 frames, through TCP and TLS."""

from __future__ import annotations

import ast
import random
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

import socketeer
from socketeer.errors import ConnectionClosed, FrameTooLarge, UsageError
from socketeer.relay import relay
from socketeer.relay.framecodec import DEFAULT_MAX_FRAME, DatagramFramer
from socketeer.relay.framed import DatagramTunnel
from socketeer.server import Server

from .conftest import (
    NOBODY,
    SOCKETEER,
    Background,
    assert_one_line_error,
    free_port_refusing,
    open_fds,
    run_cli,
)

SRC = Path(socketeer.__file__).parent
IO_MODULES = {"socket", "ssl", "asyncio", "selectors", "select", "subprocess", "threading"}


# -- the codec (pure) ----------------------------------------------------------------------


def test_the_codec_and_the_retry_policy_import_no_io() -> None:
    for name in ("relay/framecodec.py", "relay/retry.py"):
        tree = ast.parse((SRC / name).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & IO_MODULES, name


@given(
    st.lists(st.binary(max_size=3000), max_size=20),
    st.lists(st.integers(1, 5000), max_size=30),
)
def test_datagrams_survive_any_cutting_of_the_stream(
    datagrams: list[bytes], cuts: list[int]
) -> None:
    sender, receiver = DatagramFramer(), DatagramFramer()
    stream = b"".join(sender.encode(d) for d in datagrams)
    got: list[bytes] = []
    position = 0
    for cut in cuts:
        got += receiver.feed(stream[position : position + cut])
        position += cut
    got += receiver.feed(stream[position:])
    got += receiver.feed(b"")
    assert got == datagrams
    assert receiver.at_eof


@given(st.binary(max_size=400), st.integers(0, 300))
def test_garbage_raises_only_the_tunnel_errors(data: bytes, limit: int) -> None:
    framer = DatagramFramer(limit)
    try:
        for datagram in framer.feed(data) + framer.feed(b""):
            assert len(datagram) <= limit
    except (FrameTooLarge, ConnectionClosed):
        pass


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_a_frame_announced_over_the_limit_is_refused(split: str) -> None:
    framer = DatagramFramer(100)
    data = struct.pack("!I", 101) + b"x" * 101
    with pytest.raises(FrameTooLarge, match="101 bytes exceeds the limit of 100"):
        if split == "whole":
            framer.feed(data)
        else:
            for i in range(len(data)):
                framer.feed(data[i : i + 1])


def test_limits_and_the_end_of_the_stream() -> None:
    framer = DatagramFramer(10)
    assert framer.encode(b"x" * 10) == b"\0\0\0\x0a" + b"x" * 10
    with pytest.raises(FrameTooLarge):
        framer.encode(b"x" * 11)
    assert framer.feed(b"\0\0\0\0" + b"\0\0\0\x03ab") == [b""]  # an empty datagram is one too
    with pytest.raises(ConnectionClosed) as closed:
        framer.feed(b"")
    assert closed.value.partial == b"\0\0\0\x03ab"
    assert DatagramFramer().max_size == DEFAULT_MAX_FRAME >= 65507  # any IPv4 UDP payload


# -- a tunnel of two relays ------------------------------------------------------------------


def start(background: type[Background], *argv: str) -> tuple[Background, str]:
    proc = background([*SOCKETEER, *argv], stdin=subprocess.DEVNULL)
    return proc, proc.wait_listening()


def tunnel(
    background: type[Background], stream: str = "tcp", back: tuple[str, ...] = (), front=()
) -> tuple[str, list[Background]]:
    """A UDP echo server behind relay tcp→udp --frame behind relay udp→tcp --frame."""
    echo, echo_address = start(background, "serve", "udp://127.0.0.1:0", "echo")
    far, far_address = start(
        background, "relay", "-v", "--frame", *back, f"{stream}://127.0.0.1:0", echo_address
    )
    near, near_address = start(
        background, "relay", "-v", "--frame", *front, "udp://127.0.0.1:0", far_address
    )
    return near_address, [echo, far, near]


def mixed_sizes(count: int, seed: int) -> list[int]:
    """1 B to 60 KB, mostly small as real traffic is, both ends included."""
    rng = random.Random(seed)
    sizes = [1, 60_000]
    while len(sizes) < count:
        sizes.append(
            rng.choice([rng.randint(1, 512), rng.randint(513, 8192), rng.randint(8193, 60_000)])
        )
    return sizes


def talk(address: str, client: int, sizes: list[int], results: dict[int, object]) -> None:
    """Each datagram names its client and number; the reply must be that datagram exactly."""
    try:
        with socketeer.open_datagram(address, timeout=10) as sock:
            for number, size in enumerate(sizes):
                head = b"%d:%d:" % (client, number)
                payload = (head + bytes([65 + client]) * size)[:size]
                sock.send(payload)
                reply, _ = sock.recv()
                assert reply == payload, (client, number, len(reply), len(payload))
        results[client] = len(sizes)
    except BaseException as exc:  # reported by the test thread
        results[client] = exc


@pytest.mark.parametrize("model", ["thread", "fork"])
def test_udp_over_tcp_three_clients_1000_datagrams_of_mixed_sizes(
    background: type[Background], model: str
) -> None:
    address, procs = tunnel(background, back=("--model", model))
    sizes = mixed_sizes(1000, 12)
    results: dict[int, object] = {}
    threads = [
        threading.Thread(target=talk, args=(address, i, sizes[i::3], results)) for i in range(3)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - started
    assert results == {0: 334, 1: 333, 2: 333}, results
    print(f"1000 round trips through the framed tunnel in {elapsed:.2f}s")
    near, far = procs[2], procs[1]
    near.wait_for_stderr(b"-> tcp://127.0.0.1:", count=3)  # one stream per sender
    for proc in reversed(procs):  # the front first: its streams end the back's pairs
        proc.proc.terminate()
        _, err, code = proc.finish()
        assert code == 0, err
    far_log = b"".join(far.stderr_lines)
    assert far_log.count(b"closed tcp://127.0.0.1:") == 3, far_log


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("framed-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "server.pem")
    )
    return str(folder / "ca.pem"), str(folder / "server.pem")


def test_udp_over_tls_keeps_boundaries_and_sessions(
    background: type[Background], certs: tuple[str, str]
) -> None:
    ca, server = certs
    address, procs = tunnel(
        background,
        "tls",
        back=("--cert", server, "--key", server),
        front=("--ca", ca),
    )
    sizes = mixed_sizes(300, 7)
    results: dict[int, object] = {}
    threads = [
        threading.Thread(target=talk, args=(address, i, sizes[i::3], results)) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == {0: 100, 1: 100, 2: 100}, results
    for proc in reversed(procs):  # the front first: its streams end the back's pairs
        proc.proc.terminate()
        _, err, code = proc.finish()
        assert code == 0, err
    assert b"tls://127.0.0.1:" in b"".join(procs[2].stderr_lines)


def test_a_tls_tunnel_refuses_an_unknown_certificate(
    background: type[Background], certs: tuple[str, str]
) -> None:
    _, server = certs
    _, far_address = start(
        background,
        "relay",
        "--frame",
        "--cert",
        server,
        "--key",
        server,
        "tls://127.0.0.1:0",
        f"udp://127.0.0.1:{NOBODY}",
    )
    near, address = start(background, "relay", "--frame", "udp://127.0.0.1:0", far_address)
    with socketeer.open_datagram(address, timeout=2) as client:
        client.send(b"hello")
    near.wait_for_stderr(b"dropped")
    assert b"certificate" in b"".join(near.stderr_lines)


# -- limits ------------------------------------------------------------------------------


def test_an_oversized_frame_from_a_stream_client_is_a_logged_close(
    background: type[Background],
) -> None:
    far, address = start(
        background,
        "relay",
        "--frame",
        "--max-frame",
        "1000",
        "tcp://127.0.0.1:0",
        f"udp://127.0.0.1:{NOBODY}",
    )
    with socketeer.connect(address, timeout=5) as client:
        client.send(struct.pack("!I", 1001) + b"x" * 100)
        assert client.recv(100) == b""  # closed by the relay
    far.wait_for_stderr(b"frame of 1001 bytes exceeds the limit of 1000; closing")


def test_an_oversized_frame_from_to_closes_that_session_only(
    background: type[Background],
) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as fake:
        near, address = start(
            background, "relay", "-v", "--frame", "udp://127.0.0.1:0", str(fake.address)
        )
        with socketeer.open_datagram(address, timeout=5) as client:
            client.send(b"first")
            with fake.accept(timeout=5) as upstream:
                upstream.timeout = 5
                assert upstream.recv_exactly(9) == b"\0\0\0\x05first"
                upstream.send(b"\0\0\0\x02ok")  # a good frame goes through
                assert client.recv()[0] == b"ok"
                upstream.send(struct.pack("!I", 70_000))
                assert upstream.recv(10) == b""  # the session's stream is closed
            near.wait_for_stderr(b"frame of 70000 bytes exceeds the limit of 65527; closing")
            client.send(b"again")  # a new session, a new stream
            with fake.accept(timeout=5) as upstream:
                upstream.timeout = 5
                assert upstream.recv_exactly(9) == b"\0\0\0\x05again"


def test_a_datagram_over_the_limit_is_dropped_and_logged(background: type[Background]) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as fake:
        near, address = start(
            background,
            "relay",
            "--frame",
            "--max-frame",
            "10",
            "udp://127.0.0.1:0",
            str(fake.address),
        )
        with socketeer.open_datagram(address, timeout=5) as client:
            client.send(b"x" * 11)
            near.wait_for_stderr(b"datagram of 11 bytes from udp://127.0.0.1:")
            client.send(b"x" * 10)
            with fake.accept(timeout=5) as upstream:
                upstream.timeout = 5
                assert upstream.recv_exactly(14) == b"\0\0\0\x0a" + b"x" * 10


def test_a_sender_to_an_unreachable_to_costs_one_connect_a_second(
    background: type[Background],
) -> None:
    refusing, port = free_port_refusing()
    with refusing:
        near, address = start(
            background, "relay", "--frame", "udp://127.0.0.1:0", f"tcp://127.0.0.1:{port}"
        )
        with socketeer.open_datagram(address, timeout=5) as client:
            for number in range(50):
                client.send(b"lost %d" % number)
            near.wait_for_stderr(b"datagrams dropped for 1s")
            time.sleep(0.3)
            assert sum(b"connection refused" in line for line in near.stderr_lines) == 1
            refusing.listen()  # TO comes up; after the hold-off the sender gets through
            time.sleep(1.1)
            client.send(b"after")
            upstream, _ = refusing.accept()
            with upstream:
                upstream.settimeout(5)
                assert upstream.recv(100) == b"\0\0\0\x05after"


def test_sessions_are_bounded_and_expire(background: type[Background]) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as fake:
        near, address = start(
            background,
            "relay",
            "-v",
            "--frame",
            "--max-sessions",
            "2",
            "-i",
            "0.5",
            "udp://127.0.0.1:0",
            str(fake.address),
        )
        clients = [socketeer.open_datagram(address, timeout=5) for _ in range(3)]
        accepted = []
        try:
            for client in clients:
                client.send(b"hi")
                accepted.append(fake.accept(timeout=5))
                accepted[-1].timeout = 5
                assert accepted[-1].recv_exactly(6) == b"\0\0\0\x02hi"
            near.wait_for_stderr(b"session table full (2): evicting")
            assert accepted[0].recv(10) == b""  # the evicted session's stream is closed
            near.wait_for_stderr(b"expired after 0.5s idle", count=2)
        finally:
            for conn in accepted:
                conn.close()
            for client in clients:
                client.close()


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--frame", "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}"],
            "both are stream addresses",
        ),
        (
            ["--frame", "udp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}"],
            "both are datagram addresses",
        ),
        (
            ["--max-frame", "10", "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}"],
            "--max-frame needs --frame",
        ),
        (["--frame", "--retry", "3", "tcp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}"], "retry"),
        (
            ["--frame", "--max-sessions", "3", "tcp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}"],
            "max_sessions",
        ),
        (
            ["--frame", "--model", "async", "tcp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}"],
            "thread or fork",
        ),
        (["--frame", "--once", "udp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}"], "once"),
        (
            ["--frame", "--max-frame", "x", "udp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}"],
            "--max-frame",
        ),
        (["--frame", "-", f"tcp://127.0.0.1:{NOBODY}"], "addresses on both sides"),
    ],
)
def test_bad_frame_command_lines_are_one_line_errors(argv: list[str], needle: str) -> None:
    result = run_cli("relay", *argv)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, needle)


def test_the_library_refuses_frame_options_without_frame() -> None:
    with pytest.raises(UsageError, match="--max-frame needs --frame"):
        relay("udp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}", max_frame=10)


# -- descriptors and threads ------------------------------------------------------------------


def _tunnel_in_process(clients_count: int, rounds: int) -> None:
    echo = Server("udp://127.0.0.1:0", "echo")
    far = relay("tcp://127.0.0.1:0", str(echo.address), frame=True)
    near = relay("udp://127.0.0.1:0", str(far.address), frame=True)
    assert isinstance(near, DatagramTunnel)
    runners = [threading.Thread(target=s.serve_forever) for s in (echo, far, near)]
    for runner in runners:
        runner.start()
    clients = [socketeer.open_datagram(near.address, timeout=5) for _ in range(clients_count)]
    for round_no in range(rounds):
        for i, client in enumerate(clients):
            client.send(b"%d %d" % (i, round_no))
        for i, client in enumerate(clients):
            assert client.recv()[0] == b"%d %d" % (i, round_no)
    for client in clients:
        client.close()
    near.stopper.stop()
    far.shutdown()
    echo.shutdown()
    for runner in runners:
        runner.join(15)
        assert not runner.is_alive()


def test_a_tunnel_in_process_leaves_no_descriptor_or_thread() -> None:
    _tunnel_in_process(1, 1)  # the server's process-wide reserve descriptor, made once
    threads_before = threading.active_count()
    before = open_fds()
    _tunnel_in_process(4, 20)
    deadline = time.monotonic() + 5
    while (
        open_fds() - before or threading.active_count() > threads_before
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not open_fds() - before
    assert threading.active_count() <= threads_before


def test_a_tunnel_cut_while_connecting_leaves_nothing() -> None:
    """A session whose TO never answers (a listener that never accepts, a backlog full
    of others) is cut by close(): the connect thread ends and its socket is closed."""
    before = open_fds()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))  # bound, not listening: refused at once
        port = silent.getsockname()[1]
        from socketeer.relay.retry import RetryPolicy

        near = relay(
            "udp://127.0.0.1:0",
            f"tcp://127.0.0.1:{port}",
            frame=True,
            retry=RetryPolicy(retries=None, delay=0.05),
        )
        assert isinstance(near, DatagramTunnel)
        runner = threading.Thread(target=near.serve_forever)
        runner.start()
        with socketeer.open_datagram(near.address, timeout=5) as client:
            client.send(b"into the void")
            time.sleep(0.3)  # a few refused attempts, each logged
        near.stopper.stop()
        runner.join(10)
        assert not runner.is_alive()
    assert not open_fds() - before
