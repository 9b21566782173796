"""TLS half-close on ``socketeer.aio`` (SPEC §3, §5 on ``tls://``), on asyncio and uvloop.

``aio.Connection.shutdown_write`` sends close_notify and reads on until the
peer's close_notify or FIN, as the blocking ``Connection`` does
(tests/test_tls_half_close.py, whose plain-``ssl`` peers are reused here). The
server side too: ``aio.listen``/``Connection.from_socket(tls_server=...)``.
Handshake failures stay typed (``TLSError``, ``Timeout``) and leave no
descriptor behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trustme

import socketeer
from socketeer import Timeout, TLSError, aio
from socketeer.tls import TLSConfig

from .conftest import open_fds
from .test_tls_half_close import VERSIONS, Certs, RawTLSServer, raw_tls_client

LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop",
        marks=pytest.mark.skipif(
            not aio.uvloop_available(), reason="uvloop is not installed (pip install uvloop)"
        ),
    ),
]


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(VERSIONS))
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("aio-tls-half-close")
    authority = trustme.CA()
    issued = authority.issue_cert("localhost", "127.0.0.1")
    ca, server = folder / "ca.pem", folder / "server.pem"
    authority.cert_pem.write_to_path(str(ca))
    issued.private_key_and_cert_chain_pem.write_to_path(str(server))
    return Certs(str(ca), str(server), authority, issued)


def run(
    loop: str, main: Callable[[], Awaitable[None]], peer: threading.Thread | None = None
) -> None:
    """Run ``main`` on ``loop``; no descriptor it (or the ``peer`` thread) opened outlives it."""
    use_uvloop = loop == "uvloop"
    aio.run(asyncio.sleep(0), use_uvloop=use_uvloop)  # libuv's process-wide pipes, made once
    before = open_fds()

    async def wrapped() -> None:
        await main()

    aio.run(wrapped(), use_uvloop=use_uvloop)
    if peer is not None:
        peer.join(20)
        assert not peer.is_alive()
    assert open_fds() <= before


async def read_to_eof(conn: aio.Connection) -> bytes:
    chunks = []
    while data := await conn.recv(1 << 18):
        chunks.append(data)
    return b"".join(chunks)


# -- the client half-closes ------------------------------------------------------------------


def test_half_close_then_the_whole_reply(certs: Certs, loop: str, version: str) -> None:
    """The server answers only after our close_notify; all of it arrives, then EOF."""
    server = RawTLSServer(certs.server_context(version))

    async def main() -> None:
        context = certs.client_context(version)
        async with await aio.connect(server.address, tls=context, timeout=20) as conn:
            await conn.send(b"request")
            await conn.shutdown_write()
            assert await asyncio.to_thread(server.eof_seen.wait, 20)  # it read our close_notify
            assert await conn.recv_exactly(len(b"reply:request")) == b"reply:request"
            assert await conn.recv() == b""  # its close_notify after ours: EOF, not an error
            assert await conn.recv() == b""
            await conn.shutdown_write()  # a second half-close: nothing more to send
            assert conn.bytes_sent == len(b"request")
            assert conn.bytes_received == len(b"reply:request")

    run(loop, main)
    server.join()


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_a_peer_that_closes_without_close_notify(certs: Certs, loop: str, ending: str) -> None:
    """A peer that answers our close_notify by closing at once (FIN or reset): a clean end."""
    server = RawTLSServer(certs.server_context(), ending=ending)

    async def main() -> None:
        context = certs.client_context()
        async with await aio.connect(server.address, tls=context, timeout=20) as conn:
            await conn.send(b"request")
            await conn.shutdown_write()
            assert await conn.recv_exactly(13) == b"reply:request"
            server.reset_now.set()
            await asyncio.to_thread(server.join)
            assert await conn.recv() == b""

    run(loop, main)


def test_half_close_while_the_peer_is_still_sending(certs: Certs, loop: str, version: str) -> None:
    """Our close_notify goes out mid-stream (the reader paused, records waiting to be
    decrypted): every byte the peer sends still arrives."""
    size = 4 * 1024 * 1024
    server = RawTLSServer(certs.server_context(version), stream=size)
    got: list[bytes] = []

    async def main() -> None:
        context = certs.client_context(version)
        async with await aio.connect(server.address, tls=context, timeout=20) as conn:
            await conn.send(b"request")
            got.append(await conn.recv_exactly(256 * 1024))  # the stream is flowing
            await conn.shutdown_write()
            got.append(await read_to_eof(conn))

    run(loop, main)
    server.join()
    assert server.streamed == size
    assert sum(map(len, got)) == size + len(b"reply:request")
    assert got[-1].endswith(b"reply:request")


def test_half_close_with_the_reader_paused(certs: Certs, loop: str) -> None:
    """More than the reader's 1 MiB arrives unread (reading paused, and as a rule
    records left in the incoming BIO): the half-close decrypts them first, none lost."""
    payload = os.urandom(1_300_000)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    all_sent = threading.Event()
    tail: list[bytes] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with certs.server_context().wrap_socket(raw, server_side=True) as tls:
            tls.settimeout(20)
            tls.sendall(payload)
            all_sent.set()
            while data := tls.recv(65536):  # to our close_notify
                tail.append(data)
            tls.sendall(b"end")
            tls.unwrap()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def main() -> None:
        address = f"tls://127.0.0.1:{port}"
        async with await aio.connect(address, tls=certs.client_context(), timeout=20) as conn:
            assert await asyncio.to_thread(all_sent.wait, 20)
            await conn.shutdown_write()
            assert await read_to_eof(conn) == payload + b"end"

    try:
        run(loop, main, peer=thread)
    finally:
        listener.close()
    assert tail == []


# -- the server side: aio.listen and from_socket(tls_server=...) ------------------------------


def test_both_sides_half_close_on_aio(certs: Certs, loop: str, version: str) -> None:
    """An ``aio.listen`` server sorts what it reads until close_notify, answers, half-closes."""

    async def main() -> None:
        listener = await aio.listen("tls://127.0.0.1:0", tls=certs.server_context(version))
        async with listener:

            async def sort_lines() -> None:
                async with await listener.accept(timeout=20) as conn:
                    conn.timeout = 20
                    lines = sorted([line async for line in conn])
                    for line in lines:
                        await conn.send_line(line)
                    await conn.shutdown_write()
                    assert await conn.recv() == b""

            served = asyncio.ensure_future(sort_lines())
            context = certs.client_context(version)
            async with await aio.connect(listener.address, tls=context, timeout=20) as client:
                await client.send(b"pear\napple\nfig\n")
                await client.shutdown_write()
                assert [line async for line in client] == [b"apple", b"fig", b"pear"]
            await asyncio.wait_for(served, 20)

    run(loop, main)


def test_from_socket_tls_server_half_closes(certs: Certs, loop: str, version: str) -> None:
    """A plain ``ssl`` client sends, then close_notify; the aio server answers after it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: list[tuple[bytes, Any]] = []

    def client() -> None:
        result.append(raw_tls_client(certs.client_context(version), port, b"ping"))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()

    async def main() -> None:
        listener.setblocking(False)
        sock, _ = await asyncio.get_running_loop().sock_accept(listener)
        conn = await aio.Connection.from_socket(
            sock, timeout=20, tls_server=certs.server_context(version)
        )
        async with conn:
            assert conn.is_tls
            got = await read_to_eof(conn)  # ends at the client's close_notify
            await conn.send(b"pong:" + got)
            await conn.shutdown_write()
            assert await conn.recv() == b""

    try:
        run(loop, main, peer=thread)
    finally:
        listener.close()
    assert result and result[0][0] == b"pong:ping"


