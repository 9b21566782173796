"""TLS half-close (SPEC §5, §6 on ``tls://``): close_notify sent, the socket still read.

A request-then-EOF exchange over TLS: the client sends close_notify where TCP
would send FIN, and reads the reply, which the server sends only after that
close_notify (a "sort" server). The same holds through every relay model in
both directions (a TLS side's close_notify becomes a TCP FIN, a TCP FIN becomes
close_notify), and against real peers (openssl, ncat).

Certificates come from ``trustme`` (a throwaway CA per module).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import socketeer
from socketeer.tls import TLSConfig, close_notify

from .conftest import SOCKETEER, Background, cli_env, require_peer, run_cli, serve_once
from .conftest import free_port as pick_free_port

VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


@dataclass
class Certs:
    ca: str
    server: str  # key and chain in one PEM
    authority: trustme.CA
    issued: trustme.LeafCert

    def server_context(self, version: str = "tls1.3") -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.issued.configure_cert(context)
        context.maximum_version = VERSIONS[version]
        return context

    def client_context(self, version: str = "tls1.3") -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.authority.configure_trust(context)
        context.maximum_version = VERSIONS[version]
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls-half-close")
    authority = trustme.CA()
    issued = authority.issue_cert("localhost", "127.0.0.1")
    ca, server = folder / "ca.pem", folder / "server.pem"
    authority.cert_pem.write_to_path(str(ca))
    issued.private_key_and_cert_chain_pem.write_to_path(str(server))
    return Certs(str(ca), str(server), authority, issued)


@pytest.fixture(params=list(VERSIONS))
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- peers made with the ssl module alone (the far end is not the code under test) --------


class RawTLSServer:
    """A one-client TLS server on plain ``ssl``: reads to EOF, then ``answer(received)``.

    ``ending`` is how it ends after answering: ``"close_notify"`` (its own,
    then close), ``"fin"`` (close without close_notify) or ``"rst"``
    (SO_LINGER 0: a reset).
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        answer: Callable[[bytes], bytes] = lambda got: b"reply:" + got,
        *,
        ending: str = "close_notify",
        stream: int = 0,
    ) -> None:
        self.context = context
        self.answer = answer
        self.ending = ending
        self.stream = stream  # bytes sent while still reading (the client half-closes mid-way)
        self.received = b""
        self.eof_seen = threading.Event()
        self.reset_now = threading.Event()  # "rst": the client has read the answer
        self.error: BaseException | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        try:
            self.listener.settimeout(20)
            raw, _ = self.listener.accept()
            with self.context.wrap_socket(raw, server_side=True) as tls:
                tls.settimeout(20)
                self._read_to_eof(tls)
                self.eof_seen.set()
                tls.sendall(self.answer(self.received))
                if self.ending == "close_notify":
                    tls.unwrap()  # ours was received: this sends its own and returns
                elif self.ending == "rst":
                    assert self.reset_now.wait(20)
                    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.listener.close()

    def _read_to_eof(self, tls: ssl.SSLSocket) -> None:
        if not self.stream:
            while data := tls.recv(65536):
                self.received += data
            return
        tls.setblocking(False)
        chunk, sent, eof = os.urandom(65536), 0, False
        deadline = time.monotonic() + 20
        while (not eof or sent < self.stream) and time.monotonic() < deadline:
            writing = [tls] if sent < self.stream else []
            readable, writable, _ = select.select([] if eof else [tls], writing, [], 1)
            if writable:
                with contextlib.suppress(ssl.SSLWantWriteError):
                    sent += tls.send(chunk[: self.stream - sent])
            if readable or tls.pending():
                try:
                    data = tls.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                eof = not data
                self.received += data
        self.streamed = sent
        tls.settimeout(20)

    def join(self) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def raw_tls_client(
    context: ssl.SSLContext, port: int, request: bytes
) -> tuple[bytes, type[BaseException] | None]:
    """Send ``request``, then close_notify (``tls.close_notify``); read to the end."""
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="localhost"
    )
    with sock:
        sock.sendall(request)
        socket.socket.sendall(sock, close_notify(sock))
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ssl.SSLZeroReturnError as exc:  # its close_notify after ours
                return received, type(exc)
            if not data:
                return received, None
            received += data


def sort_lines(conn: socketeer.Connection) -> None:
    """Answers only after EOF, like ``sort``; ends with a half-close of its own."""
    lines = sorted(conn)
    for line in lines:
        conn.send_line(line)
    conn.shutdown_write()
    assert conn.recv(10) == b""


