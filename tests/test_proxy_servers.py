"""``serve socks5`` and ``serve http-proxy``: proxy servers that relay to the client's target.

Real peers: curl (``--socks5-hostname``, ``-x http://`` with ``-p`` for
CONNECT) through the CLI in each model to a local HTTP server, socketeer's
own client (``connect --proxy`` as an ssh ProxyCommand, ``connect(proxy=)``),
raw sockets for the reply codes, and hypothesis garbage that must never stop
the server. The server-side handshakes (``proxy.server``) are tested pure.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import socketeer
from socketeer import ProxyAuthError, ProxyError, ProxyRefused, Server
from socketeer.handlers.proxy import HttpProxy, Socks5Proxy, parse_users
from socketeer.proxy import server as wire
from socketeer.proxy import socks as s

from .conftest import (
    HAS_IPV6,
    SOCKETEER,
    Background,
    free_port_refusing,
    open_fds,
    require_peer,
    run_cli,
)
from .test_layers import IO_MODULES, imported_modules

PAGE = b"hello from the target\n"
MODELS = ("thread", "fork", "async")


# -- peers: an HTTP server and an echo server on loopback --------------------------------


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 (a free port) that answers every GET with PAGE."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    """A socketeer echo server on 127.0.0.1."""
    server = Server("tcp://127.0.0.1:0", "echo", grace=0.2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.address.port
    server.shutdown()
    thread.join(5)
    server.close()


@contextlib.contextmanager
def running(handler: Any, model: str = "thread", **kw: Any) -> Iterator[Server]:
    """A proxy Server in a thread of this process (thread and async models)."""
    server = Server("tcp://127.0.0.1:0", handler, model=model, grace=0.5, **kw)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        server.close()


def serve_cli(background: type[Background], handler: str, *options: str) -> tuple[Any, int]:
    proc = background([*SOCKETEER, "serve", "tcp://127.0.0.1:0", handler, *options, "-v"])
    address = proc.wait_listening()
    return proc, int(address.rsplit(":", 1)[1])


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_peer("curl"), "-sS", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- raw clients, for the exact bytes -------------------------------------------------


def socks5_exchange(port: int, greeting: bytes, *steps: bytes, login: bytes = b"") -> bytes:
    """Send a greeting, the optional login and the request; everything the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(greeting)
        answer = _recv_exactly(sock, 2)
        if login and answer[1] == s.USERPASS:
            sock.sendall(login)
            status = _recv_exactly(sock, 2)
            answer += status
            if status[1] != 0:
                return answer + _rest(sock)
        if answer[1] == s.NO_ACCEPTABLE:
            return answer + _rest(sock)
        for step in steps:
            sock.sendall(step)
        return answer + _rest(sock)


def socks5_reply_code(port: int, request: bytes, login: bytes = b"") -> int:
    methods = [s.USERPASS] if login else [s.NO_AUTH]
    answer = socks5_exchange(port, s.encode_socks5_greeting(methods), request, login=login)
    start = 4 if login else 2
    assert answer[start] == 5, answer
    return answer[start + 1]


def connect_request(host: str, port: int, command: int = s.CONNECT) -> bytes:
    return s.encode_socks5_message(s.Socks5Message(command, host, port))


