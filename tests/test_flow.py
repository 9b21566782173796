"""``_flow``: outboxes, the high-water mark, half-close after the drain, TLS records, would-block.

Real sockets only: socket pairs, a pipe, and a TLS connection over loopback
with a throwaway CA from ``trustme``.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trustme

from socketeer._flow import HIGH_WATER, Outlet, is_tls, receive_ready, would_block

from .conftest import cli_env

LINGER_ZERO = struct.pack("ii", 1, 0)  # close() then sends RST


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected stream pair with small buffers, so "the socket is full" comes soon."""
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


@pytest.fixture
def tls_pair(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    """(server side, client side) of a TLS connection on loopback, both non-blocking."""
    server_context, client_context = tls_contexts
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, _ = listener.accept()
    accepted.settimeout(10)
    clients: list[ssl.SSLSocket] = []
    thread = threading.Thread(
        target=lambda: clients.append(client_context.wrap_socket(raw, server_hostname="127.0.0.1"))
    )
    thread.start()
    server = server_context.wrap_socket(accepted, server_side=True)
    thread.join(10)
    (client,) = clients
    for sock in (server, client):
        sock.setblocking(False)
    yield server, client
    server.close()
    client.close()


def wait_readable(sock: socket.socket, timeout: float = 10) -> None:
    readable, _, _ = select.select([sock], [], [], timeout)
    assert readable, "no data came"


def drain(sock: socket.socket, size: int, timeout: float = 20) -> bytes:
    """Read ``size`` bytes from a non-blocking socket with receive_ready."""
    chunks: list[bytes] = []
    got = 0
    deadline = time.monotonic() + timeout
    while got < size:
        assert time.monotonic() < deadline, f"only {got} of {size} bytes came"
        wait_readable(sock)
        data = receive_ready(sock, 65536)
        if data is None:
            continue
        assert data, f"EOF after {got} of {size} bytes"
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


# -- receive_ready ---------------------------------------------------------------------------


def test_receive_ready_would_block_then_data_then_eof(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    assert receive_ready(b, 1024) is None  # nothing yet: would block, not EOF
    a.send(b"hello")
    wait_readable(b)
    assert receive_ready(b, 1024) == b"hello"
    a.shutdown(socket.SHUT_WR)
    wait_readable(b)
    assert receive_ready(b, 1024) == b""


def test_receive_ready_raises_a_reset() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, _ = listener.accept()
    with client, accepted:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        client.close()
        accepted.setblocking(False)
        wait_readable(accepted)
        with pytest.raises(ConnectionResetError):
            receive_ready(accepted, 1024)


def test_receive_ready_takes_the_records_tls_decrypted_already(
    tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    server, client = tls_pair
    payload = os.urandom(200_000)  # about 13 records of 16 KiB
    outlet = Outlet(client)
    outlet.queue(payload)
    received: list[bytes] = []
    got = 0
    deadline = time.monotonic() + 20
    while got < len(payload):
        assert time.monotonic() < deadline
        outlet.flush()
        select.select([server], [client] if outlet.pending else [], [], 1)
        data = receive_ready(server, 65536)
        if data is None:
            continue
        assert data
        received.append(data)
        got += len(data)
        # Whatever OpenSSL decrypted was taken: no event would announce it.
        assert server.pending() == 0
    assert b"".join(received) == payload
    assert receive_ready(server, 65536) is None  # would block: want-read is not EOF


def test_receive_ready_sees_a_tls_close_as_eof(
    tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    server, client = tls_pair
    client.send(b"last words")
    client.close()
    assert drain(server, len(b"last words")) == b"last words"
    wait_readable(server)
    assert receive_ready(server, 1024) == b""


# -- Outlet ----------------------------------------------------------------------------------


def test_partial_sends_and_would_block(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    payload = os.urandom(4 * 1024 * 1024)
    outlet = Outlet(a)
    outlet.queue(payload)
    first = outlet.flush()
    assert 0 < first < len(payload)  # the socket took what fits
    assert outlet.pending == len(payload) - first
    assert outlet.flush() == 0  # full: would block, not an error
    assert outlet.pending == len(payload) - first
    received = bytearray()
    deadline = time.monotonic() + 20
    while len(received) < len(payload):
        assert time.monotonic() < deadline
        select.select([b], [a] if outlet.pending else [], [], 1)
        outlet.flush()
        data = receive_ready(b, 65536)
        if data:
            received += data
    assert received == payload
    assert outlet.pending == 0


def test_high_water_mark(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    outlet = Outlet(a, high_water=1000)
    assert outlet.has_room
    outlet.queue(b"x" * 999)
    assert outlet.has_room
    outlet.queue(b"x")
    assert not outlet.has_room  # at the mark: the caller stops reading the other side
    outlet.flush()
    assert outlet.has_room
    assert Outlet(a).has_room and HIGH_WATER == 1 << 20


def test_finish_half_closes_only_after_the_drain(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    payload = os.urandom(1024 * 1024)
    outlet = Outlet(a)
    outlet.queue(payload)
    outlet.flush()
    outlet.finish()
    assert outlet.finishing and not outlet.done  # bytes still queued: no SHUT_WR yet
    with pytest.raises(ValueError):
        outlet.queue(b"more")
    received = bytearray()
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline
        select.select([b], [a] if outlet.pending else [], [], 1)
        outlet.flush()
        data = receive_ready(b, 65536)
        if data is None:
            continue
        if not data:
            break  # the EOF comes after every byte
        received += data
    assert received == payload
    assert outlet.done
    b.send(b"still open the other way")  # a half-close, not a close
    wait_readable(a)
    assert a.recv(100) == b"still open the other way"


def test_finish_with_nothing_queued_is_done_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    outlet = Outlet(a)
    outlet.finish()
    assert outlet.done
    wait_readable(b)
    assert receive_ready(b, 1024) == b""
    outlet.finish()  # twice is harmless
    assert outlet.flush() == 0


def test_finish_without_half_close_keeps_writing_open(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    outlet = Outlet(a)
    outlet.queue(b"data")
    outlet.finish(half_close=False)
    assert not outlet.done
    outlet.flush()
    assert outlet.done
    wait_readable(b)
    assert receive_ready(b, 1024) == b"data"
    assert receive_ready(b, 1024) is None  # no EOF: --no-shutdown
    a.send(b"more")  # still writable
    wait_readable(b)
    assert receive_ready(b, 1024) == b"more"


def test_finish_calls_a_given_end_instead(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    ended: list[int] = []
    outlet = Outlet(a, end=lambda: ended.append(outlet.pending))
    outlet.queue(b"abc")
    outlet.finish()
    assert ended == []
    outlet.flush()
    assert ended == [0]
    wait_readable(b)
    assert receive_ready(b, 1024) == b"abc"
    assert receive_ready(b, 1024) is None  # the given end did not shut the socket down


def test_tls_outlet_drains_then_sends_close_notify(
    tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    server, client = tls_pair
    assert is_tls(client)
    with socket.socket() as plain:
        assert not is_tls(plain)
    payload = os.urandom(3 * 1024 * 1024)
    outlet = Outlet(client)
    outlet.queue(payload)
    outlet.finish()
    done = threading.Event()

    def write() -> None:
        deadline = time.monotonic() + 20
        while not outlet.done and time.monotonic() < deadline:
            select.select([], [client], [], 1)
            outlet.flush()  # TLS's want-write counts as would-block
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    received = drain(server, len(payload))
    writer.join(20)
    assert done.is_set() and outlet.done
    assert received == payload
    # TLS's half-close is close_notify after the data: the peer reads EOF,
    # and the other way stays open (client still reads).
    wait_readable(server)
    assert receive_ready(server, 1024) == b""
    server.send(b"the other way is open")
    assert drain(client, 21) == b"the other way is open"


def test_outlet_over_a_non_blocking_pipe() -> None:
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        outlet = Outlet(write_end)
        outlet.queue(os.urandom(1024 * 1024))
        first = outlet.flush()
        assert 0 < first < 1024 * 1024  # the pipe took what fits
        assert outlet.flush() == 0
        os.read(read_end, 65536)
        assert outlet.flush() > 0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_reset_peer_raises_and_keeps_the_rest_queued() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, _ = listener.accept()
    with client:
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        accepted.close()  # RST
        client.setblocking(False)
        outlet = Outlet(client)
        deadline = time.monotonic() + 10
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while time.monotonic() < deadline:
                outlet.queue(b"x" * 65536)
                outlet.flush()
                time.sleep(0.01)
        assert outlet.pending >= 65536


def test_flow_does_not_import_ssl() -> None:
    code = (
        "import sys, socketeer._flow as f; assert 'ssl' not in sys.modules, 'ssl imported'; "
        "assert f.would_block() == (BlockingIOError,)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=cli_env(), timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert set(would_block()) == {BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError}
