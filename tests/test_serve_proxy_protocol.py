"""``Server(accept_proxy_protocol=True)``: the header is read before the handler, and
``conn.peer`` (and the connection log) name the client the header names (SPEC §4)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import socketeer
import socketeer.aio
from socketeer.proxyproto import encode_v1, encode_v2
from socketeer.server import Server

CLIENT = socketeer.Address.parse("tcp://203.0.113.7:4242")
FRONT = socketeer.Address.parse("tcp://192.0.2.1:443")


def who_and_echo(conn: socketeer.Connection) -> None:
    conn.send_line(str(conn.peer).encode())
    conn.send_line(conn.recv_line())


async def who_and_echo_async(conn: socketeer.aio.Connection) -> None:
    await conn.send_line(str(conn.peer).encode())
    await conn.send_line(await conn.recv_line())


@pytest.fixture(params=["thread", "fork", "async"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    model = str(request.param)
    handler = who_and_echo_async if model == "async" else who_and_echo
    srv = Server("tcp://127.0.0.1:0", handler, model=model, accept_proxy_protocol=True)
    runner = threading.Thread(target=srv.serve_forever)
    runner.start()
    yield srv
    srv.shutdown(now=True)
    runner.join(15)


@pytest.mark.parametrize("encode", [encode_v1, encode_v2], ids=["v1", "v2"])
def test_the_handler_sees_the_client_the_header_names(server: Server, encode: object) -> None:
    header = encode(CLIENT, FRONT)  # type: ignore[operator]
    with socketeer.connect(server.address, timeout=10) as conn:
        # The header and the first line in one segment: the line is not lost.
        conn.send(header + b"hello\n")
        assert conn.recv_line() == str(CLIENT).encode()
        assert conn.recv_line() == b"hello"


def test_a_header_in_pieces_is_waited_for(server: Server) -> None:
    header = encode_v2(CLIENT, FRONT)
    with socketeer.connect(server.address, timeout=10) as conn:
        for i in range(0, len(header), 7):
            conn.send(header[i : i + 7])
        conn.send(b"late\n")
        assert conn.recv_line() == str(CLIENT).encode()
        assert conn.recv_line() == b"late"


def test_a_local_header_keeps_the_connecting_address(server: Server) -> None:
    """A LOCAL header (a health check's) names no client: the peer is the connection's."""
    with socketeer.connect(server.address, timeout=10) as conn:
        conn.send(encode_v2(None, None, local=True) + b"x\n")
        assert conn.recv_line() == str(conn.local).encode()
        assert conn.recv_line() == b"x"


def test_no_header_is_refused_and_the_server_keeps_serving(server: Server) -> None:
    with socketeer.connect(server.address, timeout=10) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv() == b""  # closed: nothing reached the handler
    with socketeer.connect(server.address, timeout=10):
        pass  # a health check: connects, sends nothing, leaves
    with socketeer.connect(server.address, timeout=10) as conn:
        conn.send(encode_v1(CLIENT, FRONT) + b"still\n")
        assert conn.recv_line() == str(CLIENT).encode()
        assert conn.recv_line() == b"still"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "udp://127.0.0.1:0", "handler": "echo"}, "needs a stream address"),
        ({"address": "tcp://127.0.0.1:0", "handler": "exec", "handler_args": ["cat"]}, "relay"),
    ],
)
def test_what_cannot_take_a_header_is_a_usage_error(kwargs: dict, message: str) -> None:
    with pytest.raises(socketeer.UsageError, match=message):
        Server(**kwargs, accept_proxy_protocol=True)


@pytest.mark.parametrize("handler", ["echo", "discard"])
@pytest.mark.parametrize("model", ["thread", "fork", "async"])
def test_builtin_handlers_keep_the_bytes_behind_the_header(handler: str, model: str) -> None:
    """echo and discard read the bare socket in the blocking models: the bytes that
    came with the header (already in the connection's buffer) are served first."""
    srv = Server("tcp://127.0.0.1:0", handler, model=model, accept_proxy_protocol=True)
    runner = threading.Thread(target=srv.serve_forever)
    runner.start()
    try:
        with socketeer.connect(srv.address, timeout=10) as conn:
            conn.send(encode_v2(CLIENT, FRONT) + b"first" + b"x" * 100_000)
            conn.shutdown_write()
            got = b""
            while chunk := conn.recv():
                got += chunk
        assert got == (b"first" + b"x" * 100_000 if handler == "echo" else b"")
    finally:
        srv.shutdown(now=True)
        runner.join(15)
