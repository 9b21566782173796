"""socketeer against the tools it replaces: ncat and socat, both roles, both directions.

Twenty megabytes of random bytes cross each stream pairing and arrive with the
same SHA-256; datagrams cross each UDP pairing line by line. socat binds port 0
and reports the port; ncat cannot, so for an ncat listener the test reserves
an ephemeral port from the kernel first and waits for ncat's own
"Listening on" line (the only place a test names a port it did not read back).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SOCKETEER, cli_env, require_peer

pytestmark = [pytest.mark.peer, pytest.mark.slow]

SIZE = 20 * 1024 * 1024
PEER_READY = re.compile(rb"(Listening on|listening on)")
SOCAT_PORT = re.compile(rb"listening on .*?:(\d+)\s*$")


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("interop") / "random.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reserve_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Side:
    """One program of a pairing, with the stdin/stdout the scenario gives it."""

    def __init__(self, argv: list[str], *, stdin: object, stdout: object) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.PIPE,
            env=cli_env(),
            start_new_session=True,
        )
        for given in (stdin, stdout):  # the child has its own copies now
            if hasattr(given, "close"):
                given.close()  # type: ignore[union-attr]
        self.stderr = b""
        self._drain: threading.Thread | None = None

    def wait_ready(self) -> bytes:
        """Read stderr until the program says it listens; returns that line."""
        assert self.proc.stderr is not None
        lines = []
        for line in self.proc.stderr:
            lines.append(line)
            if PEER_READY.search(line):
                self._drain_in_background()
                return line
        raise AssertionError(f"{self.argv} never listened: {b''.join(lines)!r}")

    def _drain_in_background(self) -> None:
        def drain() -> None:
            assert self.proc.stderr is not None
            self.stderr += self.proc.stderr.read()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.stdin = None

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.close_stdin()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self._drain is not None:
            self._drain.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def sides() -> Iterator[list[Side]]:
    started: list[Side] = []
    yield started
    for side in started:
        side.kill()


def server_argv(program: str, kind: str, path: Path) -> tuple[list[str], int | None]:
    """The command that listens, and the port it was given (None: it reports its own)."""
    if program == "socketeer":
        target = "tcp://127.0.0.1:0" if kind == "tcp" else f"unix:{path}"
        return [*SOCKETEER, "listen", target], None
    if program == "ncat":
        ncat = require_peer("ncat")
        if kind == "tcp":
            port = reserve_port()
            return [ncat, "-v", "-l", "127.0.0.1", str(port)], port
        return [ncat, "-v", "-l", "-U", str(path)], None
    socat = require_peer("socat")
    if kind == "tcp":
        return [socat, "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr", "STDIO"], None
    return [socat, "-d", "-d", f"UNIX-LISTEN:{path}", "STDIO"], None


def client_argv(program: str, kind: str, port: int, path: Path) -> list[str]:
    if program == "socketeer":
        target = f"tcp://127.0.0.1:{port}" if kind == "tcp" else f"unix:{path}"
        return [*SOCKETEER, "connect", target]
    if program == "ncat":
        ncat = require_peer("ncat")
        return [ncat, "127.0.0.1", str(port)] if kind == "tcp" else [ncat, "-U", str(path)]
    socat = require_peer("socat")
    target = f"TCP:127.0.0.1:{port}" if kind == "tcp" else f"UNIX-CONNECT:{path}"
    return [socat, "STDIO", target]


def port_from(ready_line: bytes, given: int | None) -> int:
    if given is not None:
        return given
    match = SOCAT_PORT.search(ready_line) or re.search(rb":(\d+)\s*$", ready_line)
    assert match, ready_line
    return int(match.group(1))


@pytest.mark.parametrize("peer", ["ncat", "socat"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("socketeer_is", ["client", "server"])
@pytest.mark.parametrize("sender", ["socketeer", "peer"])
def test_stream_bulk_transfer(
    peer: str,
    kind: str,
    socketeer_is: str,
    sender: str,
    payload: tuple[Path, str],
    sockdir: Path,
    sides: list[Side],
    tmp_path: Path,
) -> None:
    data_path, digest = payload
    server_prog, client_prog = (
        ("socketeer", peer) if socketeer_is == "server" else (peer, "socketeer")
    )
    sending_prog = "socketeer" if sender == "socketeer" else peer
    out_path = tmp_path / "received.bin"
    path = sockdir / "interop.sock"

    def io_for(program: str) -> dict[str, object]:
        # The sender reads the file; the receiver's stdin stays open (nothing typed).
        if program == sending_prog:
            return {"stdin": data_path.open("rb"), "stdout": subprocess.DEVNULL}
        return {"stdin": subprocess.PIPE, "stdout": out_path.open("wb")}

    argv, given_port = server_argv(server_prog, kind, path)
    server = Side(argv, **io_for(server_prog))
    sides.append(server)
    ready = server.wait_ready()
    port = port_from(ready, given_port) if kind == "tcp" else 0
    client = Side(client_argv(client_prog, kind, port, path), **io_for(client_prog))
    sides.append(client)

    receiver = server if server_prog != sending_prog else client
    # A person would press ^D once everything has arrived: some peers (an ncat
    # client) keep a connection open until their own stdin ends.
    wait_for_size(out_path, SIZE, receiver)
    receiver.close_stdin()
    codes = {side: side.wait(60) for side in (server, client)}
    assert sha256_of(out_path) == digest, (server.stderr, client.stderr)
    socketeer_side = server if server_prog == "socketeer" else client
    assert codes[socketeer_side] == 0, socketeer_side.stderr


def wait_for_size(path: Path, size: int, side: Side, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while path.stat().st_size < size and side.proc.poll() is None:
        assert time.monotonic() < deadline, f"only {path.stat().st_size} of {size} bytes arrived"
        time.sleep(0.05)


@pytest.mark.parametrize("peer", ["ncat", "socat"])
def test_udp_socketeer_client_to_peer_server(peer: str, sides: list[Side], tmp_path: Path) -> None:
    lines = b"".join(b"datagram %04d %s\n" % (i, os.urandom(20).hex().encode()) for i in range(200))
    out_path = tmp_path / "udp.out"
    if peer == "ncat":
        port = reserve_port(socket.SOCK_DGRAM)
        argv = [require_peer("ncat"), "-v", "-u", "-l", "127.0.0.1", str(port)]
    else:
        argv = [require_peer("socat"), "-d", "-d", "UDP-LISTEN:0,bind=127.0.0.1", "STDIO"]
        port = None
    server = Side(argv, stdin=subprocess.PIPE, stdout=out_path.open("wb"))
    sides.append(server)
    port = port_from(server.wait_ready(), port)
    result = subprocess.run(
        [*SOCKETEER, "connect", "-i", "0.5", f"udp://127.0.0.1:{port}"],
        input=lines,
        capture_output=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    server.kill()
    assert out_path.read_bytes() == lines


@pytest.mark.parametrize("peer", ["ncat", "socat"])
def test_udp_peer_client_to_socketeer_server(peer: str, sides: list[Side], tmp_path: Path) -> None:
    lines = b"".join(b"line %04d\n" % i for i in range(200))
    out_path = tmp_path / "udp.out"
    server = Side(
        [*SOCKETEER, "listen", "-i", "2", "udp://127.0.0.1:0"],
        stdin=subprocess.PIPE,
        stdout=out_path.open("wb"),
    )
    sides.append(server)
    port = port_from(server.wait_ready(), None)
    if peer == "ncat":
        argv = [require_peer("ncat"), "-u", "--send-only", "127.0.0.1", str(port)]
    else:
        argv = [require_peer("socat"), "-u", "STDIN", f"UDP:127.0.0.1:{port}"]
    subprocess.run(argv, input=lines, capture_output=True, timeout=60, check=True)
    assert server.wait(60) == 0
    received = out_path.read_bytes()
    # A datagram per read of the peer's stdin: the bytes arrive whole and in order.
    assert received == lines
