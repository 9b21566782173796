"""TLS for connect and listen: secure defaults, mutual TLS, pinning, errors, openssl interop.

Certificates come from ``trustme`` (a throwaway CA per test run), never from
files checked in with their keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import socketeer
import socketeer.aio
from socketeer import TLSError
from socketeer.tls import TLSConfig

from .conftest import NOBODY, SOCKETEER, Background, cli_env, require_peer, run_cli


@dataclass
class Certs:
    ca: str
    server: str  # key and chain in one PEM
    client: str
    other_client: str  # signed by another CA
    wrong_host: str
    expired: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()

    def write(name: str, blob: trustme.Blob) -> str:
        path = folder / name
        blob.write_to_path(str(path))
        return str(path)

    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    return Certs(
        ca=write("ca.pem", ca.cert_pem),
        server=write(
            "server.pem", ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem
        ),
        client=write("client.pem", ca.issue_cert("client@test").private_key_and_cert_chain_pem),
        other_client=write(
            "other.pem", other.issue_cert("client@test").private_key_and_cert_chain_pem
        ),
        wrong_host=write(
            "wrong.pem", ca.issue_cert("elsewhere.test").private_key_and_cert_chain_pem
        ),
        expired=write(
            "expired.pem",
            ca.issue_cert(
                "127.0.0.1",
                not_before=past,
                not_after=past + datetime.timedelta(days=1),
            ).private_key_and_cert_chain_pem,
        ),
    )


@pytest.fixture
def tls_server(certs: Certs) -> Iterator[object]:
    """Start a one-client TLS echo-line server with a given server config."""
    started: list[tuple[socketeer.Listener, threading.Thread]] = []
    errors: list[BaseException] = []

    def start(config: TLSConfig) -> str:
        listener = socketeer.listen("tls://127.0.0.1:0", tls=config)

        def serve() -> None:
            try:
                with listener.accept(timeout=10) as conn:
                    conn.timeout = 10
                    conn.send_line(b"echo " + conn.recv_line())
            except socketeer.SocketeerError as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started.append((listener, thread))
        return str(listener.address)

    start.errors = errors  # type: ignore[attr-defined]
    yield start
    for listener, thread in started:
        thread.join(10)
        listener.close()


def test_round_trip_verified_by_a_private_ca(certs: Certs, tls_server) -> None:  # type: ignore[no-untyped-def]
    address = tls_server(TLSConfig(cert=certs.server))
    with socketeer.connect(address, tls=TLSConfig(ca=certs.ca), timeout=10) as conn:
        assert conn.is_tls
        conn.send_line("hi")
        assert conn.recv_line() == b"echo hi"
        conn.shutdown_write()  # close_notify (tests/test_tls_half_close.py)
        assert conn.recv() == b""


@pytest.mark.parametrize(
    ("server_cert", "client", "message"),
    [
        ("server", TLSConfig(), "certificate verify failed: unable to get local issuer"),
        ("wrong_host", "ca", "certificate verify failed: IP address mismatch"),
        ("expired", "ca", "certificate verify failed: certificate has expired"),
        ("server", "wrong-name", "certificate verify failed: Hostname mismatch"),
        ("server", TLSConfig(pin="00" * 32), "certificate pin mismatch"),
    ],
)
def test_certificate_failures_name_their_cause(
    certs: Certs,
    tls_server,
    server_cert: str,  # type: ignore[no-untyped-def]
    client: object,
    message: str,
) -> None:
    address = tls_server(TLSConfig(cert=getattr(certs, server_cert)))
    if client == "ca":
        client = TLSConfig(ca=certs.ca)
    elif client == "wrong-name":
        client = TLSConfig(ca=certs.ca, server_name="other.test")
    with pytest.raises(TLSError, match=re.escape(message)) as info:
        socketeer.connect(address, tls=client, timeout=10)
    assert info.value.exit_code == 1
    assert "\n" not in str(info.value)


def test_pin_and_insecure_accept_an_unverified_server(certs: Certs, tls_server) -> None:  # type: ignore[no-untyped-def]
    from socketeer.tls import fingerprint

    address = tls_server(TLSConfig(cert=certs.wrong_host))
    with socketeer.connect(address, tls=TLSConfig(insecure=True), timeout=10) as conn:
        der = conn.socket.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        conn.send_line("insecure")
        assert conn.recv_line() == b"echo insecure"
    address = tls_server(TLSConfig(cert=certs.wrong_host))
    with socketeer.connect(address, tls=TLSConfig(pin=fingerprint(der)), timeout=10) as conn:
        conn.send_line("pinned")
        assert conn.recv_line() == b"echo pinned"


def test_mutual_tls(certs: Certs, tls_server) -> None:  # type: ignore[no-untyped-def]
    server = TLSConfig(cert=certs.server, ca=certs.ca)
    address = tls_server(server)
    with socketeer.connect(
        address, tls=TLSConfig(ca=certs.ca, cert=certs.client), timeout=10
    ) as conn:
        conn.send_line("mine")
        assert conn.recv_line() == b"echo mine"
    for client_cert in (None, certs.other_client):
        address = tls_server(server)
        with pytest.raises(TLSError):  # the server refuses; TLS 1.3 tells at the first read
            with socketeer.connect(
                address, tls=TLSConfig(ca=certs.ca, cert=client_cert), timeout=10
            ) as conn:
                conn.send_line("x")
                conn.recv_line()
    deadline = time.monotonic() + 10  # the server threads log their side too
    while len(tls_server.errors) < 2:
        assert time.monotonic() < deadline, tls_server.errors
        time.sleep(0.02)
    assert all(isinstance(e, TLSError) for e in tls_server.errors)


# -- the command line --------------------------------------------------------------------


def test_cli_connect(certs: Certs, tls_server) -> None:  # type: ignore[no-untyped-def]
    address = tls_server(TLSConfig(cert=certs.server))  # replies to a line, then closes
    result = run_cli("connect", "--ca", certs.ca, address, input=b"from the client\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"echo from the client\n"


def test_cli_listen(certs: Certs, background: type[Background]) -> None:
    server = background([*SOCKETEER, "listen", "--cert", certs.server, "tls://127.0.0.1:0"])
    address = server.wait_listening()
    assert address.startswith("tls://127.0.0.1:")
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"from the server\n")
    server.proc.stdin.flush()
    with socketeer.connect(address, tls=TLSConfig(ca=certs.ca), timeout=10) as client:
        client.send_line("from the client")
        assert client.recv_line() == b"from the server"
        assert server.proc.stdout is not None
        assert server.proc.stdout.readline() == b"from the client\n"
    out, _, code = server.finish()
    assert (out, code) == (b"", 0)


def test_cli_listen_keep_open_one_stalled_handshake_holds_up_nobody(
    certs: Certs, background: type[Background]
) -> None:
    server = background(
        [*SOCKETEER, "listen", "-k", "-v", "--cert", certs.server, "tls://127.0.0.1:0"]
    )
    address = server.wait_listening()
    plain = address.replace("tls://", "tcp://")
    # One client never says hello, one speaks plain text; neither may stall the
    # loop for the 10 s handshake timeout: the TLS client's own timeout is 5 s.
    with socketeer.connect(plain, timeout=10), socketeer.connect(plain) as rude:
        rude.send(b"GET / HTTP/1.0\r\n\r\n")
        # Well within the 10 s that a handshake in the loop's way would take.
        server.wait_for_stderr(b"is the peer speaking TLS?", timeout=5)
        with socketeer.connect(address, tls=TLSConfig(ca=certs.ca), timeout=5) as client:
            client.send_line("through")
            assert server.proc.stdout is not None
            assert server.proc.stdout.readline() == b"through\n"
            server.wait_for_stderr(b"connection from", count=1)
            assert server.proc.stdin is not None
            server.proc.stdin.write(b"to the verified one\n")
            server.proc.stdin.flush()
            assert client.recv_line() == b"to the verified one"
    server.proc.send_signal(signal.SIGINT)
    out, err, code = server.finish()
    assert (out, code) == (b"", 130), err
    assert b"Traceback" not in err


def test_server_handshake_steps_without_blocking(certs: Certs) -> None:
    from socketeer.tls import ServerHandshake, server_context

    context = server_context(TLSConfig(cert=certs.server))
    client_context = ssl.create_default_context(cafile=certs.ca)

    # A client that never speaks: the handshake waits, then expires cleanly.
    server_sock, silent = socket.socketpair()
    with silent:
        handshake = ServerHandshake(server_sock, context, "client silent", timeout=0.5)
        assert handshake.step() is False
        assert handshake.wants_write is False
        error = handshake.expire()
        assert isinstance(error, socketeer.Timeout)
        assert "TLS handshake timed out after 0.5s: client silent" in str(error)
        assert handshake.sock.fileno() == -1  # closed

    # A client that speaks plain text: a TLSError that names the cause.
    server_sock, rude = socket.socketpair()
    with rude:
        handshake = ServerHandshake(server_sock, context, "client rude", timeout=5)
        rude.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(TLSError, match="is the peer speaking TLS"):
            while not handshake.step():
                select.select([handshake.sock], [], [], 5)
        assert handshake.sock.fileno() == -1

    # A real client in a thread: the handshake completes one step at a time.
    server_sock, client_sock = socket.socketpair()
    done: list[bytes] = []

    def client() -> None:
        with client_context.wrap_socket(client_sock, server_hostname="localhost") as tls:
            tls.sendall(b"hello")
            done.append(tls.recv(5))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    handshake = ServerHandshake(server_sock, context, "client good", timeout=5)
    steps = 0
    while not handshake.step():
        steps += 1
        want = ([], [handshake.sock]) if handshake.wants_write else ([handshake.sock], [])
        select.select(*want, [], 5)
    assert steps >= 1  # it did have to wait for the client
    with handshake.sock as tls:
        tls.setblocking(True)
        assert tls.recv(5) == b"hello"
        tls.sendall(b"olleh")
        thread.join(5)
    assert done == [b"olleh"]


def test_cli_self_signed_and_pin(background: type[Background]) -> None:
    server = background([*SOCKETEER, "listen", "--self-signed", "tls://127.0.0.1:0"])
    address = server.wait_listening()
    server.wait_for_stderr(b"fingerprint")
    line = next(x for x in server.stderr_lines if b"fingerprint" in x).decode()
    pin = line.rsplit(" ", 1)[1].strip()
    assert re.fullmatch(r"[0-9a-f]{64}", pin)
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"bye\n")
    server.proc.stdin.flush()
    client = subprocess.Popen(
        [*SOCKETEER, "connect", "--pin", pin, address],
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert client.stdout is not None and client.stdin is not None
    assert client.stdout.readline() == b"bye\n"  # verified by its pin, and talking
    client.stdin.write(b"pinned\n")
    client.stdin.flush()
    assert server.proc.stdout is not None
    assert server.proc.stdout.readline() == b"pinned\n"
    client.kill()
    client.wait()
    client.stdout.close()
    client.stdin.close()


def test_cli_insecure_warns(certs: Certs, tls_server) -> None:  # type: ignore[no-untyped-def]
    server = tls_server(TLSConfig(cert=certs.wrong_host))
    result = run_cli("connect", "--insecure", server, input=b"x\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"echo x\n"
    assert b"warning: --insecure: the server's certificate is not verified" in result.stderr


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["listen", "tls://127.0.0.1:0"], 2, "a TLS server needs --cert and --key"),
        (["connect", "--ca", "/nonexistent.pem", f"tls://127.0.0.1:{NOBODY}"], 2, "cannot load CA"),
        (
            ["connect", "--insecure", f"tcp://127.0.0.1:{NOBODY}"],
            2,
            "TLS options need a tls:// address",
        ),
    ],
)
def test_cli_tls_usage_errors(argv: list[str], code: int, message: str) -> None:
    result = run_cli(*argv)
    assert result.returncode == code, result.stderr
    assert result.stderr.decode().count("\n") == 1
    assert message in result.stderr.decode()


def test_cli_plain_server_on_a_tls_address(background: type[Background]) -> None:
    plain = background([*SOCKETEER, "listen", "tcp://127.0.0.1:0"])
    address = plain.wait_listening()
    assert plain.proc.stdin is not None
    plain.proc.stdin.write(b"HTTP/1.0 400 plain text here\r\n\r\n")
    plain.proc.stdin.close()
    result = run_cli("connect", "--insecure", address.replace("tcp://", "tls://"), input=b"")
    assert result.returncode == 1
    assert "is the peer speaking TLS?" in result.stderr.decode()


def test_cli_handshake_timeout(background: type[Background]) -> None:
    silent = background([*SOCKETEER, "listen", "tcp://127.0.0.1:0"])
    address = silent.wait_listening()
    result = run_cli("connect", "-t", "0.5", address.replace("tcp://", "tls://"), input=b"")
    assert result.returncode == 1
    assert "TLS handshake timed out after" in result.stderr.decode()


# -- openssl --------------------------------------------------------------------------------


@pytest.mark.peer
def test_socketeer_client_to_openssl_s_server(certs: Certs, background: type[Background]) -> None:
    openssl = require_peer("openssl")
    server = background(
        [openssl, "s_server", "-accept", "127.0.0.1:0", "-cert", certs.server, "-naccept", "1"]
    )
    assert server.proc.stdout is not None
    line = b""
    while not line.startswith(b"ACCEPT"):  # "ACCEPT 127.0.0.1:PORT", after some notes
        line = server.proc.stdout.readline()
        assert line, "openssl s_server did not start"
    port = int(line.decode().rsplit(":", 1)[1])
    client = subprocess.Popen(
        [*SOCKETEER, "connect", "--ca", certs.ca, f"tls://127.0.0.1:{port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=cli_env(),
    )
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write(b"hello openssl\n")
        client.stdin.flush()
        while b"hello openssl" not in line:  # s_server prints what it receives
            line = server.proc.stdout.readline()
            assert line, "s_server ended without the message"
        assert server.proc.stdin is not None
        server.proc.stdin.write(b"hello socketeer\n")
        server.proc.stdin.flush()
        assert client.stdout.readline() == b"hello socketeer\n"
    finally:
        client.kill()
        client.wait()
        client.stdin.close()
        client.stdout.close()


@pytest.mark.peer
def test_openssl_s_client_to_socketeer(certs: Certs, background: type[Background]) -> None:
    openssl = require_peer("openssl")
    server = background([*SOCKETEER, "listen", "--cert", certs.server, "tls://127.0.0.1:0"])
    address = server.wait_listening()
    port = socketeer.Address.parse(address).port
    client = subprocess.run(
        [
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            certs.ca,
            "-verify_return_error",
            "-quiet",
            "-no_ign_eof",
        ],
        input=b"hello socketeer\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert client.returncode == 0, client.stderr
    out, _, _ = server.finish()
    assert out == b"hello socketeer\n"


# -- servers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["thread", "fork", "async"])
def test_serve_over_tls_every_model(model: str, certs: Certs, background: type[Background]) -> None:
    server = background(
        [
            *SOCKETEER,
            "serve",
            "--model",
            model,
            "--cert",
            certs.server,
            "tls://127.0.0.1:0",
            "echo",
        ],
        stdin=subprocess.DEVNULL,
    )
    address = server.wait_listening()
    # A plain-TCP client on the TLS port is logged and closed; the others are served.
    with socketeer.connect(address.replace("tls://", "tcp://"), timeout=10) as plain:
        plain.send(b"GET / HTTP/1.0\r\n\r\n")
        with contextlib.suppress(socketeer.ConnectionReset):
            while plain.recv():  # a TLS alert perhaps, then the close
                pass
    for i in range(3):
        with socketeer.connect(address, tls=TLSConfig(ca=certs.ca), timeout=10) as conn:
            conn.send_line(f"secret {i}")
            assert conn.recv_line() == f"secret {i}".encode()
    server.proc.terminate()
    _, err, code = server.finish()
    assert code == 0, err
    assert b"Traceback" not in err


def test_serve_mutual_tls_refuses_strangers(certs: Certs, background: type[Background]) -> None:
    server = background(
        [
            *SOCKETEER,
            "serve",
            "--cert",
            certs.server,
            "--ca",
            certs.ca,
            "tls://127.0.0.1:0",
            "echo",
        ],
        stdin=subprocess.DEVNULL,
    )
    address = server.wait_listening()
    with pytest.raises(TLSError):
        with socketeer.connect(
            address, tls=TLSConfig(ca=certs.ca, cert=certs.other_client), timeout=10
        ) as conn:
            conn.send_line("let me in")
            conn.recv_line()
    with socketeer.connect(
        address, tls=TLSConfig(ca=certs.ca, cert=certs.client), timeout=10
    ) as conn:
        conn.send_line("member")
        assert conn.recv_line() == b"member"
    server.proc.terminate()
    _, err, code = server.finish()
    assert code == 0
    refused = [line for line in err.splitlines() if b"0 bytes in, 0 bytes out (" in line]
    assert refused, err
    assert b"certificate" in refused[0]  # the log names the cause


# -- asyncio ----------------------------------------------------------------------------------

LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop",
        marks=pytest.mark.skipif(
            not socketeer.aio.uvloop_available(), reason="uvloop is not installed"
        ),
    ),
]


@pytest.mark.parametrize("loop", LOOPS)
def test_aio_tls_round_trip_and_errors(loop: str, certs: Certs) -> None:
    from socketeer import aio
    from socketeer.tls import fingerprint

    async def main() -> None:
        listener = await aio.listen("tls://127.0.0.1:0", tls=TLSConfig(cert=certs.server))
        served: list[BaseException] = []
        handlers: set[asyncio.Task[None]] = set()

        async def handle(conn: aio.Connection) -> None:
            async with conn:
                async for line in conn:
                    await conn.send_line(b"echo " + line)

        async def serve() -> None:
            while True:
                try:
                    conn = await listener.accept()
                except socketeer.SocketeerError as exc:  # a client that failed the handshake
                    served.append(exc)
                    continue
                task = asyncio.ensure_future(handle(conn))
                handlers.add(task)
                task.add_done_callback(handlers.discard)

        server = asyncio.ensure_future(serve())
        try:
            async with await aio.connect(
                listener.address, tls=TLSConfig(ca=certs.ca), timeout=10
            ) as conn:
                assert conn.is_tls
                await conn.send_line("async tls")
                assert await conn.recv_line() == b"echo async tls"
                der = conn.transport.get_extra_info("ssl_object").getpeercert(True)
                await conn.shutdown_write()  # close_notify: the server's lines end, it closes
                assert await conn.recv() == b""
            async with await aio.connect(
                listener.address, tls=TLSConfig(pin=fingerprint(der)), timeout=10
            ) as conn:
                await conn.send_line("pinned")
                assert await conn.recv_line() == b"echo pinned"
            with pytest.raises(TLSError, match="unable to get local issuer"):
                await aio.connect(listener.address, tls=TLSConfig(), timeout=10)
            with pytest.raises(TLSError, match="pin mismatch"):
                await aio.connect(listener.address, tls=TLSConfig(pin="00" * 32), timeout=10)
        finally:
            server.cancel()
            listener.close()

    socketeer.aio.run(main(), use_uvloop=loop == "uvloop")


# -- relays --------------------------------------------------------------------------------------


def _echo_through(address: str, tls: TLSConfig | None, size: int) -> bool:
    """Send ``size`` bytes and read them back at the same time (one event loop: TLS-safe)."""
    from socketeer import aio

    payload = os.urandom(size)

    async def main() -> bool:
        conn = await aio.connect(address, tls=tls, timeout=30)
        conn.timeout = 60
        sending = asyncio.ensure_future(conn.send(payload))
        back = await conn.recv_exactly(size)
        await sending
        await conn.aclose()
        return hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()

    return socketeer.aio.run(main())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["thread", "fork", "async"])
@pytest.mark.parametrize("terminate", [True, False], ids=["tls-to-tcp", "tcp-to-tls"])
def test_20_mb_through_a_tls_relay(
    terminate: bool, model: str, certs: Certs, background: type[Background]
) -> None:
    upstream_argv = [*SOCKETEER, "serve", "--model", "async"]
    if terminate:  # the relay speaks TLS to its clients, plain TCP upstream
        upstream_argv += ["tcp://127.0.0.1:0", "echo"]
    else:  # plain clients, TLS upstream
        upstream_argv += ["--cert", certs.server, "tls://127.0.0.1:0", "echo"]
    upstream = background(upstream_argv, stdin=subprocess.DEVNULL)
    upstream_address = upstream.wait_listening()
    if terminate:
        relay_argv = ["--cert", certs.server, "tls://127.0.0.1:0", upstream_address]
    else:
        relay_argv = ["--ca", certs.ca, "tcp://127.0.0.1:0", upstream_address]
    relay = background(
        [*SOCKETEER, "relay", "-v", "--model", model, *relay_argv], stdin=subprocess.DEVNULL
    )
    address = relay.wait_listening()
    client_tls = TLSConfig(ca=certs.ca) if terminate else None
    assert _echo_through(address, client_tls, 20 * 1024 * 1024)
    if terminate:
        # The client's close reaches the plain upstream as EOF; the echo server
        # closes, and the pair ends. (A TLS upstream is half-closed with
        # close_notify: tests/test_tls_half_close.py.)
        relay.wait_for_stderr(b"20971520 bytes in, 20971520 bytes out")
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0, err


def test_tls_relay_usage_errors() -> None:
    for argv, message in (
        (
            ["--cert", "x.pem", "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}"],
            "need a tls:// FROM",
        ),
        (["--insecure", "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}"], "need a tls:// TO"),
        (["tls://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}"], "a TLS server needs --cert and --key"),
    ):
        result = run_cli("relay", *argv)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr.decode()


@pytest.mark.peer
def test_ncat_ssl_both_ways(certs: Certs, background: type[Background], tmp_path: Path) -> None:
    ncat = require_peer("ncat")
    # ncat --ssl client -> socketeer listen tls://
    server = background([*SOCKETEER, "listen", "--cert", certs.server, "tls://127.0.0.1:0"])
    port = socketeer.Address.parse(server.wait_listening()).port
    # ncat verifies DNS names only, so it is given "localhost" (127.0.0.1 here).
    client = subprocess.run(
        [ncat, "--ssl", "--ssl-verify", "--ssl-trustfile", certs.ca, "localhost", str(port)],
        input=b"from ncat\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert client.returncode == 0, client.stderr
    out, _, code = server.finish()
    assert (out, code) == (b"from ncat\n", 0)
    # socketeer connect tls:// -> ncat --ssl -l (ncat cannot bind port 0 and say which)
    import socket as socket_module

    with socket_module.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key_and_cert = Path(certs.server).read_text()
    key = tmp_path / "key.pem"
    key.write_text(key_and_cert)
    listener = background(
        [
            ncat,
            "-v",
            "--ssl",
            "--ssl-cert",
            certs.server,
            "--ssl-key",
            str(key),
            "-l",
            "127.0.0.1",
            str(port),
        ]
    )
    listener.wait_for_stderr(b"Listening on")
    assert listener.proc.stdin is not None
    listener.proc.stdin.write(b"from ncat server\n")
    listener.proc.stdin.close()
    result = run_cli("connect", "--ca", certs.ca, f"tls://127.0.0.1:{port}", input=b"")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"from ncat server\n"


def test_alpn_and_minimum_version(certs: Certs, tls_server) -> None:  # type: ignore[no-untyped-def]
    import ssl

    from socketeer.tls import client_context, server_context

    assert server_context(TLSConfig(cert=certs.server)).minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context(TLSConfig()).minimum_version == ssl.TLSVersion.TLSv1_2
    address = tls_server(TLSConfig(cert=certs.server, alpn=("h2",)))
    config = TLSConfig(ca=certs.ca, alpn=("http/1.1", "h2"))
    with socketeer.connect(address, tls=config, timeout=10) as conn:
        assert conn.socket.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
        conn.send_line("alpn")
        assert conn.recv_line() == b"echo alpn"
    # A client that offers only TLS 1.1 is refused by the server's minimum.
    address = tls_server(TLSConfig(cert=certs.server))
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(certs.ca)
    with warnings.catch_warnings():  # setting an old version is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(TLSError):
        socketeer.connect(address, tls=old, timeout=10)


@pytest.mark.parametrize("model", ["thread", "fork", "async"])
def test_tls_relay_with_stdio_and_exec(
    model: str, certs: Certs, background: type[Background]
) -> None:
    # exec: behind a TLS front
    relay = background(
        [
            *SOCKETEER,
            "relay",
            "--model",
            model,
            "--cert",
            certs.server,
            "tls://127.0.0.1:0",
            "exec:cat",
        ],
        stdin=subprocess.DEVNULL,
    )  # cat does not buffer its output
    address = relay.wait_listening()
    with socketeer.connect(address, tls=TLSConfig(ca=certs.ca), timeout=10) as conn:
        conn.send_line("through a program")
        assert conn.recv_line() == b"through a program"
    relay.proc.terminate()
    relay.finish()
    # stdio to a TLS upstream: stdin's EOF becomes close_notify (-i only bounds it)
    upstream = background(
        [
            *SOCKETEER,
            "serve",
            "--model",
            "async",
            "--cert",
            certs.server,
            "tls://127.0.0.1:0",
            "echo",
        ],
        stdin=subprocess.DEVNULL,
    )
    result = subprocess.run(
        [*SOCKETEER, "relay", "-i", "1", "--ca", certs.ca, "-", upstream.wait_listening()],
        input=b"through stdio\n",
        capture_output=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through stdio\n"
