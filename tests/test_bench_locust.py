"""The Locust user (SPEC §7): a headless Locust master and worker load socketeer's echo
server through ``examples/locustfile.py``; without Locust, the module says how to get it.

Locust runs in child processes only: importing it patches the standard library for
gevent, which this test process must not have."""

from __future__ import annotations

import csv
import importlib.util
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import IN_CI, ROOT, SOCKETEER, Background, cli_env

LOCUSTFILE = str(ROOT / "examples" / "locustfile.py")


def require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        if IN_CI:
            pytest.fail("locust is not installed, and CI must run the Locust tests")
        pytest.skip("locust is not installed (pip install 'socketeer[locust]'); CI installs it")


def start_echo(background: type[Background], address: str) -> tuple[Background, str]:
    server = background([*SOCKETEER, "serve", address, "echo"], stdin=subprocess.DEVNULL)
    return server, server.wait_listening()


def stats_row(prefix: Path) -> dict[str, str]:
    """The socketeer row of Locust's ``--csv`` statistics."""
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Type"] == "socketeer"]
    assert len(rows) == 1, rows
    return rows[0]


def locust_env(address: str, mode: str = "rr") -> dict[str, str]:
    env = cli_env()
    env["SOCKETEER_ADDRESS"] = address
    env["SOCKETEER_MODE"] = mode
    env["SOCKETEER_SIZE"] = "100"
    return env


def free_loopback_port() -> int:
    # Locust's master cannot be asked for port 0 and tell the real one, so take a
    # port the kernel just handed out.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_without_locust_the_import_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['locust'] = None\n"
        "from socketeer.errors import UsageError\n"
        "try:\n"
        "    import socketeer.bench.locust\n"
        "except UsageError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=cli_env(), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert b"pip install 'socketeer[locust]'" in done.stdout


def test_a_master_and_a_worker_load_socketeer_echo(
    background: type[Background], tmp_path: Path
) -> None:
    require_locust()
    server, address = start_echo(background, "tcp://127.0.0.1:0")
    port = str(free_loopback_port())
    env = locust_env(address)
    locust = [sys.executable, "-m", "locust", "-f", LOCUSTFILE]
    master = subprocess.Popen(
        [
            *locust,
            "--headless",
            "--master",
            "--master-bind-host=127.0.0.1",
            f"--master-bind-port={port}",
            "--expect-workers=1",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "5s",
            "--csv",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [*locust, "--worker", "--master-host=127.0.0.1", f"--master-port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = master.communicate(timeout=60)
        worker.wait(timeout=30)  # the master tells it to quit
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if worker.stdout is not None:
            worker.stdout.close()
    assert master.returncode == 0, out.decode(errors="replace")
    row = stats_row(tmp_path / "run")
    assert int(row["Request Count"]) > 0, row
    assert int(row["Failure Count"]) == 0, row
    assert row["Name"] == f"rr {address}"
    server.proc.send_signal(signal.SIGTERM)
    server.finish(timeout=30)


@pytest.mark.parametrize(
    ("kind", "mode"), [("tcp", "connect"), ("udp", "rr"), ("unix", "rr"), ("unix", "connect")]
)
def test_each_mode_and_socket_kind_in_one_locust_process(
    kind: str, mode: str, background: type[Background], tmp_path: Path, sockdir: Path
) -> None:
    require_locust()
    listen = {
        "tcp": "tcp://127.0.0.1:0",
        "udp": "udp://127.0.0.1:0",
        "unix": f"unix:{sockdir}/echo.sock",
    }[kind]
    server, address = start_echo(background, listen)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            LOCUSTFILE,
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "2s",
            "--csv",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        env=locust_env(address, mode),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    row = stats_row(tmp_path / "run")
    assert int(row["Request Count"]) > 0, row
    assert int(row["Failure Count"]) == 0, row
    server.proc.send_signal(signal.SIGTERM)
    server.finish(timeout=30)