# -- the library: blocking Connection -------------------------------------------------------


def test_shutdown_write_over_tls_then_the_whole_reply(certs: Certs, version: str) -> None:
    server = RawTLSServer(certs.server_context(version))
    with socketeer.connect(server.address, tls=certs.client_context(version), timeout=20) as conn:
        conn.send(b"request")
        conn.shutdown_write()
        assert server.eof_seen.wait(20)  # the server read EOF: our close_notify
        assert conn.recv_exactly(len(b"reply:request")) == b"reply:request"
        assert conn.recv() == b""  # its close_notify after ours: EOF, not an error
        assert conn.recv() == b""
    server.join()


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_a_peer_that_closes_without_close_notify(certs: Certs, ending: str) -> None:
    """A peer that answers our close_notify by closing at once: a clean end.

    (Python's ``ssl`` reads a reset as an unclean EOF, which ``recv`` returns
    as ``b""``, half-closed or not.)
    """
    server = RawTLSServer(certs.server_context(), ending=ending)
    with socketeer.connect(server.address, tls=certs.client_context(), timeout=20) as conn:
        conn.send(b"request")
        conn.shutdown_write()
        assert conn.recv_exactly(13) == b"reply:request"
        server.reset_now.set()
        server.join()
        assert conn.recv() == b""


def test_both_sides_half_close_with_socketeer(certs: Certs, version: str) -> None:
    context = certs.server_context(version)
    with socketeer.listen("tls://127.0.0.1:0", tls=context) as listener:
        done: list[BaseException | None] = []

        def serve() -> None:
            try:
                with listener.accept(timeout=20) as conn:
                    conn.timeout = 20
                    sort_lines(conn)
                done.append(None)
            except BaseException as exc:
                done.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = socketeer.connect(listener.address, tls=certs.client_context(version), timeout=20)
        with client:
            client.send(b"pear\napple\nfig\n")
            client.shutdown_write()
            assert list(client) == [b"apple", b"fig", b"pear"]
        thread.join(20)
    assert done == [None]


def test_half_close_while_the_peer_is_still_sending(certs: Certs, version: str) -> None:
    """Our close_notify goes out mid-stream: every byte the peer sends still arrives.

    (``SSLSocket.unwrap`` would read the socket right after sending, and
    OpenSSL fails on application data found there: this is why it is not
    used as it is.)
    """
    size = 4 * 1024 * 1024
    server = RawTLSServer(certs.server_context(version), stream=size)
    with socketeer.connect(server.address, tls=certs.client_context(version), timeout=20) as conn:
        conn.send(b"request")
        first = conn.recv_exactly(256 * 1024)  # the stream is flowing
        conn.shutdown_write()
        rest = b""
        while data := conn.recv():
            rest += data
    server.join()
    assert server.streamed == size
    assert len(first) + len(rest) == size + len(b"reply:request")
    assert rest.endswith(b"reply:request")


def test_decrypted_bytes_waiting_at_the_half_close_are_kept(certs: Certs) -> None:
    payload = os.urandom(12000)  # one record: decrypted whole, read in part
    server = RawTLSServer(certs.server_context(), answer=lambda got: payload)
    with socketeer.connect(server.address, tls=certs.client_context(), timeout=20) as conn:
        conn.shutdown_write()
        sock = conn.socket
        head = sock.recv(100)
        assert sock.pending() > 0  # type: ignore[attr-defined]
        conn.shutdown_write()  # a second half-close: harmless, and it keeps what waits
        assert head + conn.recv_exactly(len(payload) - 100) == payload
        assert conn.recv() == b""
    server.join()


