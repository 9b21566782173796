"""Install a built wheel into a new, empty virtual environment and use it as a user would.

    python scripts/check_wheel.py dist/socketeer-VERSION-py3-none-any.whl

From that environment, never the source tree: ``socketeer --version`` names the
package's version, ``socketeer --help`` works, the manual pages are installed
under share/man/man1, and one line goes through ``socketeer serve ... echo``
and back with ``socketeer connect``. Exits 0 when all of it holds, 1 (with
what went wrong) otherwise.
"""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(rb"listening on (tcp://127\.0\.0\.1:\d+)")


def run(argv: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    """What ``argv`` prints on stdout; stops the check when it fails."""
    result = subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True, timeout=120, check=False
    )
    if result.returncode != 0:
        sys.stderr.buffer.write(result.stdout + result.stderr)
        raise SystemExit(f"check_wheel: {' '.join(argv)} exited {result.returncode}")
    return result.stdout


def expected_version() -> str:
    text = (ROOT / "src" / "socketeer" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if found is None:
        raise SystemExit("check_wheel: no __version__ in socketeer/__init__.py")
    return found.group(1)


def wait_listening(server: subprocess.Popen[bytes], seconds: float) -> str:
    """The address the server prints on stderr when it is ready."""
    assert server.stderr is not None
    seen = b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(server.stderr, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            chunk = server.stderr.read1(4096)
            if not chunk:
                break
            seen += chunk
            found = LISTENING.search(seen)
            if found:
                return found.group(1).decode()
    sys.stderr.buffer.write(seen)
    raise SystemExit("check_wheel: the server never said where it listens")


def echo_exchange(bin_dir: Path, cwd: Path) -> None:
    server = subprocess.Popen(
        [str(bin_dir / "socketeer"), "serve", "tcp://127.0.0.1:0", "echo"],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        address = wait_listening(server, 20)
        line = b"hello from the wheel\n"
        reply = run([str(bin_dir / "socketeer"), "connect", address], cwd, stdin=line)
        if reply != line:
            raise SystemExit(f"check_wheel: sent {line!r}, echo answered {reply!r}")
        print(f"echo over {address}: ok")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: check_wheel.py WHEEL")
    wheel = Path(argv[0]).resolve()
    version = expected_version()
    with tempfile.TemporaryDirectory(prefix="socketeer-wheel-") as tmp:
        home = Path(tmp)
        env_dir = home / "venv"
        venv.create(env_dir, with_pip=True)
        bin_dir = env_dir / "bin"
        run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)], home)

        code = "import socketeer; print(socketeer.__file__)"
        where = Path(run([str(bin_dir / "python"), "-c", code], home).decode().strip())
        if not where.is_relative_to(env_dir):
            raise SystemExit(f"check_wheel: socketeer imported from {where}, not the venv")

        out = run([str(bin_dir / "socketeer"), "--version"], home).decode().strip()
        if out != f"socketeer {version}":
            raise SystemExit(f"check_wheel: --version says {out!r}, expected socketeer {version}")
        print(out)

        help_text = run([str(bin_dir / "socketeer"), "--help"], home).decode()
        for command in ("connect", "listen", "serve", "relay", "bench", "completion"):
            if command not in help_text:
                raise SystemExit(f"check_wheel: --help does not list {command}")
        print("--help: ok")

        pages = sorted(p.name for p in (env_dir / "share" / "man" / "man1").glob("socketeer*.1"))
        if "socketeer.1" not in pages or "socketeer-relay.1" not in pages:
            raise SystemExit(f"check_wheel: manual pages installed: {pages}")
        print(f"manual pages: {' '.join(pages)}")

        echo_exchange(bin_dir, home)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
