"""Shared fixtures: real sockets on loopback, the CLI as a subprocess, peer programs.

Readiness is a signal, never a sleep: a server started by a test is ready when
its ``listening on ADDRESS`` line appears on stderr, and that line also gives
the real port of a port-0 bind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
LISTENING = re.compile(rb"listening on (\S+)")

# A shell without job control starts background commands with SIGINT ignored,
# and an ignored signal stays ignored across exec: the programs these tests
# start would then never see the SIGINT the tests send them. A handler (unlike
# SIG_IGN) is reset to the default on exec, so installing one here gives every
# child the disposition it would have when started from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = has_ipv6_loopback()
HAS_ABSTRACT = sys.platform.startswith("linux")


def require_peer(name: str) -> str:
    """The path of a peer program; skip without it locally, fail without it in CI."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed, and CI must run the interop tests")
        pytest.skip(f"{name} is not installed (apt-get install {name}); CI installs it")
    return path


def open_fds() -> set[int]:
    """This process's open descriptors (Linux: /proc/self/fd)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to count descriptors")
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:
            continue  # the descriptor listdir itself used
        fds.add(fd)
    return fds


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves descriptors open."""
    before = open_fds()
    yield
    after = open_fds()
    leaked = after - before
    assert not leaked, f"leaked descriptors: {sorted(leaked)}"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short temporary folder for Unix socket files (sun_path is only ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sk-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def abstract_name() -> str:
    if not HAS_ABSTRACT:
        pytest.skip("abstract Unix sockets are Linux-only")
    return f"socketeer-test-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"


def stream_listen_address(kind: str, sockdir: Path) -> str:
    """A listening address of each stream kind the conformance suites run over."""
    if kind == "tcp4":
        return "tcp://127.0.0.1:0"
    if kind == "tcp6":
        if not HAS_IPV6:
            pytest.skip("no IPv6 loopback here")
        return "tcp6://[::1]:0"
    if kind == "unix":
        return f"unix:{sockdir}/s.sock"
    if not HAS_ABSTRACT:
        pytest.skip("abstract Unix sockets are Linux-only")
    return f"unix:@socketeer-{os.getpid()}-{os.urandom(4).hex()}"


# -- the CLI as a subprocess ---------------------------------------------------------

SOCKETEER = [sys.executable, "-m", "socketeer"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONFAULTHANDLER"] = "1"  # a hung program shows its stacks (Background.stacks)
    return env


def run_cli(
    *args: str, input: bytes | None = b"", timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SOCKETEER, *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=cli_env(),
        check=False,
    )


class Background:
    """A command running in the background with pipes, stopped at teardown.

    A thread reads its stderr all along (a full pipe would block the program):
    ``stderr_lines`` grows as lines arrive.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        stdin: int | None = subprocess.PIPE,
        stdout: object = subprocess.PIPE,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env or cli_env(),
            start_new_session=True,
        )
        self.stderr_lines: list[bytes] = []
        self._listening: list[str] = []
        self._listening_seen = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            match = LISTENING.search(line)
            if match and not self._listening:
                self._listening.append(match.group(1).decode())
                self._listening_seen.set()
        self._listening_seen.set()  # EOF: it will never say it

    def wait_listening(self, timeout: float = 15) -> str:
        """Block until the ``listening on ADDRESS`` line; returns ADDRESS."""
        self._listening_seen.wait(timeout)
        if not self._listening:
            self.stop()
            raise AssertionError(
                f"{self.argv} did not report listening: {b''.join(self.stderr_lines)!r}"
            )
        return self._listening[0]

    def wait_for_stderr(self, needle: bytes, count: int = 1, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while sum(needle in line for line in self.stderr_lines) < count:
            assert time.monotonic() < deadline, f"no {needle!r} in {self.stderr_lines!r}"
            time.sleep(0.02)

    def _forget_closed_stdin(self) -> None:
        if self.proc.stdin is not None and self.proc.stdin.closed:
            self.proc.stdin = None  # communicate() would flush it

    def finish(self, timeout: float = 30) -> tuple[bytes, bytes, int]:
        """Wait for the exit; its stdout, all its stderr and its exit code.

        A program still running after ``timeout`` is a hang to explain, not
        to wait out: it is made to print every thread's stack (the
        interpreter's fault handler, on by ``cli_env``) and the failure shows
        them.
        """
        self._forget_closed_stdin()
        stderr, self.proc.stderr = self.proc.stderr, None  # the reader thread owns it
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.stderr = stderr  # closed by the stop() at teardown
            raise AssertionError(
                f"{self.argv} still running {timeout:g}s on; its threads:\n{self.stacks()}"
            ) from None
        self._reader.join(timeout)
        if stderr is not None:
            stderr.close()
        return out or b"", b"".join(self.stderr_lines), self.proc.returncode

    def stacks(self) -> str:
        """Stop the program with SIGABRT, which makes it print each thread's stack."""
        seen = len(self.stderr_lines)
        if self.proc.poll() is not None:  # gone: something else holds its stdout open
            return "(it has exited; a program it started holds its stdout)"
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._reader.join(5)
        return b"".join(self.stderr_lines[max(0, seen - 20) :]).decode(errors="replace")

    def stop(self) -> None:
        self._forget_closed_stdin()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ValueError, AssertionError):  # killed: nothing to explain
            self.finish(timeout=10)


@pytest.fixture
def background() -> Iterator[type[Background]]:
    started: list[Background] = []

    class Tracked(Background):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for item in started:
        item.stop()


# -- looking at a process from outside (Linux /proc) --------------------------------------


def fd_count(pid: int) -> int:
    """How many descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """``pid``'s resident memory in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def port_of(address: str) -> int:
    """The port of an address a server printed (``listening on ADDRESS``)."""
    from socketeer import Address

    port = Address.parse(address).port
    assert port is not None, address
    return port


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for peer programs that cannot bind port 0 and say so."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def limit_descriptors(limit: int) -> Any:
    """A ``preexec_fn`` that lowers RLIMIT_NOFILE to ``limit`` in the child (before exec)."""

    def preexec() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        os.setsid()

    return preexec


def _hold_a_port_nobody_answers_on() -> tuple[socket.socket, int]:
    """A TCP port the kernel handed out, held bound (not listening) for the whole session.

    A connect to it is refused, and no other program can take it meanwhile:
    the address for command lines refused before any socket is made, and for
    sides that must never answer. (The same number for UDP is one nothing of
    the tests binds: a datagram there draws the kernel's port-unreachable.)
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


_NOBODY_SOCKET, NOBODY = _hold_a_port_nobody_answers_on()


def pytest_unconfigure(config: pytest.Config) -> None:
    _NOBODY_SOCKET.close()  # held until the very end of the session


def free_port_refusing() -> tuple[socket.socket, int]:
    """A bound, non-listening TCP socket: connecting to its port is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def assert_one_line_error(stderr: bytes, *needles: str) -> None:
    """A CLI failure: one line, ``socketeer: error: ...``, no traceback, naming ``needles``."""
    text = stderr.decode()
    assert text.startswith("socketeer: error: "), text
    assert text.count("\n") == 1, text
    assert "Traceback" not in text
    for needle in needles:
        assert needle in text, text


class ServingThread:
    """A loopback listener served in a thread, ``handle(conn)`` for each client in turn.

    ``served`` counts the clients it is done with (their connection closed), so a
    test can wait for the server's side before it counts descriptors.
    """

    def __init__(self, handle: Any, *, timeout: float = 10) -> None:
        import socketeer

        self._socketeer = socketeer
        self.listener = socketeer.listen("tcp://127.0.0.1:0")
        assert self.listener.address is not None and self.listener.address.port is not None
        self.address = str(self.listener.address)
        self.port = self.listener.address.port
        self.served = threading.Semaphore(0)
        self._handle = handle
        self._timeout = timeout
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        errors = self._socketeer
        while not self._stopping:
            try:
                conn = self.listener.accept(timeout=0.2)
            except errors.Timeout:
                continue
            except errors.SocketeerError:
                return
            with conn, contextlib.suppress(errors.SocketeerError):
                conn.timeout = self._timeout
                self._handle(conn)
            self.served.release()

    def wait_served(self) -> None:
        assert self.served.acquire(timeout=5), "the server did not finish with its client"

    def close(self) -> None:
        self._stopping = True
        self._thread.join(5)
        self.listener.close()


def serve_once(listener: Any, handler: Any, timeout: float = 30) -> threading.Thread:
    """Accept one client on ``listener`` in a thread and run ``handler(conn)`` on it."""

    def run() -> None:
        with listener.accept(timeout=timeout) as conn:
            conn.timeout = timeout
            handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