def test_the_server_side_half_closes_too(certs: Certs) -> None:
    """A ``socketeer.listen`` server's ``shutdown_write``, read by a plain ``ssl`` client."""
    with socketeer.listen("tls://127.0.0.1:0", tls=TLSConfig(cert=certs.server)) as listener:

        def greet(conn: socketeer.Connection) -> None:
            conn.send(b"hello")
            conn.shutdown_write()
            assert conn.recv_exactly(3) == b"bye"
            assert conn.recv() == b""

        thread = serve_once(listener, greet)
        client = certs.client_context().wrap_socket(
            socket.create_connection(("127.0.0.1", listener.address.port), timeout=20),
            server_hostname="localhost",
        )
        with client:
            got = b""
            while data := client.recv(100):  # its close_notify: b"" (ours not sent yet)
                got += data
            assert got == b"hello"
            client.sendall(b"bye")  # still writable after the peer's close_notify
            socket.socket.sendall(client, close_notify(client))
            thread.join(20)
        assert not thread.is_alive()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_aio_tls_shutdown_write_then_the_whole_reply(certs: Certs, loop: str) -> None:
    """``aio.Connection.shutdown_write`` over TLS sends close_notify and reads on
    (tests/test_aio_tls_half_close.py has the rest)."""
    from socketeer import aio

    with socketeer.listen("tls://127.0.0.1:0", tls=TLSConfig(cert=certs.server)) as listener:
        thread = serve_once(listener, sort_lines)

        async def main() -> None:
            conn = await aio.connect(listener.address, tls=TLSConfig(ca=certs.ca), timeout=20)
            async with conn:
                await conn.send(b"pear\napple\n")
                await conn.shutdown_write()
                assert [line async for line in conn] == [b"apple", b"pear"]

        aio.run(main(), use_uvloop=loop == "uvloop")
        thread.join(20)
        assert not thread.is_alive()


# -- the CLI: connect and listen -----------------------------------------------------------


def test_connect_stdin_eof_sends_close_notify(certs: Certs, version: str) -> None:
    server = RawTLSServer(certs.server_context(version))
    result = run_cli("connect", "--ca", certs.ca, server.address, input=b"req")
    server.join()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"reply:req"
    assert result.stderr == b""


def test_connect_to_a_peer_that_closes_at_once(certs: Certs) -> None:
    server = RawTLSServer(certs.server_context(), ending="fin")
    result = run_cli("connect", "--ca", certs.ca, server.address, input=b"req")
    server.join()
    assert (result.returncode, result.stdout, result.stderr) == (0, b"reply:req", b"")


def test_listen_stdin_eof_sends_close_notify(
    certs: Certs, background: type[Background], version: str
) -> None:
    server = background(
        [*SOCKETEER, "listen", "--cert", certs.server, "tls://127.0.0.1:0"],
        stdin=subprocess.PIPE,
    )
    port = socketeer.Address.parse(server.wait_listening()).port
    assert port is not None
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"from listen")
    server.proc.stdin.close()
    received, ended_by = raw_tls_client(certs.client_context(version), port, b"from client")
    assert received == b"from listen"
    out, err, code = server.finish()
    assert (out, code) == (b"from client", 0), err
    assert ended_by in (None, ssl.SSLZeroReturnError)


