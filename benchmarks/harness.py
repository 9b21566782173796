"""What every benchmark script shares: building the C programs, starting servers, tables.

Its own module so that ``run.py`` (which runs the others' tables too) and the
scripts it runs import it, and not one another.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def compile_c(name: str, out: Path, *flags: str) -> Path:
    """Build benchmarks/NAME.c into OUT/NAME."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        sys.exit("benchmarks need a C compiler (gcc) for the load generator")
    binary = out / name
    subprocess.run([cc, "-O2", *flags, "-o", str(binary), str(HERE / f"{name}.c")], check=True)
    return binary


def announced_port(proc: subprocess.Popen[bytes], name: str) -> int:
    """The port in a server's first stderr line, ``listening on tcp://127.0.0.1:PORT``."""
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if "listening on" not in line:
        raise RuntimeError(f"{name} did not start: {line}")
    return int(line.rsplit(":", 1)[1])


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def reserve_port() -> int:
    """A free loopback port, for peers (socat, ncat) that cannot report a port-0 bind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def background(
    argv: list[str], pass_fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process for one measurement, killed (with its group) afterwards."""
    proc = subprocess.Popen(
        argv, stderr=subprocess.PIPE, pass_fds=pass_fds, env=python_env(), start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def loadgen(binary: Path, *args: object, timeout: float = 120) -> list[float]:
    out = subprocess.run(
        [str(binary), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {args}: {out.stderr.strip()}")
    return [float(x) for x in out.stdout.split()]


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def build(out: Path) -> tuple[Path, Path]:
    return compile_c("loadgen", out), compile_c("echo_epoll", out)
