"""SPEC §8: the tutorial's programs, run end to end as a person would run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import socketeer

from .conftest import ROOT, Background, cli_env

TUTORIAL = ROOT / "examples" / "tutorial"
PROMPT_AND_REPLY = b"Please enter the message: I got your message\n"


def program(name: str, *args: str) -> list[str]:
    return [sys.executable, str(TUTORIAL / name), *args]


def run_client(name: str, *args: str, message: bytes = b"hello, tutorial\n") -> bytes:
    result = subprocess.run(
        program(name, *args),
        input=message,
        capture_output=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def host_port(address: str) -> tuple[str, str]:
    parsed = socketeer.Address.parse(address)
    return parsed.host, str(parsed.port)


def test_tcp_server_and_client(background: type[Background]) -> None:
    server = background(program("server.py", "0"))
    host, port = host_port(server.wait_listening())
    assert run_client("client.py", host, port) == PROMPT_AND_REPLY
    out, err, code = server.finish()
    assert code == 0, err
    assert out == b"Here is the message: hello, tutorial\n"


def test_udp_server_and_client(background: type[Background]) -> None:
    server = background(program("udp_server.py", "0"))
    host, port = host_port(server.wait_listening())
    assert run_client("udp_client.py", host, port) == PROMPT_AND_REPLY
    assert run_client("udp_client.py", host, port, message=b"again\n") == PROMPT_AND_REPLY
    server.proc.send_signal(signal.SIGTERM)
    out, _, code = server.finish()
    assert code == 0
    assert out == b"Here is the message: hello, tutorial\nHere is the message: again\n"


def test_unix_stream_server_and_client(background: type[Background], sockdir: Path) -> None:
    path = sockdir / "tutorial.sock"
    server = background(program("unix_server.py", str(path)))
    assert server.wait_listening() == f"unix:{path}"
    for _ in range(2):  # iterative: one client after another
        assert run_client("unix_client.py", str(path)) == PROMPT_AND_REPLY
    server.proc.send_signal(signal.SIGTERM)
    out, _, code = server.finish()
    assert code == 0
    assert out.count(b"Here is the message: hello, tutorial\n") == 2
    assert not path.exists()


def test_unix_datagram_server_and_client(background: type[Background], sockdir: Path) -> None:
    path = sockdir / "tutorial-dgram.sock"
    server = background(program("unix_dgram_server.py", str(path)))
    assert server.wait_listening() == f"unix-dgram:{path}"
    assert run_client("unix_dgram_client.py", str(path)) == PROMPT_AND_REPLY
    server.proc.send_signal(signal.SIGTERM)
    out, _, code = server.finish()
    assert code == 0
    assert out == b"Here is the message: hello, tutorial\n"
    assert not path.exists()
    assert os.listdir(sockdir) == []


def test_clients_report_a_refused_server_in_one_line(sockdir: Path) -> None:
    result = subprocess.run(
        program("unix_client.py", str(sockdir / "none.sock")),
        input=b"x\n",
        capture_output=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"unix_client.py: no such socket: unix:{sockdir}/none.sock\n".encode()


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


@pytest.mark.slow
def test_forking_server_serves_50_at_once_and_leaves_no_zombie(
    background: type[Background],
) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to look for zombies")
    server = background(program("forking_server.py", "0"))
    address = server.wait_listening()
    clients = [socketeer.connect(address, timeout=30) for _ in range(50)]
    replies: list[bytes] = []
    lock = threading.Lock()

    def talk(conn: socketeer.Connection, i: int) -> None:
        with conn:
            conn.send_line(f"client {i}")
            reply = conn.recv_line()
            with lock:
                replies.append(reply)

    threads = [threading.Thread(target=talk, args=(c, i)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert replies == [b"I got your message"] * 50

    # Children exit after their reply; the parent must reap every one of them.
    deadline = time.monotonic() + 10
    while children_of(server.proc.pid):
        assert time.monotonic() < deadline, f"left over: {children_of(server.proc.pid)}"
        time.sleep(0.05)

    server.proc.send_signal(signal.SIGTERM)
    out, _, code = server.finish()
    assert code == 0
    lines = sorted(out.decode().splitlines())
    assert lines == sorted(f"Here is the message: client {i}" for i in range(50))
    assert children_of(server.proc.pid) == []