def http_exchange(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        return _rest(sock, stop=b"\r\n\r\n")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _rest(sock: socket.socket, stop: bytes | None = None) -> bytes:
    """Read until EOF (or ``stop``), for answers after which the server closes or waits."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(4096):
            data += chunk
            if stop is not None and stop in data:
                break
            if stop is None and len(data) >= 10 and data[0] == 5:
                break  # a SOCKS5 reply with an IPv4 address: the tunnel may stay open
    return data


# -- curl through the CLI, every model ---------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("login", [False, True], ids=["no-auth", "login"])
def test_curl_through_socks5(
    background: type[Background], web: int, model: str, login: bool
) -> None:
    require_peer("curl")
    options = ["--model", model] + (["--user", "alice:s3cret", "--user", "bob:x"] if login else [])
    proc, port = serve_cli(background, "socks5", *options)
    credentials = ["--proxy-user", "alice:s3cret"] if login else []
    result = curl(
        "--socks5-hostname", f"127.0.0.1:{port}", *credentials, f"http://localhost:{web}/"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == PAGE
    proc.wait_for_stderr(f"socks5 tunnel to localhost:{web}".encode())
    line = next(x for x in proc.stderr_lines if b"socks5 tunnel" in x)
    assert b"tcp://127.0.0.1:" in line  # the client is named, with the target
    if login:
        assert b"as user 'alice'" in line


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("login", [False, True], ids=["no-auth", "login"])
def test_curl_through_http_proxy(
    background: type[Background], web: int, model: str, login: bool
) -> None:
    require_peer("curl")
    options = ["--model", model] + (["--user", "alice:s3cret"] if login else [])
    proc, port = serve_cli(background, "http-proxy", *options)
    userinfo = "alice:s3cret@" if login else ""
    result = curl("-p", "-x", f"http://{userinfo}127.0.0.1:{port}", f"http://127.0.0.1:{web}/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == PAGE
    proc.wait_for_stderr(f"http-proxy tunnel to 127.0.0.1:{web}".encode())


@pytest.mark.parametrize(("handler", "kind"), [("socks5", "socks5"), ("http-proxy", "http")])
def test_ncat_through_either_proxy(
    background: type[Background], echo: int, handler: str, kind: str
) -> None:
    ncat = require_peer("ncat")
    _, port = serve_cli(background, handler, "--user", "alice:s3cret", "--model", "async")
    result = subprocess.run(
        [
            ncat,
            "--proxy",
            f"127.0.0.1:{port}",
            "--proxy-type",
            kind,
            "--proxy-auth",
            "alice:s3cret",
            "127.0.0.1",
            str(echo),
        ],
        input=b"ncat was here\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ncat was here\n"


def test_plain_get_to_http_proxy_is_refused_and_logged(
    background: type[Background], web: int
) -> None:
    require_peer("curl")
    proc, port = serve_cli(background, "http-proxy")
    result = curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{web}/",
    )
    assert result.stdout == "405"
    proc.wait_for_stderr(b"HTTP GET refused: this proxy serves CONNECT only")
    answer = http_exchange(port, f"GET http://127.0.0.1:{web}/ HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: CONNECT\r\n" in answer
    answer = http_exchange(port, b"BREW /pot HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n")


def test_http_proxy_wants_the_right_password(background: type[Background], web: int) -> None:
    require_peer("curl")
    _, port = serve_cli(background, "http-proxy", "--user", "alice:s3cret")
    target = f"http://127.0.0.1:{web}/"
    for userinfo in ("", "alice:wrong@", "mallory:s3cret@"):
        result = curl(
            "-p",
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            "-x",
            f"http://{userinfo}127.0.0.1:{port}",
            target,
        )
        assert result.returncode != 0
        assert result.stdout == "407", (userinfo, result)
    answer = http_exchange(port, f"CONNECT 127.0.0.1:{web} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'\r\nProxy-Authenticate: Basic realm="socketeer"\r\n' in answer


def test_socks5_wants_the_right_password(background: type[Background], web: int) -> None:
    proc, port = serve_cli(background, "socks5", "--user", "alice:s3cret")
    request = connect_request("127.0.0.1", web)
    wrong = s.encode_socks5_userpass("alice", "wrong")
    answer = socks5_exchange(port, s.encode_socks5_greeting([s.USERPASS]), request, login=wrong)
    assert answer == b"\x05\x02\x01\x01"  # USERPASS chosen, then status 1: refused, closed
    # A client that offers no login at all gets "no acceptable method".
    answer = socks5_exchange(port, s.encode_socks5_greeting([s.NO_AUTH]), request)
    assert answer == b"\x05\xff"
    with pytest.raises(ProxyAuthError, match="rejected the user name and password"):
        socketeer.connect(f"tcp://127.0.0.1:{web}", proxy=f"socks5://alice:bad@127.0.0.1:{port}")
    proc.wait_for_stderr(b"SOCKS5 login refused for user 'alice'", count=2)
    right = s.encode_socks5_userpass("alice", "s3cret")
    assert socks5_reply_code(port, request, login=right) == 0


# -- where a client may go ------------------------------------------------------------------


def test_denied_targets_get_not_allowed_and_403(background: type[Background], web: int) -> None:
    deny = ["--target-deny", "127.0.0.0/8,::1"]
    socks, socks_port = serve_cli(background, "socks5", *deny)
    # An IP literal, and a name that resolves into the denied networks.
    assert socks5_reply_code(socks_port, connect_request("127.0.0.1", web)) == 2
    assert socks5_reply_code(socks_port, connect_request("localhost", web)) == 2
    socks.wait_for_stderr(f"target 127.0.0.1:{web} (127.0.0.1) denied by the target rules".encode())
    socks.wait_for_stderr(f"target localhost:{web} (".encode())
    line = next(x for x in socks.stderr_lines if f"target localhost:{web} (".encode() in x)
    assert b"127.0.0.1" in line and b"denied by the target rules" in line
    with pytest.raises(ProxyRefused, match="connection not allowed by ruleset"):
        socketeer.connect(f"tcp://localhost:{web}", proxy=f"socks5h://127.0.0.1:{socks_port}")
    proxy, http_port = serve_cli(background, "http-proxy", *deny)
    answer = http_exchange(http_port, f"CONNECT localhost:{web} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
    proxy.wait_for_stderr(b"denied by the target rules")


def test_any_address_cannot_dodge_a_loopback_rule(web: int) -> None:
    with running(Socks5Proxy(target_deny=["127.0.0.0/8", "::1"])) as server:
        assert socks5_reply_code(server.address.port, connect_request("0.0.0.0", web)) == 2
        assert socks5_reply_code(server.address.port, connect_request("::", web)) == 2


def test_client_rules_still_apply(web: int) -> None:
    """``--allow``/``--deny`` are about clients, the target rules about where they go."""
    with running(Socks5Proxy(), deny=["127.0.0.1"]) as server:
        with socket.create_connection(("127.0.0.1", server.address.port), timeout=5) as sock:
            with contextlib.suppress(ConnectionResetError):
                sock.sendall(s.encode_socks5_greeting([s.NO_AUTH]))
            assert _rest(sock) == b""  # closed before the handler runs


def test_target_allow_refuses_everything_else(web: int) -> None:
    with running(Socks5Proxy(target_allow=["10.0.0.0/8"])) as server:
        assert socks5_reply_code(server.address.port, connect_request("127.0.0.1", web)) == 2
    with running(Socks5Proxy(target_allow=["127.0.0.1/32"])) as server:
        assert socks5_reply_code(server.address.port, connect_request("127.0.0.1", web)) == 0


@pytest.mark.parametrize("model", ["thread", "async"])
def test_a_refused_target_is_reply_5_and_502(model: str) -> None:
    holder, dead = free_port_refusing()
    with holder, running(Socks5Proxy(), model) as socks, running(HttpProxy(), model) as proxy:
        assert socks5_reply_code(socks.address.port, connect_request("127.0.0.1", dead)) == 5
        answer = http_exchange(
            proxy.address.port, f"CONNECT 127.0.0.1:{dead} HTTP/1.1\r\n\r\n".encode()
        )
        assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), answer


@pytest.mark.parametrize("model", ["thread", "async"])
def test_unsupported_commands_and_address_types(model: str) -> None:
    with running(Socks5Proxy(), model) as server:
        port = server.address.port
        assert socks5_reply_code(port, connect_request("127.0.0.1", 80, command=2)) == 7  # BIND
        assert socks5_reply_code(port, connect_request("127.0.0.1", 80, command=3)) == 7  # UDP
        assert socks5_reply_code(port, b"\x05\x01\x00\x09") == 8  # no such address type


@pytest.mark.parametrize("model", ["thread", "async"])
def test_names_that_do_not_resolve_are_host_unreachable(
    model: str, echo: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Not found, and names getaddrinfo rejects itself (an empty label, a NUL, a newline)."""
    names = ["no-such-host.invalid", "a..b", "a\x00b", "x\ny.invalid", "é" * 70]
    with running(Socks5Proxy(), model) as socks, running(HttpProxy(), model) as hp:
        for name in names[:4]:
            assert socks5_reply_code(socks.address.port, connect_request(name, 80)) == 4
        for name in ("a..b", "a\x00b", "é" * 70):
            head = f"CONNECT {name}:80 HTTP/1.1\r\n\r\n".encode("latin-1", "replace")
            answer = http_exchange(hp.address.port, head)
            assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), answer
        _still_serves_plain(socks.address.port, hp.address.port, echo)
    assert "Traceback" not in caplog.text
    assert not any("\n" in r.getMessage() for r in caplog.records)  # names made printable


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    import trustme

    folder = tmp_path_factory.mktemp("proxy-tls")
    ca = trustme.CA()
    ca_path, pem = folder / "ca.pem", folder / "server.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return str(ca_path), str(pem)


