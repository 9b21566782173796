"""Programs and endpoints: exec on a pty, exec on either side, file:, pty:, fd:N (SPEC §1, §4, §6).

Every test talks to real programs over loopback sockets, Unix sockets in a
temporary folder, pipes and pseudo-terminals; readiness is the ``listening
on`` line (or the ``pty`` line, or the Unix socket file), never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from socketeer import Address
from socketeer._pty import PtyProcess, parse_size
from socketeer.errors import UsageError
from socketeer.relay.endpoints import FORMS, File, Program, Pty, parse_endpoint

from .conftest import (
    NOBODY,
    SOCKETEER,
    Background,
    assert_one_line_error,
    cli_env,
    open_fds,
    require_peer,
    run_cli,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ptys and fd passing are POSIX")
needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="reads another process's descriptors in /proc"
)

TTY = re.compile(rb"/dev/(pts/\d+|ttys\d+)")
PY = sys.executable


def _connect(address: str) -> socket.socket:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(sock: socket.socket, limit: float = 15) -> bytes:
    sock.settimeout(limit)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _server() -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(15)
    return listener, listener.getsockname()[1]


def _gone(pid: int) -> bool:
    """Reaped: no process (a zombie still has a /proc entry)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_until(check: object, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _ptys_of(pid: int) -> int:
    """How many pty masters process ``pid`` holds."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") in ("/dev/ptmx", "/dev/pts/ptmx"):
                count += 1
        except OSError:
            continue
    return count


# -- the pure parts ------------------------------------------------------------------


def test_endpoints_parse() -> None:
    assert parse_endpoint("file:/tmp/x") == File("/tmp/x")
    assert parse_endpoint("pty:") == Pty()
    assert parse_endpoint("pty:/tmp/ttyV0") == Pty("/tmp/ttyV0")
    assert parse_endpoint("pty-exec:sh -c 'tty'") == Program(("sh", "-c", "tty"), pty=True)
    assert str(Program(("sh", "-i"), pty=True)) == "pty-exec:sh -i"
    assert str(Pty("/tmp/l")) == "pty:/tmp/l"
    assert str(parse_endpoint("fd:5")) == "fd:5"


@pytest.mark.parametrize("form", FORMS)
def test_every_form_completion_offers_is_an_endpoint(form: str) -> None:
    """The list shells complete from names forms the parser takes, none of them an address."""
    typed = form if form in ("-", "stdio:", "pty:") else form + "cat"
    assert not isinstance(parse_endpoint(typed), Address)


@pytest.mark.parametrize(
    "text", ["", "80", "80x", "x24", "0x24", "80x0", "80x24x1", "axb", "70000x1"]
)
def test_bad_pty_size(text: str) -> None:
    with pytest.raises(UsageError, match="COLSxROWS"):
        parse_size(text)


def test_pty_size() -> None:
    assert parse_size("132x43") == (132, 43)
    assert parse_size("80X24") == (80, 24)


# -- the pty mechanics ---------------------------------------------------------------


@pytest.mark.parametrize("spawn", ["posix_spawn", "setsid step"])
def test_pty_process_is_a_session_on_its_terminal_and_is_reaped(
    no_fd_leak: None, monkeypatch: pytest.MonkeyPatch, spawn: str
) -> None:
    """Linux's posix_spawn takes the terminal by opening it; the Python step (the path
    elsewhere) with setsid and TIOCSCTTY, which Linux runs too."""
    import socketeer._pty

    monkeypatch.setattr(socketeer._pty, "_LINUX", spawn == "posix_spawn")
    code = (
        "import os, sys; print(sys.stdin.isatty(), os.getsid(0) == os.getpid()); open('/dev/tty')"
    )
    proc = PtyProcess([PY, "-c", code], size=(100, 30))
    ours, theirs = socket.socketpair()
    with ours:
        status = proc.carry(theirs)
        theirs.close()
        out = _read_all(ours)
    assert out.strip() == b"True True", out
    assert status == 0
    assert _gone(proc.pid)


def test_pty_process_status_and_signal() -> None:
    proc = PtyProcess(["sh", "-c", "exit 3"])
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert proc.carry(theirs) == 3
    proc = PtyProcess(["sleep", "30"])
    ours, theirs = socket.socketpair()
    ours.close()  # the other side is gone: hung up at once
    with theirs:
        assert proc.carry(theirs) == 128 + 1  # SIGHUP
    assert _gone(proc.pid)


@pytest.mark.parametrize("waiting", ["poll", "select"])
def test_carry_through_a_pty(monkeypatch: pytest.MonkeyPatch, waiting: str) -> None:
    """Both ways through a program's pty, EOF as ^D; ``select`` is the path off Linux."""
    import socketeer._bridge

    monkeypatch.setattr(socketeer._bridge, "_POLL_TAKES_DEVICES", waiting == "poll")
    proc = PtyProcess(["sh", "-c", "stty -echo; echo ready; cat; echo done"])
    ours, theirs = socket.socketpair()
    with ours, theirs:
        runner = threading.Thread(target=proc.carry, args=(theirs,))
        runner.start()
        ours.settimeout(10)
        seen = b""
        while b"ready" not in seen:
            seen += ours.recv(100)
        ours.sendall(b"line one\n")
        ours.shutdown(socket.SHUT_WR)  # cat reads ^D: it ends, sh says done
        rest = _read_all(ours)
        runner.join(10)
    assert b"line one\r\n" in rest and rest.endswith(b"done\r\n"), rest
    assert proc.returncode == 0 and _gone(proc.pid)


