"""SPEC §3: the asyncio layer passes the same conformance checks, on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from socketeer import (
    ConnectError,
    ConnectionClosed,
    ConnectionReset,
    FrameTooLarge,
    Timeout,
    UsageError,
    aio,
)

from .conftest import free_port_refusing, stream_listen_address

LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop",
        marks=pytest.mark.skipif(
            not aio.uvloop_available(), reason="uvloop is not installed (pip install uvloop)"
        ),
    ),
]
KINDS = ["tcp4", "tcp6", "unix", "unix-abstract"]

Pair = tuple[aio.Connection, aio.Connection]


@pytest.fixture(params=LOOPS)
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=KINDS)
def with_pair(
    request: pytest.FixtureRequest, sockdir: Path, loop_name: str
) -> Callable[[Callable[[Pair], Awaitable[None]]], None]:
    address = stream_listen_address(request.param, sockdir)

    def runner(body: Callable[[Pair], Awaitable[None]]) -> None:
        async def main() -> None:
            listener = await aio.listen(address)
            try:
                accepted = asyncio.ensure_future(listener.accept(timeout=10))
                client = await aio.connect(listener.address, timeout=10)
                server = await accepted
                server.timeout = 10
            finally:
                listener.close()
            try:
                await asyncio.wait_for(body((client, server)), 30)
            finally:
                await client.aclose()
                await server.aclose()

        aio.run(main(), use_uvloop=loop_name == "uvloop")

    return runner


def test_lines_frames_and_bytes(with_pair: Callable[..., None]) -> None:
    async def body(pair: Pair) -> None:
        client, server = pair
        await client.send_line("first")
        await client.send(b"second\r\n")
        await client.send_message(b"\x00frame\n")
        await client.send(b"a;rest")
        assert await server.recv_line() == b"first"
        assert await server.recv_line() == b"second"
        assert await server.recv_message() == b"\x00frame\n"
        assert await server.recv_until(b";") == b"a;"
        assert await server.recv_exactly(4) == b"rest"

    with_pair(body)


def test_half_close_then_reply(with_pair: Callable[..., None]) -> None:
    async def body(pair: Pair) -> None:
        client, server = pair
        await client.send(b"b\na\n")
        await client.shutdown_write()
        lines = [line async for line in server]
        for line in sorted(lines):
            await server.send_line(line)
        server.close()
        assert [line async for line in client] == [b"a", b"b"]

    with_pair(body)


def test_bulk_both_ways(with_pair: Callable[..., None]) -> None:
    payload = os.urandom(4 * 1024 * 1024)

    async def body(pair: Pair) -> None:
        client, server = pair
        sending = asyncio.ensure_future(client.send(payload))
        assert await server.recv_exactly(len(payload)) == payload
        await sending
        assert client.bytes_sent == len(payload)
        assert server.bytes_received == len(payload)

    with_pair(body)


def test_eof_errors_and_limits(with_pair: Callable[..., None]) -> None:
    async def body(pair: Pair) -> None:
        client, server = pair
        await client.send(struct.pack("!I", 1 << 30))
        with pytest.raises(FrameTooLarge):
            await server.recv_message(max_bytes=1024)
        await server.recv_exactly(4)
        await client.send(b"x" * 3000)
        with pytest.raises(FrameTooLarge):
            await server.recv_line(max_bytes=1000)
        await server.recv_exactly(3000)
        await client.send(b"abc")
        await client.shutdown_write()
        with pytest.raises(ConnectionClosed) as info:
            await server.recv_exactly(10)
        assert info.value.partial == b"abc"
        assert await server.recv() == b""

    with_pair(body)


def test_timeout(with_pair: Callable[..., None]) -> None:
    async def body(pair: Pair) -> None:
        _, server = pair
        server.timeout = 0.3
        with pytest.raises(Timeout):
            await server.recv_line()

    with_pair(body)


def test_closed_use_is_usage_error(with_pair: Callable[..., None]) -> None:
    async def body(pair: Pair) -> None:
        client, _ = pair
        client.close()
        with pytest.raises(UsageError):
            await client.send(b"x")

    with_pair(body)


def test_reset_mid_stream(loop_name: str) -> None:
    async def main() -> None:
        listener = await aio.listen("tcp://127.0.0.1:0")
        accepted = asyncio.ensure_future(listener.accept(timeout=10))
        client = await aio.connect(listener.address, timeout=10)
        server = await accepted
        listener.close()
        await server.send(b"partial")
        raw = server.transport.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()
        assert await client.recv_exactly(7) == b"partial"
        with pytest.raises(ConnectionReset):
            await client.recv_exactly(1)
        client.close()

    aio.run(main(), use_uvloop=loop_name == "uvloop")


def test_refused_and_datagrams(loop_name: str) -> None:
    async def main() -> None:
        sock, port = free_port_refusing()
        with sock, pytest.raises(ConnectError, match="connection refused"):
            await aio.connect(f"127.0.0.1:{port}", timeout=5)
        async with await aio.open_datagram(bind="udp://127.0.0.1:0", timeout=5) as server:
            async with await aio.open_datagram(server.local, timeout=5) as client:
                await client.send(b"ping")
                data, sender = await server.recv()
                assert (data, sender) == (b"ping", client.local)
                await server.send(b"pong", to=sender)
                assert (await client.recv())[0] == b"pong"
        async with await aio.open_datagram(bind="udp://127.0.0.1:0") as server:
            with pytest.raises(Timeout):
                await server.recv(timeout=0.2)

    aio.run(main(), use_uvloop=loop_name == "uvloop")


def test_unix_datagram_autobind(loop_name: str, sockdir: Path) -> None:
    async def main() -> None:
        path = f"unix-dgram:{sockdir}/ad.sock"
        async with await aio.open_datagram(bind=path, timeout=5) as server:
            async with await aio.open_datagram(path, timeout=5) as client:
                await client.send(b"hi")
                data, sender = await server.recv()
                await server.send(data.upper(), to=sender)
                assert (await client.recv())[0] == b"HI"

    aio.run(main(), use_uvloop=loop_name == "uvloop")
    assert os.listdir(sockdir) == []