@pytest.mark.parametrize("model", MODELS)
def test_proxies_over_tls(
    background: type[Background], tls_files: tuple[str, str], web: int, echo: int, model: str
) -> None:
    """``serve tls://… http-proxy`` is an HTTPS proxy (curl ``-x https://``); socks5 too."""
    require_peer("curl")
    ca, pem = tls_files
    for handler in ("http-proxy", "socks5"):
        proc = background(
            [*SOCKETEER, "serve", "tls://127.0.0.1:0", handler, "--cert", pem, "--model", model]
        )
        port = int(proc.wait_listening().rsplit(":", 1)[1])
        if handler == "http-proxy":
            result = curl(
                "-p",
                "--proxy-cacert",
                ca,
                "-x",
                f"https://127.0.0.1:{port}",
                f"http://127.0.0.1:{web}/",
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.encode() == PAGE
            continue
        context = ssl.create_default_context(cafile=ca)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(s.encode_socks5_greeting([s.NO_AUTH]))
                assert _recv_exactly(sock, 2) == b"\x05\x00"
                sock.sendall(connect_request("127.0.0.1", echo))
                assert _recv_exactly(sock, 10)[:2] == b"\x05\x00"
                sock.sendall(b"sealed\n")
                assert _recv_exactly(sock, 7) == b"sealed\n"


# -- socketeer's own client through it ---------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5h", "http"])
def test_connect_proxy_as_an_ssh_proxy_command(
    background: type[Background], echo: int, scheme: str
) -> None:
    """``ProxyCommand socketeer connect --proxy socks5h://P %h:%p``: stdin/stdout, the stream."""
    handler = "socks5" if scheme == "socks5h" else "http-proxy"
    _, port = serve_cli(background, handler, "--model", "async", "--user", "me:pw")
    result = run_cli(
        "connect",
        "--proxy",
        f"{scheme}://me:pw@127.0.0.1:{port}",
        f"localhost:{echo}",
        input=b"SSH-2.0-client\r\nsome bytes\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"SSH-2.0-client\r\nsome bytes\n"


@pytest.mark.parametrize("model", ["thread", "async"])
def test_library_connect_through_either_proxy(echo: int, model: str) -> None:
    users = {"alice": "s3cret"}
    with (
        running(Socks5Proxy(users=users), model) as socks,
        running(HttpProxy(users=users), model) as hp,
    ):
        for url in (
            f"socks5://alice:s3cret@127.0.0.1:{socks.address.port}",
            f"socks5h://alice:s3cret@127.0.0.1:{socks.address.port}",
            f"http://alice:s3cret@127.0.0.1:{hp.address.port}",
        ):
            with socketeer.connect(f"tcp://localhost:{echo}", proxy=url, timeout=10) as conn:
                payload = b"x" * 200_000
                threading.Thread(target=conn.send, args=(payload,), daemon=True).start()
                assert conn.recv_exactly(len(payload)) == payload


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback here")
def test_ipv6_targets() -> None:
    echo6 = Server("tcp6://[::1]:0", "echo", grace=0.2)
    thread = threading.Thread(target=echo6.serve_forever, daemon=True)
    thread.start()
    try:
        with running(Socks5Proxy(), "async") as socks, running(HttpProxy()) as hp:
            for url in (
                f"socks5://127.0.0.1:{socks.address.port}",
                f"http://127.0.0.1:{hp.address.port}",
            ):
                with socketeer.connect(f"tcp://[::1]:{echo6.address.port}", proxy=url) as conn:
                    conn.send(b"over six\n")
                    assert conn.recv_line() == b"over six"
    finally:
        echo6.shutdown()
        thread.join(5)
        echo6.close()


# -- the server's life: timeouts, shutdown, descriptors, garbage ------------------------


@pytest.mark.parametrize("model", ["thread", "async"])
def test_idle_tunnels_close_and_slow_handshakes_time_out(echo: int, model: str) -> None:
    handler = Socks5Proxy(handshake_timeout=0.5)
    with running(handler, model, idle_timeout=0.5) as server:
        port = server.address.port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
            started = time.monotonic()
            assert silent.recv(10) == b""  # the handshake never came: closed
            assert time.monotonic() - started < 4
        with socketeer.connect(
            f"tcp://127.0.0.1:{echo}", proxy=f"socks5://127.0.0.1:{port}", timeout=5
        ) as conn:
            conn.send(b"ping\n")
            assert conn.recv_line() == b"ping"
            started = time.monotonic()
            assert conn.recv() == b""  # idle for 0.5 s: the tunnel is closed
            assert time.monotonic() - started < 4


@pytest.mark.parametrize("model", MODELS)
def test_max_conns_idle_timeout_and_sigterm_from_the_cli(
    background: type[Background], echo: int, model: str
) -> None:
    proc, port = serve_cli(
        background, "socks5", "--model", model, "--max-conns", "2", "--idle-timeout", "1"
    )
    url = f"socks5://127.0.0.1:{port}"
    target = f"tcp://127.0.0.1:{echo}"
    first, second = (socketeer.connect(target, proxy=url, timeout=5) for _ in range(2))
    with first, second:
        for conn in (first, second):
            conn.send(b"in\n")
            assert conn.recv_line() == b"in"
        with pytest.raises(ProxyError):  # the third is closed at once: the limit
            socketeer.connect(target, proxy=url, timeout=5).close()
        started = time.monotonic()
        assert first.recv() == b"" and second.recv() == b""  # idle for 1 s: closed
        assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while True:  # room again once the server has counted both gone (fork: reaped)
        try:
            again = socketeer.connect(target, proxy=url, timeout=5)
            break
        except ProxyError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with again:
        again.send(b"again\n")
        assert again.recv_line() == b"again"
    proc.proc.terminate()
    _, err, code = proc.finish()
    assert code == 0, err
    assert b"Traceback" not in err


@pytest.mark.parametrize("model", ["thread", "async"])
def test_shutdown_closes_open_tunnels_and_leaks_nothing(echo: int, model: str) -> None:
    before = open_fds()
    server = Server("tcp://127.0.0.1:0", Socks5Proxy(), model=model, grace=0.3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.address.port
    url = f"socks5://127.0.0.1:{port}"
    conns = [socketeer.connect(f"tcp://127.0.0.1:{echo}", proxy=url, timeout=5) for _ in range(3)]
    for conn in conns:
        conn.send(b"up\n")
        assert conn.recv_line() == b"up"
    holder, dead = free_port_refusing()
    with holder:
        assert socks5_reply_code(port, connect_request("127.0.0.1", dead)) == 5
    _throw(port, b"\x04\x01garbage")
    server.shutdown()
    thread.join(10)
    server.close()
    for conn in conns:
        assert conn.recv() == b""  # cut at the end of the grace period
        conn.close()
    assert _settled_fds(before) == {}


def _settled_fds(before: set[int]) -> dict[int, str]:
    """Descriptors opened since ``before`` that are still open after the echo server's
    threads have seen their clients go (bounded wait), with what they are."""
    deadline = time.monotonic() + 5
    while True:
        extra = {}
        for fd in open_fds() - before:
            with contextlib.suppress(OSError):
                extra[fd] = os.readlink(f"/proc/self/fd/{fd}")
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


@pytest.fixture(scope="module", params=["thread", "async"])
def sturdy(request: pytest.FixtureRequest, echo: int) -> Iterator[tuple[int, int, int]]:
    """A SOCKS5 and an HTTP proxy (with a login) that garbage must not stop."""
    model = request.param
    with (
        running(Socks5Proxy(users=["u:p"], handshake_timeout=2), model) as socks,
        running(HttpProxy(users=["u:p"], handshake_timeout=2), model) as hp,
    ):
        yield socks.address.port, hp.address.port, echo


def _still_serves(socks_port: int, http_port: int, echo: int) -> None:
    for url in (f"socks5://u:p@127.0.0.1:{socks_port}", f"http://u:p@127.0.0.1:{http_port}"):
        with socketeer.connect(f"tcp://127.0.0.1:{echo}", proxy=url, timeout=5) as conn:
            conn.send(b"alive\n")
            assert conn.recv_line() == b"alive"


def _still_serves_plain(socks_port: int, http_port: int, echo: int) -> None:
    for url in (f"socks5://127.0.0.1:{socks_port}", f"http://127.0.0.1:{http_port}"):
        with socketeer.connect(f"tcp://127.0.0.1:{echo}", proxy=url, timeout=5) as conn:
            conn.send(b"alive\n")
            assert conn.recv_line() == b"alive"


def _throw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(3)
            while sock.recv(4096):
                pass


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_garbage_never_stops_either_proxy(sturdy: tuple[int, int, int], data: bytes) -> None:
    socks_port, http_port, _ = sturdy
    _throw(socks_port, data)
    _throw(http_port, data)
    _throw(socks_port, b"\x05\x01\x02" + data)  # past the greeting, into the login
    _throw(socks_port, b"\x05\x01\x02\x01\x01u\x01p" + data)  # logged in: the request
    _throw(http_port, b"CONNECT " + data)


def test_garbage_then_still_serving(sturdy: tuple[int, int, int]) -> None:
    _still_serves(*sturdy)


def test_truncated_handshakes_never_stop_either_proxy(sturdy: tuple[int, int, int]) -> None:
    socks_port, http_port, echo = sturdy
    socks_bytes = (
        s.encode_socks5_greeting([s.USERPASS])
        + s.encode_socks5_userpass("u", "p")
        + connect_request("127.0.0.1", echo)
    )
    head = f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
    for cut in range(len(socks_bytes)):
        _throw(socks_port, socks_bytes[:cut])
    for cut in range(0, len(head), 3):
        _throw(http_port, head[:cut].encode())
    _throw(http_port, b"CONNECT " + b"a" * 20000 + b"\r\n")  # a head too long
    _still_serves(socks_port, http_port, echo)


# -- the CLI's options ------------------------------------------------------------------


def test_proxy_options_are_for_proxy_handlers_only() -> None:
    result = run_cli("serve", "tcp://127.0.0.1:0", "echo", "--user", "a:b")
    assert result.returncode == 2
    assert b"--user: for the socks5 and http-proxy handlers only" in result.stderr
    result = run_cli("serve", "tcp://127.0.0.1:0", "socks5", "--user", "nocolon")
    assert result.returncode == 2
    assert b"NAME:PASSWORD" in result.stderr
    result = run_cli("serve", "tcp://127.0.0.1:0", "http-proxy", "--target-deny", "not-a-net")
    assert result.returncode == 2
    assert b"bad network" in result.stderr
    assert b"Traceback" not in result.stderr


def test_parse_users() -> None:
    assert parse_users(["a:b", "c:d:e", "f:"]) == {"a": "b", "c": "d:e", "f": ""}
    assert parse_users({"x": "y"}) == {"x": "y"}


# -- the server-side handshakes, pure ------------------------------------------------------


def test_the_server_handshakes_import_no_io() -> None:
    path = Path(socketeer.__file__).parent / "proxy" / "server.py"
    assert not imported_modules(path) & IO_MODULES


def _feed(hs: Any, data: bytes, bytewise: bool, out: bytearray | None = None) -> bytes:
    """Feed as the drivers do (at most ``wanted()`` at a time); what it answered.

    ``out`` collects the answers even when a refusal raises (its answer included).
    """
    out = bytearray() if out is None else out
    view = memoryview(data)
    try:
        while (wanted := hs.wanted()) and view:
            step = 1 if bytewise else wanted
            hs.receive_data(bytes(view[:step]))
            view = view[step:]
            out += hs.data_to_send()
    finally:
        out += hs.data_to_send()
    return bytes(out)


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1", "example.com"])
def test_socks5_server_handshake(bytewise: bool, host: str) -> None:
    hs = wire.Socks5ServerHandshake({"alice": "pw"})
    data = (
        s.encode_socks5_greeting([s.NO_AUTH, s.USERPASS])
        + s.encode_socks5_userpass("alice", "pw")
        + connect_request(host, 443)
    )
    out = _feed(hs, data + b"tunnel bytes", bytewise)
    assert out == b"\x05\x02\x01\x00"
    assert hs.request == (host, 443) and hs.username == "alice" and hs.wanted() == 0
    hs.reply(0, "127.0.0.1", 5555)
    assert s.decode_socks5_message(hs.data_to_send()) == (s.Socks5Message(0, "127.0.0.1", 5555), 10)
    assert hs.done


def _failure(code: int) -> bytes:
    return s.encode_socks5_message(s.Socks5Message(code, "0.0.0.0", 0))


@pytest.mark.parametrize(
    ("users", "data", "answer", "code"),
    [
        (None, b"\x05\x01\x02", b"\x05\xff", 0xFF),
        ({"a": "b"}, b"\x05\x01\x00", b"\x05\xff", 0xFF),
        ({"a": "b"}, b"\x05\x01\x02\x01\x01a\x01c", b"\x05\x02\x01\x01", 1),
        (None, b"\x05\x01\x00" + connect_request("h", 1, 2), b"\x05\x00" + _failure(7), 7),
        (None, b"\x05\x01\x00" + connect_request("h", 1, 3), b"\x05\x00" + _failure(7), 7),
        (None, b"\x05\x01\x00\x05\x01\x00\x07", b"\x05\x00" + _failure(8), 8),
        (None, b"\x05\x01\x00" + connect_request("h", 0), b"\x05\x00" + _failure(4), 4),
    ],
)
@pytest.mark.parametrize("bytewise", [False, True])
def test_socks5_server_refusals(
    users: Any, data: bytes, answer: bytes, code: int, bytewise: bool
) -> None:
    hs = wire.Socks5ServerHandshake(users)
    out = bytearray()
    with pytest.raises(ProxyRefused) as caught:
        _feed(hs, data, bytewise, out)
    assert bytes(out) == answer
    assert caught.value.code == code and hs.done and hs.wanted() == 0


@pytest.mark.parametrize("bytewise", [False, True])
def test_http_server_handshake(bytewise: bool) -> None:
    hs = wire.HttpProxyHandshake({"alice": "pw"})
    head = b"CONNECT [2001:db8::1]:22 HTTP/1.0\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n"
    assert _feed(hs, head + b"SSH-2.0-x", bytewise) == b""
    assert hs.request == ("2001:db8::1", 22) and hs.username == "alice"
    hs.reply(200, "Connection established")
    assert hs.data_to_send() == b"HTTP/1.0 200 Connection established\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET http://x/ HTTP/1.1\r\n\r\n", 405),
        (b"FROB x HTTP/1.1\r\n\r\n", 501),
        (b"CONNECT nowhere HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT h:1 HTTP/1.1\r\n\r\n", 407),
        (b"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: Basic YTpi\r\n\r\n", 407),
        (b"CONNECT h:1 HTTP/1.1\r\nbad header\r\n\r\n", 400),
    ],
)
def test_http_server_refusals(head: bytes, status: int) -> None:
    hs = wire.HttpProxyHandshake({"alice": "pw"})
    out = bytearray()
    with pytest.raises(ProxyRefused) as caught:
        _feed(hs, head, bytewise=False, out=out)
    assert caught.value.code == status
    answer = bytes(out)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and answer.endswith(b"\r\n\r\n")
    if status == 407:
        assert isinstance(caught.value, ProxyAuthError)
        assert b"Proxy-Authenticate: Basic" in answer