# -- serve ... exec --pty ------------------------------------------------------------


@pytest.mark.parametrize("model", ["thread", "fork", "async"])
def test_serve_exec_pty(background: type[Background], model: str) -> None:
    server = background(
        [*SOCKETEER, "serve", "tcp://127.0.0.1:0", "exec", "--pty", "--model", model, "--", "sh"]
    )
    address = server.wait_listening()
    with _connect(address) as client:
        client.sendall(
            b"tty; stty size; "
            + PY.encode()
            + b" -c 'import sys; print(sys.stdin.isatty())'; exit\n"
        )
        out = _read_all(client)
    assert TTY.search(out), out
    assert b"24 80" in out, out
    assert b"True" in out, out


def test_serve_exec_pty_size(background: type[Background]) -> None:
    program = ["sh", "-c", "stty size"]
    server = background(
        [
            *SOCKETEER,
            "serve",
            "tcp://127.0.0.1:0",
            "exec",
            "--pty",
            "--pty-size",
            "132x43",
            "--",
            *program,
        ]
    )
    with _connect(server.wait_listening()) as client:
        assert b"43 132" in _read_all(client)


@needs_proc
def test_serve_exec_pty_child_gone_after_client_leaves(background: type[Background]) -> None:
    server = background([*SOCKETEER, "serve", "tcp://127.0.0.1:0", "exec", "--pty", "--", "sh"])
    address = server.wait_listening()
    client = _connect(address)
    client.sendall(b"echo pid=$$\n")
    seen = b""
    while b"pid=" not in seen or not re.search(rb"pid=(\d+)\r\n", seen):
        seen += client.recv(4096)
    match = re.search(rb"pid=(\d+)\r\n", seen)
    assert match
    child = int(match.group(1))
    assert not _gone(child)
    assert _ptys_of(server.proc.pid) == 1
    client.close()  # leaves while the shell waits for a command
    assert _wait_until(lambda: _gone(child)), "the program outlived its client (or is a zombie)"
    assert _wait_until(lambda: _ptys_of(server.proc.pid) == 0), "the pty is still open"


@pytest.mark.slow  # waits out the few seconds a program gets after the client's EOF
def test_serve_exec_pty_hangs_up_a_program_that_ignores_eof(
    background: type[Background],
) -> None:
    """The client's EOF is ^D; a program that reads no more is hung up a few seconds later."""
    server = background(
        [
            *SOCKETEER,
            "serve",
            "tcp://127.0.0.1:0",
            "exec",
            "--pty",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 60",
        ]
    )
    with _connect(server.wait_listening()) as client:
        first = b""
        while not first.endswith(b"\n"):
            first += client.recv(100)
        child = int(first.strip())
        client.shutdown(socket.SHUT_WR)
        assert _read_all(client, limit=20) == b""
    assert _wait_until(lambda: _gone(child))


# -- exec on either side -------------------------------------------------------------