@pytest.mark.slow
def test_bulk_both_ways_then_half_close(certs: Certs, loop: str) -> None:
    """16 MB each way between aio client and aio server, flow control on both, then EOF."""
    size = 16 * 1024 * 1024
    payload = os.urandom(size)

    async def main() -> None:
        listener = await aio.listen("tls://127.0.0.1:0", tls=certs.server_context())
        async with listener:

            async def echo() -> None:
                async with await listener.accept(timeout=20) as conn:
                    conn.timeout = 20
                    while data := await conn.recv(1 << 18):
                        await conn.send(data)
                    await conn.shutdown_write()

            served = asyncio.ensure_future(echo())
            context = certs.client_context()
            async with await aio.connect(listener.address, tls=context, timeout=20) as client:

                async def send_all() -> None:
                    view = memoryview(payload)
                    for start in range(0, size, 1 << 20):
                        await client.send(view[start : start + (1 << 20)])
                    await client.shutdown_write()

                sending = asyncio.ensure_future(send_all())
                echoed = await read_to_eof(client)
                await sending
            await asyncio.wait_for(served, 20)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()

    run(loop, main)


# -- handshake failures: typed, and nothing left open ------------------------------------------


def test_an_untrusted_certificate_is_a_tls_error(certs: Certs, loop: str) -> None:
    listener = socketeer.listen("tls://127.0.0.1:0", tls=TLSConfig(cert=certs.server))
    refused: list[BaseException] = []

    def serve() -> None:
        try:
            listener.accept(timeout=20).close()
        except socketeer.SocketeerError as exc:  # our client's alert
            refused.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def main() -> None:
        with pytest.raises(TLSError, match="certificate verify failed"):
            await aio.connect(listener.address, tls=TLSConfig(), timeout=20)

    try:
        run(loop, main, peer=thread)
    finally:
        listener.close()
    assert refused and isinstance(refused[0], TLSError)


