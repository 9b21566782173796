"""The proxy client against real proxies: microsocks, dante, tinyproxy and a strict SOCKS4a server.

Each proxy is started by the test on a free loopback port, with its
configuration in a temporary folder, and killed and reaped afterwards. The
target is a loopback server that speaks first (so a handshake that read past
the proxy's reply would lose its greeting), then takes and sends a
block whose SHA-256 both sides compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import socketeer
import socketeer.aio
from socketeer import (
    ProxyAuthError,
    ProxyError,
    ProxyRefused,
    ProxyTargetUnreachable,
    ProxyUnreachable,
    Timeout,
)
from socketeer._deadline import Deadline
from socketeer.address import Address
from socketeer.proxy import ProxyURL, tunnel, tunnel_async

from .conftest import HAS_IPV6, free_port, free_port_refusing, require_peer

GREETING = b"hello from the target\n"
BIG = 20 << 20
USER, PASSWORD = "alice", "s3cret"


# -- the target ------------------------------------------------------------------------


def _transfer(conn: socket.socket) -> None:
    """Greet, take N bytes (after an 8-byte N) and answer their SHA-256, then send N of its own
    and theirs. One direction at a time: microsocks blocks in a write per client, so a full-duplex
    echo of megabytes would stall it."""
    with conn, contextlib.suppress(OSError, AssertionError):
        conn.settimeout(60)
        conn.sendall(GREETING)
        (size,) = struct.unpack("!Q", recv_exactly(conn, 8))
        received = hashlib.sha256()
        left = size
        while left:
            chunk = conn.recv(min(left, 1 << 20))
            assert chunk
            received.update(chunk)
            left -= len(chunk)
        conn.sendall(received.digest())
        block = os.urandom(1 << 16)
        sent = hashlib.sha256()
        for offset in range(0, size, len(block)):
            piece = block[: size - offset]
            sent.update(piece)
            conn.sendall(piece)
        conn.sendall(sent.digest())


def _listeners() -> list[socket.socket]:
    """127.0.0.1 and, where it exists, ::1 on one port: ``localhost`` may mean either."""
    for _ in range(5):
        v4 = socket.create_server(("127.0.0.1", 0))
        if not HAS_IPV6:
            return [v4]
        try:
            v6 = socket.create_server(("::1", v4.getsockname()[1]), family=socket.AF_INET6)
        except OSError:
            v4.close()  # the port is taken on ::1: try another
            continue
        return [v4, v6]
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


@pytest.fixture(scope="module")
def target() -> Iterator[Address]:
    """A loopback server that greets each client, then runs ``_transfer`` with it."""
    servers = _listeners()

    def run(server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_transfer, args=(conn,), daemon=True).start()

    threads = [threading.Thread(target=run, args=(server,), daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    yield Address("tcp", host="127.0.0.1", port=servers[0].getsockname()[1])
    for server in servers:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
    for thread in threads:
        thread.join(10)


@pytest.fixture
def refused() -> Iterator[Address]:
    """A target port nothing listens on."""
    sock, port = free_port_refusing()
    yield Address("tcp", host="127.0.0.1", port=port)
    sock.close()


# -- the proxies --------------------------------------------------------------------------


def wait_accepting(
    port: int, proc: subprocess.Popen[bytes], host: str = "127.0.0.1", timeout: float = 10
) -> bool:
    """True once ``port`` accepts a connection; False if ``proc`` exited first (a port clash)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection((host, port), 1):
            return True
        time.sleep(0.02)  # an external program: no readiness line to wait for
    raise AssertionError(f"proxy on port {port} did not start accepting in {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the proxy (it stops the processes it forked), reap it, and kill any straggler."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    with contextlib.suppress(ProcessLookupError):  # its own session: only what it started
        os.killpg(proc.pid, signal.SIGKILL)


def start(
    argv: Callable[[int], list[str]], log: Path, host: str = "127.0.0.1"
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a proxy on a free port (a new one if another process took it meanwhile)."""
    for _ in range(5):
        port = free_port(host)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv(port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_accepting(port, proc, host):
            return proc, port
        stop(proc)
    raise AssertionError(f"could not start {argv(0)[0]}: {log.read_text(errors='replace')}")


def microsocks(tmp: Path, auth: bool, host: str = "127.0.0.1") -> Callable[[int], list[str]]:
    exe = require_peer("microsocks")
    extra = ["-u", USER, "-P", PASSWORD] if auth else []
    return lambda port: [exe, "-i", host, "-p", str(port), *extra]


def danted(tmp: Path, auth: bool) -> Callable[[int], list[str]]:
    exe = require_peer("danted")

    def argv(port: int) -> list[str]:
        users = "user.privileged: root\nuser.unprivileged: nobody\n" if os.geteuid() == 0 else ""
        (tmp / "danted.conf").write_text(
            "logoutput: stderr\n"
            f"internal: 127.0.0.1 port = {port}\n"
            "external: 127.0.0.1\n"
            "clientmethod: none\n"
            "socksmethod: none\n"
            f"{users}"
            "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
            "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
        )
        return [exe, "-f", str(tmp / "danted.conf"), "-p", str(tmp / "danted.pid"), "-N", "1"]

    return argv


def tinyproxy(
    tmp: Path, auth: bool, connect_ports: tuple[int, ...] = ()
) -> Callable[[int], list[str]]:
    exe = require_peer("tinyproxy")

    def argv(port: int) -> list[str]:
        lines = [f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 60"]
        lines += [f"ConnectPort {p}" for p in connect_ports]  # none: every port
        if auth:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        (tmp / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
        return [exe, "-d", "-c", str(tmp / "tinyproxy.conf")]

    return argv


class StrictSocks4a:
    """A SOCKS4a server that takes nothing else: the name must come the 4a way.

    Written from the protocol text, not from socketeer's encoder, so a shared
    mistake cannot pass. A request with a plain IPv4 address, a missing NUL or
    any byte before the reply is sent is refused (0x5B); a user id other than
    ``user_id`` gets 0x5D.
    """

    def __init__(self, user_id: str = "") -> None:
        self.user_id = user_id.encode()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[tuple[bytes, str, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _field(conn: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"\0"):
            byte = conn.recv(1)
            if not byte or len(data) > 255:
                raise ValueError("unterminated field")
            data += byte
        return data[:-1]

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            try:
                head = b""
                while len(head) < 8:
                    chunk = conn.recv(8 - len(head))
                    if not chunk:
                        return
                    head += chunk
                version, command, port, ip = struct.unpack("!BBH4s", head)
                user = self._field(conn)
                if version != 4 or command != 1 or ip[:3] != b"\0\0\0" or ip[3] == 0:
                    raise ValueError("not a SOCKS4a CONNECT")
                name = self._field(conn).decode("ascii")
                conn.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    if conn.recv(1, socket.MSG_PEEK):
                        raise ValueError("the client ran ahead of the reply")
                conn.setblocking(True)
                conn.settimeout(60)
                self.requests.append((user, name, port))
            except (ValueError, UnicodeDecodeError, OSError):
                with contextlib.suppress(OSError):
                    conn.sendall(b"\0\x5b" + b"\0" * 6)
                return
            if user != self.user_id:
                conn.sendall(b"\0\x5d" + b"\0" * 6)
                return
            try:
                upstream = socket.create_connection((name, port), 10)
            except OSError:
                conn.sendall(b"\0\x5b" + b"\0" * 6)
                return
            with upstream:
                conn.sendall(b"\0\x5a" + b"\0" * 6)
                upstream.settimeout(60)
                pump = threading.Thread(target=_copy, args=(upstream, conn), daemon=True)
                pump.start()
                _copy(conn, upstream)
                pump.join(60)

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self._thread.join(10)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(1 << 16):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)


@dataclass
class Proxy:
    name: str
    port: int
    host: str = "127.0.0.1"

    def url(self, scheme: str, credentials: str = "") -> ProxyURL:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return ProxyURL.parse(f"{scheme}://{credentials}{host}:{self.port}")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """Start a proxy by name (``microsocks``, ``danted``, ``tinyproxy``, ``socks4a``)."""
    procs: list[subprocess.Popen[bytes]] = []
    servers: list[StrictSocks4a] = []

    def make(name: str, auth: bool = False, **options: object) -> Proxy:
        if name == "socks4a":
            server = StrictSocks4a(**options)  # type: ignore[arg-type]
            servers.append(server)
            return Proxy(name, server.port)
        folder = tmp_path / f"{name}-{len(procs)}"
        folder.mkdir()
        argv = {"microsocks": microsocks, "danted": danted, "tinyproxy": tinyproxy}[name]
        host = str(options.get("host", "127.0.0.1"))
        proc, port = start(argv(folder, auth, **options), folder / "log", host)  # type: ignore[operator]
        procs.append(proc)
        return Proxy(name, port, host)

    yield make
    for proc in procs:
        stop(proc)
    for server in servers:
        server.close()


# -- driving the client ------------------------------------------------------------------


def through(url: ProxyURL, target: Address, timeout: float = 10) -> socket.socket:
    """A blocking socket to ``target`` through the proxy at ``url`` (our handshake)."""
    sock = socket.create_connection((url.host, url.port), timeout)
    try:
        tunnel(sock, url, target, Deadline(timeout))
    except BaseException:
        sock.close()
        raise
    return sock


async def through_async(url: ProxyURL, target: Address, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection((url.host, url.port), timeout)
    sock.setblocking(False)
    try:
        await tunnel_async(sock, url, target, Deadline(timeout))
    except BaseException:
        sock.close()
        raise
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def exchange(sock: socket.socket, size: int) -> None:
    """The target's greeting first (nothing swallowed), then ``size`` bytes each way, intact."""
    sock.settimeout(60)
    assert recv_exactly(sock, len(GREETING)) == GREETING
    block = os.urandom(1 << 16)
    sent = hashlib.sha256()
    sock.sendall(struct.pack("!Q", size))
    for offset in range(0, size, len(block)):
        piece = block[: size - offset]
        sent.update(piece)
        sock.sendall(piece)
    assert recv_exactly(sock, 32) == sent.digest(), "the target got other bytes than were sent"
    received = hashlib.sha256()
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        assert chunk, f"EOF with {left} bytes still to come"
        received.update(chunk)
        left -= len(chunk)
    assert recv_exactly(sock, 32) == received.digest(), "other bytes came than the target sent"


# Each proxy with each scheme it speaks: (peer, auth, scheme, target host).
ROUTES = [
    ("microsocks", False, "socks5", "localhost"),
    ("microsocks", False, "socks5h", "localhost"),
    ("microsocks", True, "socks5h", "127.0.0.1"),
    ("danted", False, "socks4", "localhost"),
    ("danted", False, "socks5", "127.0.0.1"),
    ("danted", False, "socks5h", "localhost"),
    ("tinyproxy", False, "http", "localhost"),
    ("tinyproxy", True, "http", "127.0.0.1"),
    ("socks4a", False, "socks4a", "localhost"),
]
IDS = [f"{peer}{'-auth' if auth else ''}-{scheme}" for peer, auth, scheme, _ in ROUTES]


def route_url(proxy: Callable[..., Proxy], peer: str, auth: bool, scheme: str) -> ProxyURL:
    return proxy(peer, auth).url(scheme, f"{USER}:{PASSWORD}@" if auth else "")


@pytest.mark.parametrize(("peer", "auth", "scheme", "host"), ROUTES, ids=IDS)
def test_through_each_proxy(
    proxy: Callable[..., Proxy], target: Address, peer: str, auth: bool, scheme: str, host: str
) -> None:
    url = route_url(proxy, peer, auth, scheme)
    with through(url, Address("tcp", host=host, port=target.port)) as sock:
        exchange(sock, 64 << 10)


@pytest.mark.slow
@pytest.mark.parametrize(("peer", "auth", "scheme", "host"), ROUTES, ids=IDS)
def test_20_mb_through_each_proxy(
    proxy: Callable[..., Proxy], target: Address, peer: str, auth: bool, scheme: str, host: str
) -> None:
    url = route_url(proxy, peer, auth, scheme)
    with through(url, Address("tcp", host=host, port=target.port), timeout=60) as sock:
        exchange(sock, BIG)


@pytest.mark.parametrize(("peer", "auth", "scheme", "host"), ROUTES, ids=IDS)
def test_through_each_proxy_on_the_loop(
    proxy: Callable[..., Proxy], target: Address, peer: str, auth: bool, scheme: str, host: str
) -> None:
    url = route_url(proxy, peer, auth, scheme)
    sock = asyncio.run(through_async(url, Address("tcp", host=host, port=target.port)))
    with sock:
        sock.setblocking(True)
        exchange(sock, 64 << 10)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback here")
@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_ipv6_proxy_and_target(proxy: Callable[..., Proxy], target: Address, scheme: str) -> None:
    url = proxy("microsocks", host="::1").url(scheme)
    assert url.host == "::1"
    with through(url, Address("tcp6", host="::1", port=target.port)) as sock:
        exchange(sock, 1024)


def test_socks4a_sends_the_user_id(proxy: Callable[..., Proxy], target: Address) -> None:
    server = proxy("socks4a", user_id="me")
    by_name = Address("tcp", host="localhost", port=target.port)
    with through(server.url("socks4a", "me@"), by_name) as sock:
        exchange(sock, 1024)
    with pytest.raises(ProxyRefused) as caught:
        through(server.url("socks4a", "you@"), by_name)
    assert caught.value.code == 0x5D
    assert "identd reports a different user id" in str(caught.value)


# -- what each proxy answers, and what we make of it -------------------------------------------

# (peer, scheme, error class, reply code) for a target port nothing listens on.
REFUSED = [
    ("microsocks", "socks5", ProxyTargetUnreachable, 5),
    ("microsocks", "socks5h", ProxyTargetUnreachable, 5),
    ("danted", "socks5", ProxyTargetUnreachable, 5),
    ("danted", "socks4", ProxyRefused, 0x5B),
    ("tinyproxy", "http", ProxyTargetUnreachable, 500),
    ("socks4a", "socks4a", ProxyRefused, 0x5B),
]


@pytest.mark.parametrize(("peer", "scheme", "kind", "code"), REFUSED)
def test_refused_target(
    proxy: Callable[..., Proxy],
    refused: Address,
    peer: str,
    scheme: str,
    kind: type[ProxyRefused],
    code: int,
) -> None:
    url = proxy(peer).url(scheme)
    with pytest.raises(kind) as caught:
        through(url, refused)
    assert type(caught.value) is kind
    assert caught.value.code == code
    message = str(caught.value)
    assert str(url) in message and str(refused) in message
    assert caught.value.meaning in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("peer", "host", "kind", "code"),
    [
        ("danted", "no-such-host.invalid", ProxyTargetUnreachable, 4),  # host unreachable
        ("microsocks", "no-such-host.invalid", ProxyRefused, 1),  # general failure
    ],
)
def test_unknown_name_resolved_by_the_proxy(
    proxy: Callable[..., Proxy], peer: str, host: str, kind: type[ProxyRefused], code: int
) -> None:
    with pytest.raises(kind) as caught:
        through(proxy(peer).url("socks5h"), Address("tcp", host=host, port=80))
    assert type(caught.value) is kind and caught.value.code == code
    assert host in str(caught.value)


@pytest.mark.parametrize(
    ("peer", "scheme", "credentials", "needle"),
    [
        ("microsocks", "socks5", f"{USER}:wrong@", "rejected the user name and password"),
        ("microsocks", "socks5h", "bob:s3cret@", "rejected the user name and password"),
        ("microsocks", "socks5", "", "wants a user name and password"),
        ("tinyproxy", "http", f"{USER}:wrong@", "rejected the credentials"),
        ("tinyproxy", "http", "", "wants credentials"),
    ],
)
def test_authentication_failures(
    proxy: Callable[..., Proxy],
    target: Address,
    peer: str,
    scheme: str,
    credentials: str,
    needle: str,
) -> None:
    url = proxy(peer, auth=True).url(scheme, credentials)
    with pytest.raises(ProxyAuthError) as caught:
        through(url, target)
    message = str(caught.value)
    assert message.startswith(f"proxy authentication failed: {url}")
    assert needle in message and str(target) in message
    assert "wrong" not in message  # the password never shows


def test_tinyproxy_port_not_allowed(proxy: Callable[..., Proxy], target: Address) -> None:
    url = proxy("tinyproxy", connect_ports=(1,)).url("http")
    with pytest.raises(ProxyRefused) as caught:
        through(url, target)
    assert type(caught.value) is ProxyRefused
    assert caught.value.code == 403


def test_an_http_proxy_url_for_a_socks_proxy(proxy: Callable[..., Proxy], target: Address) -> None:
    # microsocks drops a client whose first byte is not version 5.
    url = proxy("microsocks").url("http")
    with pytest.raises(ProxyError, match=r"closed the connection|reset the connection") as caught:
        through(url, target, timeout=5)
    assert type(caught.value) is ProxyError
    assert str(url) in str(caught.value)


# -- a proxy that sends its reply and the target's first bytes in one write ---------------------

# What each scripted proxy answers to each request it reads (in order), the last with data behind.
SCRIPTS = {
    "socks4a": [b"\0\x5a" + b"\0" * 6],
    "socks5h": [b"\x05\x00", b"\x05\x00\x00\x03\x01x\x00\x00"],
    "http": [b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n"],
}


@pytest.fixture
def eager_proxy() -> Iterator[Callable[[str], ProxyURL]]:
    """A proxy that answers by script and sends TARGET_DATA in the same segment as its reply."""
    servers: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def make(scheme: str) -> ProxyURL:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def run() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                replies = SCRIPTS[scheme]
                for i, reply in enumerate(replies):
                    assert conn.recv(4096)  # one request per step: the client waits for each reply
                    last = i == len(replies) - 1
                    conn.sendall(reply + (GREETING if last else b""))
                conn.recv(1)  # until the client is done

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return ProxyURL.parse(f"{scheme}://127.0.0.1:{server.getsockname()[1]}")

    yield make
    for thread in threads:
        thread.join(10)
    for server in servers:
        server.close()


@pytest.mark.parametrize("scheme", sorted(SCRIPTS))
@pytest.mark.parametrize("layer", ["blocking", "asyncio"])
def test_the_bytes_behind_the_reply_stay_in_the_socket(
    eager_proxy: Callable[[str], ProxyURL], target: Address, scheme: str, layer: str
) -> None:
    url = eager_proxy(scheme)
    by_name = Address("tcp", host="localhost", port=target.port)
    if layer == "blocking":
        sock = through(url, by_name)
    else:
        sock = asyncio.run(through_async(url, by_name))
        sock.setblocking(True)
    with sock:
        sock.settimeout(10)
        assert recv_exactly(sock, len(GREETING)) == GREETING


# -- deadlines ---------------------------------------------------------------------------------


@pytest.fixture
def silent_proxy() -> Iterator[ProxyURL]:
    """A proxy that accepts and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    yield ProxyURL.parse(f"socks5h://127.0.0.1:{server.getsockname()[1]}")
    server.close()


@pytest.mark.parametrize("scheme", ["socks4a", "socks5h", "http"])
def test_a_silent_proxy_times_out(silent_proxy: ProxyURL, target: Address, scheme: str) -> None:
    url = ProxyURL(scheme, silent_proxy.host, silent_proxy.port)
    began = time.monotonic()
    with pytest.raises(Timeout, match=r"proxy handshake timed out after 0\.3s"):
        through(url, target, timeout=0.3)
    assert time.monotonic() - began < 3


def test_a_silent_proxy_times_out_on_the_loop(silent_proxy: ProxyURL, target: Address) -> None:
    began = time.monotonic()
    with pytest.raises(Timeout, match=r"proxy handshake timed out after 0\.3s: socks5h://"):
        asyncio.run(through_async(silent_proxy, target, timeout=0.3))
    assert time.monotonic() - began < 3


def test_a_proxy_that_closes_at_once(target: Address) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    url = ProxyURL.parse(f"http://127.0.0.1:{server.getsockname()[1]}")

    def close_at_once() -> None:
        server.accept()[0].close()

    thread = threading.Thread(target=close_at_once, daemon=True)
    thread.start()
    try:
        with pytest.raises(ProxyError, match=r"closed the connection|reset the connection"):
            through(url, target)
    finally:
        thread.join(10)
        server.close()


# -- through the library's connect ------------------------------------------------------------


def exchange_on(conn: socketeer.Connection, size: int = 64 << 10) -> None:
    """``exchange`` on a ``Connection``: its reads share one buffer, so use only its methods."""
    assert conn.recv_exactly(len(GREETING)) == GREETING
    payload = os.urandom(size)
    conn.send(struct.pack("!Q", size) + payload)
    assert conn.recv_exactly(32) == hashlib.sha256(payload).digest()
    back = conn.recv_exactly(size)
    assert conn.recv_exactly(32) == hashlib.sha256(back).digest()


async def exchange_on_async(conn: socketeer.aio.Connection, size: int = 64 << 10) -> None:
    assert await conn.recv_exactly(len(GREETING)) == GREETING
    payload = os.urandom(size)
    await conn.send(struct.pack("!Q", size) + payload)
    assert await conn.recv_exactly(32) == hashlib.sha256(payload).digest()
    back = await conn.recv_exactly(size)
    assert await conn.recv_exactly(32) == hashlib.sha256(back).digest()


LIBRARY_ROUTES = [route for route in ROUTES if route[0] != "danted" or route[2] == "socks5h"]
LIBRARY_IDS = [IDS[ROUTES.index(route)] for route in LIBRARY_ROUTES]


@pytest.mark.parametrize(("peer", "auth", "scheme", "host"), LIBRARY_ROUTES, ids=LIBRARY_IDS)
def test_connect_through_each_proxy(
    proxy: Callable[..., Proxy], target: Address, peer: str, auth: bool, scheme: str, host: str
) -> None:
    url = route_url(proxy, peer, auth, scheme)
    address = Address("tcp", host=host, port=target.port)
    with socketeer.connect(address, proxy=url, timeout=10) as conn:
        exchange_on(conn)
    with socketeer.connect(address, proxy=str(url).replace("***", PASSWORD), timeout=10) as conn:
        exchange_on(conn, 1024)


@pytest.mark.parametrize(("peer", "auth", "scheme", "host"), LIBRARY_ROUTES, ids=LIBRARY_IDS)
def test_aio_connect_through_each_proxy(
    proxy: Callable[..., Proxy], target: Address, peer: str, auth: bool, scheme: str, host: str
) -> None:
    url = route_url(proxy, peer, auth, scheme)
    address = Address("tcp", host=host, port=target.port)

    async def main() -> None:
        conn = await socketeer.aio.connect(address, proxy=url, timeout=10)
        try:
            await exchange_on_async(conn)
        finally:
            await conn.aclose()

    asyncio.run(main())


def test_connect_through_the_environment(
    proxy: Callable[..., Proxy], target: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = proxy("microsocks").url("socks5h")
    monkeypatch.setenv("ALL_PROXY", str(url))
    with socketeer.connect(target, proxy="env", timeout=10) as conn:
        exchange_on(conn, 1024)


def test_connect_errors_name_the_cause(
    proxy: Callable[..., Proxy], target: Address, refused: Address, no_fd_leak: None
) -> None:
    dead = ProxyURL.parse(f"socks5://u:hunter2@127.0.0.1:{refused.port}")
    with pytest.raises(ProxyUnreachable) as caught:
        socketeer.connect(target, proxy=dead, timeout=5)
    assert str(caught.value) == (
        f"proxy unreachable: socks5://u:***@127.0.0.1:{refused.port} (connection refused)"
    )
    url = proxy("microsocks", auth=True).url("socks5", f"{USER}:hunter2@")
    with pytest.raises(ProxyAuthError, match="rejected the user name and password"):
        socketeer.connect(target, proxy=url, timeout=5)
    url = proxy("tinyproxy").url("http")
    with pytest.raises(ProxyTargetUnreachable, match=str(refused)):
        socketeer.connect(refused, proxy=url, timeout=5)

    async def main() -> None:
        with pytest.raises(ProxyUnreachable):
            await socketeer.aio.connect(target, proxy=dead, timeout=5)
        with pytest.raises(ProxyTargetUnreachable):
            await socketeer.aio.connect(refused, proxy=url, timeout=5)

    asyncio.run(main())


@pytest.fixture(scope="module")
def tls_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Address, str]]:
    """A TLS server for 127.0.0.1 (a throwaway CA) that greets, then exchanges as ``target``."""
    import trustme

    from socketeer.tls import TLSConfig

    folder = tmp_path_factory.mktemp("proxy-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    chain = ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem
    chain.write_to_path(str(folder / "server.pem"))
    listener = socketeer.listen("tls://127.0.0.1:0", tls=TLSConfig(cert=str(folder / "server.pem")))

    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn = listener.accept(timeout=30)
            except (socketeer.TLSError, Timeout):
                continue  # a client that did not trust us, or none for a while
            with conn, contextlib.suppress(socketeer.SocketeerError):
                conn.timeout = 30
                conn.send(GREETING)
                (size,) = struct.unpack("!Q", conn.recv_exactly(8))
                data = conn.recv_exactly(size)
                conn.send(hashlib.sha256(data).digest() + data + hashlib.sha256(data).digest())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.address, str(folder / "ca.pem")
    done.set()
    socket.create_connection(("127.0.0.1", listener.address.port), 5).close()  # wake its accept
    thread.join(10)
    listener.close()


@pytest.mark.parametrize("scheme", ["socks5h", "http"])
def test_tls_through_a_proxy_verifies_the_target(
    proxy: Callable[..., Proxy], tls_target: tuple[Address, str], scheme: str
) -> None:
    from socketeer.tls import TLSConfig

    address, ca = tls_target
    url = proxy("microsocks" if scheme == "socks5h" else "tinyproxy").url(scheme)
    with socketeer.connect(address, proxy=url, tls=TLSConfig(ca=ca), timeout=10) as conn:
        assert conn.is_tls
        exchange_on(conn)
    with pytest.raises(socketeer.TLSError):  # the system's trust store knows no such CA
        socketeer.connect(address, proxy=url, timeout=10)
