"""SPEC §2 over real sockets: one conformance suite run on every stream kind (STYLE R9)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import socketeer
from socketeer import (
    Connection,
    ConnectionClosed,
    ConnectionReset,
    FrameTooLarge,
    Timeout,
    UsageError,
)

from .conftest import stream_listen_address

KINDS = ["tcp4", "tcp6", "unix", "unix-abstract"]


@pytest.fixture(params=KINDS)
def conn_pair(
    request: pytest.FixtureRequest, sockdir: Path
) -> Iterator[tuple[Connection, Connection]]:
    """A real connected (client, server) pair of the given kind."""
    with socketeer.listen(stream_listen_address(request.param, sockdir)) as listener:
        client = socketeer.connect(listener.address, timeout=10)
        server = listener.accept(timeout=10)
    server.timeout = 10
    with client, server:
        yield client, server


def test_send_and_recv(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send(b"ping")
    assert server.recv_exactly(4) == b"ping"
    server.send(memoryview(b"pong"))
    assert client.recv(100) == b"pong"


def test_large_send_is_complete(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    payload = os.urandom(3 * 1024 * 1024)
    sender = threading.Thread(target=client.send, args=(payload,))
    sender.start()
    assert server.recv_exactly(len(payload)) == payload
    sender.join()


def test_lines_frames_and_delimiters_mix(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send_line("first")
    client.send(b"second\r\n")
    client.send_message(b"\x00binary\n")
    client.send(b"a;b;")
    client.send_line(b"")
    assert server.recv_line() == b"first"
    assert server.recv_line() == b"second"
    assert server.recv_message() == b"\x00binary\n"
    assert server.recv_until(b";") == b"a;"
    assert server.recv_until(b";") == b"b;"
    assert server.recv_line() == b""


def test_half_close_then_reply(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send(b"3\n1\n2\n")
    client.shutdown_write()
    lines = list(server)  # reads to EOF
    assert lines == [b"3", b"1", b"2"]
    for line in sorted(lines):
        server.send_line(line)
    server.close()
    assert list(client) == [b"1", b"2", b"3"]


def test_recv_returns_empty_at_eof(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.close()
    assert server.recv() == b""


def test_recv_exactly_at_eof_keeps_partial(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send(b"abc")
    client.shutdown_write()
    with pytest.raises(ConnectionClosed) as info:
        server.recv_exactly(10)
    assert info.value.partial == b"abc"


def test_recv_line_at_eof_even_on_a_boundary(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send(b"whole\n")
    client.shutdown_write()
    assert server.recv_line() == b"whole"
    with pytest.raises(ConnectionClosed) as info:
        server.recv_line()
    assert info.value.partial == b""


def test_messages_iterator_stops_at_clean_eof(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    for payload in (b"a", b"", b"ccc"):
        client.send_message(payload)
    client.shutdown_write()
    assert list(server.messages()) == [b"a", b"", b"ccc"]


def test_messages_iterator_raises_on_torn_frame(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send(struct.pack("!I", 10) + b"abc")
    client.shutdown_write()
    with pytest.raises(ConnectionClosed):
        list(server.messages())


def test_oversized_frame(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send(struct.pack("!I", 1 << 30))
    with pytest.raises(FrameTooLarge):
        server.recv_message(max_bytes=1 << 20)


def test_overlong_line(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    client.send(b"x" * 5000)
    with pytest.raises(FrameTooLarge):
        server.recv_line(max_bytes=1000)


def test_timeout_budgets_the_whole_call(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    server.timeout = 0.5

    def trickle() -> None:
        for _ in range(8):
            client.send(b"x")
            time.sleep(0.15)

    thread = threading.Thread(target=trickle)
    thread.start()
    started = time.monotonic()
    with pytest.raises(Timeout) as info:
        server.recv_line()
    elapsed = time.monotonic() - started
    thread.join()
    assert elapsed < 1.0
    assert "timed out after 0.5s" in str(info.value)
    assert isinstance(info.value, TimeoutError)


def test_addresses(conn_pair: tuple[Connection, Connection]) -> None:
    client, server = conn_pair
    assert client.peer == server.local
    if client.peer is not None and client.peer.is_inet:
        assert server.peer == client.local


def test_use_after_close_is_a_usage_error(conn_pair: tuple[Connection, Connection]) -> None:
    client, _ = conn_pair
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(UsageError):
        client.send(b"x")


def test_reset_mid_stream_is_connection_reset() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        client = socketeer.connect(listener.address, timeout=5)
        server = listener.accept(timeout=5)
    with client, server:
        server.send(b"partial")
        # SO_LINGER 0 then close: the kernel sends RST instead of FIN.
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()
        assert client.recv_exactly(7) == b"partial"
        with pytest.raises(ConnectionReset) as info:
            client.recv_exactly(1)
        assert "connection reset by peer" in str(info.value)
        assert isinstance(info.value, ConnectionResetError)


def test_send_to_a_reset_peer() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        client = socketeer.connect(listener.address, timeout=5)
        server = listener.accept(timeout=5)
    with client:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()
        with pytest.raises(ConnectionReset):
            for _ in range(100):
                client.send(b"x" * 65536)


def test_from_socket_with_socketpair() -> None:
    a, b = socket.socketpair()
    with (
        Connection.from_socket(a, timeout=5) as left,
        Connection.from_socket(b, timeout=5) as right,
    ):
        left.send_line("over a socketpair")
        assert right.recv_line() == b"over a socketpair"
        assert left.peer is None  # unnamed Unix sockets have no address