def test_check_password() -> None:
    users = {"alice": "pw"}
    assert wire.check_password(users, "alice", "pw")
    assert not wire.check_password(users, "alice", "pW")
    assert not wire.check_password(users, "bob", "pw")
    assert not wire.check_password(users, "bob", "")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), login=st.booleans(), bytewise=st.booleans())
def test_garbage_handshakes_raise_only_proxy_errors(
    data: bytes, login: bool, bytewise: bool
) -> None:
    users = {"u": "p"} if login else None
    for hs in (wire.Socks5ServerHandshake(users), wire.HttpProxyHandshake(users)):
        with contextlib.suppress(ProxyError):
            _feed(hs, data, bytewise)
            if hs.request is not None:
                assert hs.wanted() == 0
                hs.reply(0 if isinstance(hs, wire.Socks5ServerHandshake) else 200, "ok")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), login=st.booleans())
def test_a_handshake_always_wants_more_or_is_over(data: bytes, login: bool) -> None:
    """The drivers rely on it: ``wanted() == 0`` only with a request to answer, or done."""
    users = {"u": "p"} if login else None
    prefixes = [b"", b"\x05\x01\x02\x01\x01u\x01p" if login else b"\x05\x01\x00"]
    for prefix in prefixes:
        for hs in (wire.Socks5ServerHandshake(users), wire.HttpProxyHandshake(users)):
            with contextlib.suppress(ProxyError):
                for byte in prefix + data:
                    assert hs.wanted() > 0
                    hs.receive_data(bytes([byte]))
                    hs.data_to_send()
                    if hs.request is not None or hs.done:
                        break
            assert hs.wanted() > 0 or hs.request is not None or hs.done


def test_truncated_socks5_request_waits_for_more() -> None:
    hs = wire.Socks5ServerHandshake()
    _feed(hs, b"\x05\x01\x00", bytewise=False)
    request = connect_request("example.com", 80)
    for n in range(len(request) - 1):
        assert hs.wanted() > 0
        hs.receive_data(request[n : n + 1])
    assert hs.request is None
    hs.receive_data(request[-1:])
    assert hs.request == ("example.com", 80)
    assert struct.unpack("!H", request[-2:]) == (80,)
