"""`make demo`: the tutorial's exchange over TCP, UDP, a Unix stream and a Unix datagram socket.

Each round starts a tutorial server on an ephemeral port or a temporary path,
waits for its ``listening on`` line, runs the matching client with a message
on stdin, and shows both sides. Everything is stopped and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUTORIAL = HERE / "tutorial"
sys.path.insert(0, str(HERE.parent / "src"))  # run from a checkout without installing

import socketeer  # noqa: E402


def start(script: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(TUTORIAL / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"demo: {script} did not start: {line}{proc.stderr.read()}")
    return proc, line.split()[-1]


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return out


def client(script: str, *args: str, message: str) -> str:
    result = subprocess.run(
        [sys.executable, str(TUTORIAL / script), *args],
        input=message,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"demo: {script} failed: {result.stderr.strip()}")
    return result.stdout


def round_trip(
    title: str,
    server: tuple[str, ...],
    client_script: str,
    client_args: Callable[[str], tuple[str, ...]],
    message: str,
) -> None:
    proc, address = start(*server)
    try:
        reply = client(client_script, *client_args(address), message=message)
    finally:
        served = stop(proc)
    print(f"== {title}: {server[0]} on {address}")
    print(f"   client> {reply.rstrip()}   (typed: {message.strip()!r})")
    print(f"   server> {served.strip()}")


def cli_round_trip() -> None:
    """The same idea from the command line: `socketeer listen` and `socketeer connect`."""
    command = [sys.executable, "-m", "socketeer"]
    listener = subprocess.Popen(
        [*command, "listen", "tcp://127.0.0.1:0"],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert listener.stderr is not None and listener.stdin is not None
    address = listener.stderr.readline().split()[-1]
    listener.stdin.write("and hello back\n")
    listener.stdin.close()
    reply = subprocess.run(
        [*command, "connect", address],
        input="hello from the CLI\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    listener.stdin = None  # closed above; communicate() must not flush it
    heard, _ = listener.communicate(timeout=10)
    print(f"== CLI: socketeer listen on {address}, socketeer connect to it")
    print(f"   connect> {reply.strip()}")
    print(f"   listen>  {heard.strip()}")


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="socketeer-demo-"))
    try:

        def inet(address: str) -> tuple[str, ...]:
            parsed = socketeer.Address.parse(address)
            return parsed.host, str(parsed.port)

        def unix(address: str) -> tuple[str, ...]:
            return (socketeer.Address.parse(address).path,)

        round_trip("TCP", ("server.py", "0"), "client.py", inet, "hello over TCP\n")
        round_trip("UDP", ("udp_server.py", "0"), "udp_client.py", inet, "hello over UDP\n")
        round_trip(
            "Unix stream",
            ("unix_server.py", str(folder / "stream.sock")),
            "unix_client.py",
            unix,
            "hello over a Unix stream socket\n",
        )
        round_trip(
            "Unix datagram",
            ("unix_dgram_server.py", str(folder / "dgram.sock")),
            "unix_dgram_client.py",
            unix,
            "hello over a Unix datagram socket\n",
        )
        cli_round_trip()
        left = os.listdir(folder)
        print(f"== cleaned up: {left or 'nothing left behind'}")
        return 0 if not left else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