def test_a_silent_server_is_a_handshake_timeout(loop: str) -> None:
    """A TCP server that never answers the ClientHello."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel completes the connect
    port = silent.getsockname()[1]

    async def main() -> None:
        with pytest.raises(Timeout, match="TLS handshake timed out"):
            await aio.connect(f"tls://127.0.0.1:{port}", tls=TLSConfig(insecure=True), timeout=0.5)

    try:
        run(loop, main)
    finally:
        silent.close()


def test_server_handshake_failures(certs: Certs, loop: str, monkeypatch: Any) -> None:
    """A client that speaks no TLS: TLSError; one that says nothing: Timeout."""
    monkeypatch.setattr(socketeer.tls, "DEFAULT_HANDSHAKE_TIMEOUT", 0.5)

    async def main() -> None:
        listener = await aio.listen("tls://127.0.0.1:0", tls=certs.server_context())
        async with listener:
            port = listener.address.port
            plain = socket.create_connection(("127.0.0.1", port), timeout=20)
            with plain:
                plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
                with pytest.raises(TLSError, match="speaking TLS"):
                    await listener.accept(timeout=20)
            mute = socket.create_connection(("127.0.0.1", port), timeout=20)
            with mute:
                with pytest.raises(Timeout, match=r"TLS handshake timed out after 0\.5s"):
                    await listener.accept(timeout=20)

    run(loop, main)


def test_a_peer_that_drops_during_the_handshake(certs: Certs, loop: str) -> None:
    """The server closes as the ClientHello arrives: a TLSError, not a hang."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def drop() -> None:
        conn, _ = server.accept()
        conn.recv(1)
        conn.close()

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()

    async def main() -> None:
        with pytest.raises(TLSError):
            await aio.connect(f"tls://127.0.0.1:{port}", tls=certs.client_context(), timeout=20)

    try:
        run(loop, main)
    finally:
        thread.join(20)
        server.close()


def test_ssl_context_alpn_and_extra_info(certs: Certs, loop: str) -> None:
    """ALPN as the SSLContext says; the transport answers ssl_object/peercert/cipher."""
    server_context = certs.server_context()
    server_context.set_alpn_protocols(["h2", "http/1.1"])
    client_context = certs.client_context()
    client_context.set_alpn_protocols(["http/1.1"])

    async def main() -> None:
        listener = await aio.listen("tls://127.0.0.1:0", tls=server_context)
        async with listener:
            accepted = asyncio.ensure_future(listener.accept(timeout=20))
            async with await aio.connect(listener.address, tls=client_context, timeout=20) as conn:
                async with await accepted as server_side:
                    transport = conn.transport
                    assert isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject)
                    assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == (
                        "http/1.1"
                    )
                    assert transport.get_extra_info("peercert")["subjectAltName"]
                    assert transport.get_extra_info("cipher")[0]
                    assert conn.peer == server_side.local
                    assert server_side.is_tls

    run(loop, main)