def test_listen_keep_open_half_closes_each_tls_client(
    certs: Certs, background: type[Background]
) -> None:
    """``listen -k`` after stdin's end: each new TLS client gets close_notify, and is read."""
    server = background(
        [*SOCKETEER, "listen", "-k", "-v", "--cert", certs.server, "tls://127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
    )
    port = socketeer.Address.parse(server.wait_listening()).port
    assert port is not None
    for name in (b"one;", b"two;"):
        received, _ = raw_tls_client(certs.client_context(), port, name)
        assert received == b""  # nothing from stdin: EOF (its close_notify) at once
    server.wait_for_stderr(b"closed the connection", count=2)  # our close_notify: its EOF
    server.proc.terminate()
    out, _, _ = server.finish()
    assert out == b"one;two;"


# -- relays: every model, both directions ------------------------------------------------------


MODELS = ["async", "thread", "fork"]


def _relay(background: type[Background], *argv: str) -> tuple[Background, str]:
    relay = background([*SOCKETEER, "relay", "-v", *argv], stdin=subprocess.DEVNULL)
    return relay, relay.wait_listening()


def _stop(relay: Background) -> bytes:
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0, err
    return err


@pytest.mark.parametrize("model", MODELS)
def test_tcp_to_tls_relay_passes_eof_on_as_close_notify(
    certs: Certs, background: type[Background], model: str
) -> None:
    server = RawTLSServer(certs.server_context())
    relay, address = _relay(
        background, "--model", model, "--ca", certs.ca, "tcp://127.0.0.1:0", server.address
    )
    with socketeer.connect(address, timeout=20) as conn:
        conn.send(b"request")
        conn.shutdown_write()  # a TCP FIN, which the relay turns into close_notify
        assert list(conn) == [b"reply:request"]
    server.join()
    relay.wait_for_stderr(b"7 bytes in, 13 bytes out")
    _stop(relay)


@pytest.mark.parametrize("model", MODELS)
def test_tls_to_tcp_relay_passes_close_notify_on_as_fin(
    certs: Certs, background: type[Background], model: str
) -> None:
    sorter = background(
        [*SOCKETEER, "serve", "tcp://127.0.0.1:0", "exec", "--", "sort"], stdin=subprocess.DEVNULL
    )
    relay, address = _relay(
        background,
        "--model",
        model,
        "--cert",
        certs.server,
        "tls://127.0.0.1:0",
        sorter.wait_listening(),
    )
    with socketeer.connect(address, tls=TLSConfig(ca=certs.ca), timeout=20) as conn:
        conn.send(b"pear\napple\nfig\n")
        conn.shutdown_write()  # close_notify, which the relay turns into a TCP FIN
        assert list(conn) == [b"apple", b"fig", b"pear"]
    relay.wait_for_stderr(b"15 bytes in, 15 bytes out")
    _stop(relay)


@pytest.mark.parametrize("model", MODELS)
def test_tls_to_tls_relay_half_closes_both_ways(
    certs: Certs, background: type[Background], model: str
) -> None:
    server = RawTLSServer(certs.server_context())
    relay, address = _relay(
        background,
        "--model",
        model,
        "--cert",
        certs.server,
        "--ca",
        certs.ca,
        "tls://127.0.0.1:0",
        server.address,
    )
    with socketeer.connect(address, tls=TLSConfig(ca=certs.ca), timeout=20) as conn:
        conn.send(b"request")
        conn.shutdown_write()
        assert conn.recv_exactly(13) == b"reply:request"
        assert conn.recv() == b""
    server.join()
    relay.wait_for_stderr(b"7 bytes in, 13 bytes out")
    _stop(relay)


@pytest.mark.parametrize("model", ["async", "thread"])
def test_relay_half_close_while_the_tls_upstream_streams(
    certs: Certs, background: type[Background], model: str
) -> None:
    size = 4 * 1024 * 1024
    server = RawTLSServer(certs.server_context(), stream=size)
    relay, address = _relay(
        background, "--model", model, "--ca", certs.ca, "tcp://127.0.0.1:0", server.address
    )
    with socketeer.connect(address, timeout=20) as conn:
        conn.send(b"request")
        first = conn.recv_exactly(256 * 1024)
        conn.shutdown_write()
        rest = b""
        while data := conn.recv():
            rest += data
    server.join()
    assert len(first) + len(rest) == size + 13
    assert rest.endswith(b"reply:request")
    _stop(relay)


def test_loop_pair_keeps_what_the_tls_side_decrypted_at_its_half_close(certs: Certs) -> None:
    """The event-loop pair half-closes a TLS upstream whose decrypted bytes wait unread.

    A buffer smaller than a record leaves decrypted bytes in the SSL object
    (``pending()``) while the way down is held by a client that does not
    read; the client's EOF then half-closes the upstream. Those bytes would
    be lost to the close_notify: they must still reach the client, in order.
    """
    import asyncio

    from socketeer.relay.looped import LoopPair, PipePool

    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw_upstream = socket.create_connection(listener.getsockname(), timeout=20)
        peer_raw, _ = listener.accept()
    tls_peer: list[ssl.SSLSocket] = []
    handshake = threading.Thread(
        target=lambda: tls_peer.append(
            certs.server_context().wrap_socket(peer_raw, server_side=True)
        )
    )
    handshake.start()
    upstream = certs.client_context().wrap_socket(raw_upstream, server_hostname="localhost")
    handshake.join(20)
    (peer,) = tls_peer
    peer.settimeout(20)
    client, relay_side = socket.socketpair()
    relay_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    down = os.urandom(256 * 1024)  # more than the socket pair holds: the way down is held
    peer.sendall(down)
    ended: list[LoopPair] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        upstream.setblocking(False)
        relay_side.setblocking(False)
        pair = LoopPair(
            loop,
            relay_side,
            upstream,
            pool=PipePool(loop),
            buffer=memoryview(bytearray(1000)),  # less than a record: pending() stays > 0
            on_end=ended.append,
            upstream_name="upstream",
        )
        pair.start()
        while not pair.down.held:
            await asyncio.sleep(0.01)
        assert upstream.pending() > 0
        client.sendall(b"request")
        client.shutdown(socket.SHUT_WR)
        while not pair.up.done:
            await asyncio.sleep(0.01)
        got = b""
        client.setblocking(False)
        while len(got) < len(down):
            try:
                got += client.recv(65536)
            except BlockingIOError:
                await asyncio.sleep(0.005)
        assert got == down

    seen_by_peer: list[bytes] = []
    reader = threading.Thread(target=lambda: seen_by_peer.append(peer.recv(100)))
    reader.start()
    try:
        asyncio.run(asyncio.wait_for(main(), 30))
        reader.join(20)
        assert seen_by_peer == [b"request"]
        assert peer.recv(100) == b""  # the relay's close_notify after the request
    finally:
        peer.close()
        client.close()
        relay_side.close()
        upstream.close()


def test_stdio_relay_to_a_tls_upstream_passes_eof_on(certs: Certs) -> None:
    server = RawTLSServer(certs.server_context())
    result = subprocess.run(
        [*SOCKETEER, "relay", "--ca", certs.ca, "-", server.address],
        input=b"through stdio",
        capture_output=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"reply:through stdio"
    server.join()


# -- real peers -------------------------------------------------------------------------------


@pytest.fixture
def free_port() -> int:
    return pick_free_port()


@pytest.mark.peer
def test_openssl_s_server_sees_close_notify(
    certs: Certs, background: type[Background], free_port: int
) -> None:
    openssl = require_peer("openssl")
    server = background(
        [
            openssl,
            "s_server",
            "-quiet",
            "-naccept",
            "1",
            "-cert",
            certs.server,
            "-accept",
            f"127.0.0.1:{free_port}",
        ],  # stdin stays open: s_server ends a session at its stdin's EOF too
    )
    _wait_port(free_port, server)  # s_server says nothing when ready, and serves one client
    result = run_cli("connect", "--ca", certs.ca, f"tls://127.0.0.1:{free_port}", input=b"hi\n")
    out, err, code = server.finish()
    assert result.returncode == 0, result.stderr
    assert out == b"hi\n"  # s_server printed what came, and ended at our close_notify
    assert code == 0, err


def _wait_port(port: int, server: Background) -> None:
    """Wait until something listens on ``port``, without connecting to it."""
    deadline = time.monotonic() + 15
    needle = f"{port:04X}"
    while True:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as rows:
                for row in rows.readlines()[1:]:
                    fields = row.split()
                    if fields[1].endswith(":" + needle) and fields[3] == "0A":  # LISTEN
                        return
        assert server.proc.poll() is None, server.stderr_lines
        assert time.monotonic() < deadline, server.stderr_lines
        time.sleep(0.05)


@pytest.mark.peer
def test_openssl_s_client_half_close_to_listen(certs: Certs, background: type[Background]) -> None:
    """``s_client -ign_eof`` keeps reading after its stdin ends; listen's close_notify ends it."""
    openssl = require_peer("openssl")
    server = background([*SOCKETEER, "listen", "--cert", certs.server, "tls://127.0.0.1:0"])
    port = socketeer.Address.parse(server.wait_listening()).port
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"from listen\n")
    server.proc.stdin.close()
    client = subprocess.run(
        [
            openssl,
            "s_client",
            "-quiet",
            "-ign_eof",
            "-CAfile",
            certs.ca,
            "-connect",
            f"127.0.0.1:{port}",
        ],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert b"from listen\n" in client.stdout, client.stderr
    assert client.returncode == 0, client.stderr
    server.proc.terminate()  # s_client does not half-close: listen waits for its EOF
    server.finish()


@pytest.mark.peer
def test_ncat_ssl_client_request_to_a_tls_relay(
    certs: Certs, background: type[Background], tmp_path: Path
) -> None:
    """ncat --ssl through a TLS-terminating relay to ``sort``: the whole reply comes back."""
    ncat = require_peer("ncat")
    sorter = background(
        [*SOCKETEER, "serve", "tcp://127.0.0.1:0", "exec", "--", "sort"], stdin=subprocess.DEVNULL
    )
    relay, address = _relay(
        background, "--cert", certs.server, "tls://127.0.0.1:0", sorter.wait_listening()
    )
    port = socketeer.Address.parse(address).port
    client = subprocess.run(
        [ncat, "--ssl", "--ssl-trustfile", certs.ca, "--ssl-verify", "localhost", str(port)],
        input=b"pear\napple\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    # ncat before 7.96 closes at stdin EOF without close_notify: the relay reads
    # that FIN as EOF all the same and passes it on, and the reply finds no one
    # (ncat 7.96 and later half-close with close_notify, and print it).
    assert client.returncode == 0, client.stderr
    assert client.stdout in (b"", b"apple\npear\n")
    relay.wait_for_stderr(b"11 bytes in")
    _stop(relay)