def test_connect_exec_against_ncat(tmp_path: Path) -> None:
    ncat = require_peer("ncat")
    path = tmp_path / "s.sock"
    peer = subprocess.Popen([ncat, "-lU", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert _wait_until(path.exists), "ncat did not listen"
        assert peer.stdin is not None
        peer.stdin.write(b"hello\n")
        peer.stdin.flush()
        done = run_cli("connect", f"unix:{path}", "--exec", "sh -c 'read x; echo got:$x; exit 7'")
        assert done.returncode == 7, done.stderr
        out, _ = peer.communicate(timeout=10)
        assert out == b"got:hello\n"
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.communicate()


def test_connect_exec_against_socketeer_server(background: type[Background]) -> None:
    server = background([*SOCKETEER, "serve", "tcp://127.0.0.1:0", "echo"])
    address = server.wait_listening()
    code = (
        "import sys; sys.stdout.write('ping\\n'); sys.stdout.flush(); "
        "sys.exit(5 if sys.stdin.readline() == 'ping\\n' else 1)"
    )
    done = run_cli("connect", address, "--exec", f'{PY} -c "{code}"')
    assert done.returncode == 5, done.stderr
    assert done.stdout == b""


def test_connect_exec_over_tls(background: type[Background]) -> None:
    """TLS cannot be handed to a program: its pipes are copied to the session, status kept."""
    server = background([*SOCKETEER, "serve", "tls://127.0.0.1:0", "echo", "--self-signed"])
    address = server.wait_listening()
    code = (
        "import sys; sys.stdout.write('over tls\\n'); sys.stdout.flush(); "
        "sys.exit(6 if sys.stdin.readline() == 'over tls\\n' else 1)"
    )
    done = run_cli("connect", address, "--insecure", "--exec", f'{PY} -c "{code}"')
    assert done.returncode == 6, done.stderr


def test_connect_exec_pty_against_socketeer_server(background: type[Background]) -> None:
    """The program on a pty talks to the server; the server sees the terminal's output."""
    listener, port = _server()
    with listener:
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                got.append(_read_all(conn))

        thread = threading.Thread(target=serve)
        thread.start()
        done = run_cli(
            "connect",
            f"127.0.0.1:{port}",
            "--exec",
            "sh -c 'tty; stty size; exit 4'",
            "--pty",
            "--pty-size",
            "90x20",
        )
        thread.join(15)
    assert done.returncode == 4, done.stderr
    assert TTY.search(got[0]) and b"20 90" in got[0], got


def test_listen_exec_one_client(background: type[Background]) -> None:
    listening = background(
        [
            *SOCKETEER,
            "listen",
            "tcp://127.0.0.1:0",
            "--exec",
            "sh -c 'echo hi; read x; echo $x >&2; exit 4'",
        ]
    )
    with _connect(listening.wait_listening()) as client:
        assert client.recv(10) == b"hi\n"
        client.sendall(b"yo\n")
        assert _read_all(client) == b""
    _, err, code = listening.finish()
    assert code == 4
    assert b"yo" in err


def test_relay_exec_as_from() -> None:
    """One program, its stdio relayed to TO; the relay ends with it."""
    listener, port = _server()
    with listener:
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    data += conn.recv(100)
                conn.sendall(b"back\n")
                got.append(data + _read_all(conn))

        thread = threading.Thread(target=serve)
        thread.start()
        done = run_cli(
            "relay", "exec:sh -c 'echo from-prog; read x; echo again:$x'", f"tcp://127.0.0.1:{port}"
        )
        thread.join(15)
    assert done.returncode == 0, done.stderr
    assert got == [b"from-prog\nagain:back\n"]


@pytest.mark.parametrize(
    ("form", "model"), [("pty-exec", "thread"), ("--pty", "thread"), ("pty-exec", "fork")]
)
def test_relay_program_on_pty_as_to(background: type[Background], form: str, model: str) -> None:
    command = "sh -c 'tty; stty size'"
    end = [f"pty-exec:{command}"] if form == "pty-exec" else [f"exec:{command}", "--pty"]
    end += ["--pty-size", "100x30"]
    relay = background([*SOCKETEER, "relay", "--once", "--model", model, "tcp://127.0.0.1:0", *end])
    with _connect(relay.wait_listening()) as client:
        out = _read_all(client)
    assert TTY.search(out) and b"30 100" in out, out
    assert relay.finish()[2] == 0


def test_relay_to_pty_exec_in_the_async_model_is_refused() -> None:
    done = run_cli("relay", "--model", "async", "tcp://127.0.0.1:0", "pty-exec:sh")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "--model thread or fork")


# -- pty: and pty:LINK ---------------------------------------------------------------


def test_pty_link_from_exchanges_with_tcp(tmp_path: Path) -> None:
    """A serial-like bridge: another process opens the link and talks to the TCP side."""
    link = tmp_path / "ttyV0"
    listener, port = _server()
    with listener:
        relay = Background([*SOCKETEER, "relay", f"pty:{link}", f"tcp://127.0.0.1:{port}"])
        try:
            conn, _ = listener.accept()
            with conn:
                relay.wait_for_stderr(b"pty /dev/")
                assert link.is_symlink() and TTY.search(os.readlink(link).encode())
                fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
                try:
                    conn.sendall(b"to-serial\n")
                    assert os.read(fd, 100) == b"to-serial\n"
                    os.write(fd, b"from-serial\x00\xff\n")  # raw: bytes as they are
                    data = b""
                    while not data.endswith(b"\n"):
                        data += conn.recv(100)
                    assert data == b"from-serial\x00\xff\n"
                finally:
                    os.close(fd)
            _, _, code = relay.finish()
        finally:
            relay.stop()
    assert code == 0
    assert not link.exists() and not link.is_symlink(), "the link outlived the relay"


def test_pty_link_to_per_client(tmp_path: Path, background: type[Background]) -> None:
    link = tmp_path / "ttyC"
    relay = background([*SOCKETEER, "relay", "--once", "tcp://127.0.0.1:0", f"pty:{link}"])
    with _connect(relay.wait_listening()) as client:
        relay.wait_for_stderr(b"linked from")
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            client.sendall(b"hello pty\n")
            assert os.read(fd, 100) == b"hello pty\n"
            os.write(fd, b"hello tcp\n")
            assert client.recv(100) == b"hello tcp\n"
        finally:
            os.close(fd)
    assert relay.finish()[2] == 0
    assert not link.is_symlink()


def test_pty_without_link_prints_its_path(background: type[Background]) -> None:
    listener, port = _server()
    with listener:
        relay = background([*SOCKETEER, "relay", "pty:", f"tcp://127.0.0.1:{port}"])
        conn, _ = listener.accept()
        with conn:
            relay.wait_for_stderr(b"pty /dev/")
            line = next(x for x in relay.stderr_lines if b"pty /dev/" in x)
            path = TTY.search(line)
            assert path
            fd = os.open(b"/dev/" + path.group(1), os.O_RDWR | os.O_NOCTTY)
            try:
                os.write(fd, b"x\n")
                assert conn.recv(10) == b"x\n"
            finally:
                os.close(fd)
    assert relay.finish()[2] == 0


# -- file: ---------------------------------------------------------------------------


def test_file_from_to_tcp(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    payload = os.urandom(300_000)
    source.write_bytes(payload)
    listener, port = _server()
    with listener:
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                got.append(_read_all(conn))
                conn.sendall(b"dropped")

        thread = threading.Thread(target=serve)
        thread.start()
        done = run_cli("relay", f"file:{source}", f"tcp://127.0.0.1:{port}")
        thread.join(15)
    assert done.returncode == 0, done.stderr
    assert got == [payload]


def test_file_to_replaces_and_appends(tmp_path: Path, background: type[Background]) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old contents that go\n")
    for extra, data in (([], b"first\n"), (["--append"], b"second\n")):
        relay = background(
            [*SOCKETEER, "relay", "--once", "tcp://127.0.0.1:0", f"file:{target}", *extra]
        )
        with _connect(relay.wait_listening()) as client:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            assert _read_all(client) == b""  # EOF once the bytes are in the file
        assert relay.finish()[2] == 0
    assert target.read_bytes() == b"first\nsecond\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_file_that_cannot_be_written_is_exit_1_for_one_pair() -> None:
    """/dev/full opens and refuses every write (ENOSPC): the relay's result, not an EOF."""
    done = run_cli("relay", "-", "file:/dev/full", input=b"lost\n")
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode().strip().splitlines() == [
        "socketeer: error: file:/dev/full: No space left on device"
    ]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_file_that_cannot_be_written_is_logged_per_client(background: type[Background]) -> None:
    relay = background([*SOCKETEER, "relay", "tcp://127.0.0.1:0", "file:/dev/full"])
    address = relay.wait_listening()
    for _ in range(2):  # the first client's failure does not stop the relay
        with _connect(address) as client:
            client.sendall(b"lost\n")
            client.shutdown(socket.SHUT_WR)
            _read_all(client)
    relay.wait_for_stderr(b"file:/dev/full: No space left on device", count=2)
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0, err
    assert b"Traceback" not in err


# -- fd:N ----------------------------------------------------------------------------


def test_fd_stream_from_and_back() -> None:
    """An inherited connected socket as FROM: relayed both ways to TO."""
    ours, theirs = socket.socketpair()
    listener, port = _server()
    with ours, listener:
        relay = subprocess.Popen(
            [*SOCKETEER, "relay", f"fd:{theirs.fileno()}", f"tcp://127.0.0.1:{port}"],
            pass_fds=(theirs.fileno(),),
            env=cli_env(),
            stderr=subprocess.PIPE,
        )
        theirs.close()
        try:
            conn, _ = listener.accept()
            with conn:
                ours.sendall(b"over fd\n")
                assert conn.recv(100) == b"over fd\n"
                conn.sendall(b"back over tcp\n")
                assert ours.recv(100) == b"back over tcp\n"
                ours.shutdown(socket.SHUT_WR)
                assert _read_all(conn) == b""
            assert _read_all(ours) == b""
            _, err = relay.communicate(timeout=15)
        finally:
            if relay.poll() is None:
                relay.kill()
                relay.communicate()
    assert relay.returncode == 0, err


def test_fd_pipe_as_to() -> None:
    """An inherited pipe (write end) as TO: a client's bytes come out of the read end."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [*SOCKETEER, "relay", "--once", "tcp://127.0.0.1:0", f"fd:{write_end}"],
            pass_fds=(write_end,),
            env=cli_env(),
            stderr=subprocess.PIPE,
        )
        os.close(write_end)
        write_end = -1
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(rb"listening on (\S+)", line)
        assert match, line
        with _connect(match.group(1).decode()) as client:
            client.sendall(b"into the pipe\n")
            client.shutdown(socket.SHUT_WR)
            assert _read_all(client) == b""
        proc.communicate(timeout=15)
        assert proc.returncode == 0
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            assert pipe.read() == b"into the pipe\n"
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


# -- the library: nothing left behind ------------------------------------------------


def test_library_file_relay_leaves_nothing(tmp_path: Path, no_fd_leak: None) -> None:
    from socketeer.relay import relay

    source = tmp_path / "in.txt"
    source.write_bytes(b"library\n")
    listener, port = _server()
    threads_before = threading.active_count()
    with listener:
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                got.append(_read_all(conn))

        thread = threading.Thread(target=serve)
        thread.start()
        with relay(f"file:{source}", f"tcp://127.0.0.1:{port}") as one:
            one.serve_forever()
        thread.join(15)
    assert got == [b"library\n"]
    assert _wait_until(lambda: threading.active_count() <= threads_before)


def test_library_pty_exec_relay_leaves_nothing(no_fd_leak: None) -> None:
    from socketeer.relay import relay

    listener, port = _server()
    with listener:
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                got.append(_read_all(conn))

        thread = threading.Thread(target=serve)
        thread.start()
        with relay("pty-exec:sh -c 'echo $$'", f"tcp://127.0.0.1:{port}") as one:
            one.serve_forever()
        thread.join(15)
    pid = int(got[0].strip())
    assert _gone(pid)


def _descriptors() -> set[str]:
    """This process's descriptors and what they are, less the server's reserve (/dev/null,
    kept once per process for running out of descriptors)."""
    found = set()
    for fd in open_fds():
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target != os.devnull:
                found.add(f"{fd}:{target}")
    return found


def test_library_server_relay_to_pty_exec_leaves_nothing() -> None:
    """Per client a program on a pty; the client leaves: the program is gone, nothing is open.

    The thread model only: a fork model server in this process would fork
    the test's own client socket into its child (the CLI tests cover fork).
    """
    from socketeer.relay import relay

    before = _descriptors()
    server = relay("tcp://127.0.0.1:0", "pty-exec:sh -c 'echo $$; exec cat'", model="thread")
    assert server.address is not None
    runner = threading.Thread(target=server.serve_forever)
    runner.start()
    try:
        with socket.create_connection((server.address.host, server.address.port), 10) as client:
            first = b""
            while not first.endswith(b"\n"):
                first += client.recv(100)
            child = int(first.strip())
            client.sendall(b"typed\n")
            echoed = b""
            while echoed.count(b"typed") < 2:  # the terminal's echo, then cat's copy
                echoed += client.recv(100)
        assert _wait_until(lambda: _gone(child)), "the program outlived its client"
    finally:
        server.shutdown()
        runner.join(15)
        server.close()
    assert _descriptors() == before


# -- bad input: one line, exit 2 (usage) or 1 (runtime) -------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["serve", "127.0.0.1:0", "exec", "--pty"], 2, "exec needs a program"),
        (["serve", "127.0.0.1:0", "exec", "--pty", "--", "no-such-program-xyz"], 2, "not found"),
        (["serve", "127.0.0.1:0", "echo", "--pty"], 2, "--pty needs the exec handler"),
        (["serve", "127.0.0.1:0", "exec", "--pty-size", "80x24", "--", "sh"], 2, "needs --pty"),
        (
            ["serve", "127.0.0.1:0", "exec", "--pty", "--pty-size", "80by24", "--", "sh"],
            2,
            "COLSxROWS",
        ),
        (["connect", f"127.0.0.1:{NOBODY}", "--exec", ""], 2, "--exec needs a command"),
        (["connect", f"127.0.0.1:{NOBODY}", "--exec", "no-such-program-xyz"], 2, "not found"),
        (["connect", f"127.0.0.1:{NOBODY}", "--exec", "sh 'unbalanced"], 2, "quotation"),
        (["connect", f"127.0.0.1:{NOBODY}", "--pty"], 2, "--pty needs --exec"),
        (["connect", f"udp://127.0.0.1:{NOBODY}", "--exec", "sh"], 2, "stream address"),
        (["listen", "127.0.0.1:0", "-k", "--exec", "sh"], 2, "one client"),
        (
            ["connect", f"127.0.0.1:{NOBODY}", "--exec", "sh", "--crlf", "-o", "/tmp/x"],
            2,
            "drop --output, --crlf",
        ),
        (["listen", "127.0.0.1:0", "--exec", "sh", "--hexdump", "-"], 2, "drop --hexdump"),
        (["relay", "file:/no/such/file", f"tcp://127.0.0.1:{NOBODY}"], 1, "cannot read"),
        (["relay", "tcp://127.0.0.1:0", "file:/no/such/dir/out"], 1, "cannot write"),
        (["relay", "tcp://127.0.0.1:0", "file:/"], 1, "is a directory"),
        (["relay", "tcp://127.0.0.1:0", "fd:987"], 1, "fd:987 is not open"),
        (["relay", "fd:987", f"tcp://127.0.0.1:{NOBODY}"], 1, "fd:987"),
        (["relay", "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}", "--pty"], 2, "needs an exec:"),
        (
            ["relay", "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{NOBODY}", "--append"],
            2,
            "needs a file: TO",
        ),
        (["relay", "tcp://127.0.0.1:0", "exec:sh", "--pty-size", "80x24"], 2, "--pty-size needs"),
        (["relay", "exec:no-such-program-xyz", f"tcp://127.0.0.1:{NOBODY}"], 2, "not found"),
        (["relay", "pty-exec:", f"tcp://127.0.0.1:{NOBODY}"], 2, "needs a command"),
        (["relay", "file:", f"tcp://127.0.0.1:{NOBODY}"], 2, "needs a path"),
    ],
)
def test_bad_input_is_one_line(argv: list[str], code: int, needle: str) -> None:
    done = run_cli(*argv)
    assert done.returncode == code, done.stderr
    assert_one_line_error(done.stderr, needle)
