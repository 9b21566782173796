"""Any command line ends in an exit code, never a traceback (SPEC §5).

Hypothesis draws option names from the parser itself (so every option added
later is fuzzed too) and values from a list of the troublesome ones (huge,
negative, not a number, empty, missing paths), and runs ``connect``,
``listen``, ``serve`` and ``relay`` as a person would: a subprocess with
stdin at EOF, on loopback, port 0 or a port that refuses. A command that is
still running after a moment (a server that started) is stopped with
SIGTERM, which must also end it cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socketeer.cli.parser import build_parser

from .conftest import SOCKETEER, cli_env

COMMANDS = ("connect", "listen", "serve", "relay")
EXAMPLES = os.environ.get("SOCKETEER_FUZZ_EXAMPLES")
# --workers N forks N processes: a large N is a load, not a parsing question.
SKIPPED = {"--workers", "-h", "--help", "--debug"}
VALUES = [
    "0",
    "-1",
    "1",
    "0.05",
    "2",
    "1e308",
    "1e-308",
    "-0",
    "nan",
    "inf",
    "99999999999999999999999",
    "65536",
    "",
    "abc",
    "a,b,c",
    "1,2,3",
    "v1",
    "json",
    "/nonexistent/dir/f",
    "-",
    "127.0.0.1",
    "::1",
    "239.1.1.1@lo",
    "10.0.0.0/8",
    "env",
    "lo",
    "deadbeef",
]


# What an argv can hold: no NUL, no lone surrogates.
ARGUMENT_TEXT = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6
)


def _options(command: str) -> list[argparse.Action]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [
        action
        for action in sub.choices[command]._actions
        if action.option_strings and not set(action.option_strings) & SKIPPED
    ]


OPTIONS = {command: _options(command) for command in COMMANDS}


@pytest.fixture(scope="module")
def refusing_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@st.composite
def command_lines(draw: st.DrawFn, refused: int, folder: str) -> list[str]:
    command = draw(st.sampled_from(COMMANDS))
    listen_at = st.sampled_from(
        ["127.0.0.1:0", "udp://127.0.0.1:0", "tls://127.0.0.1:0", f"unix:{folder}/s.sock", "x:"]
    )
    connect_to = st.sampled_from(
        [
            f"127.0.0.1:{refused}",
            f"tls://127.0.0.1:{refused}",
            f"udp://127.0.0.1:{refused}",
            f"unix:{folder}/none.sock",
            f"127.0.0.1:{1 << 16}",  # one past the last port: malformed, refused before any socket
        ]
    )
    if command == "connect":
        argv = [command, draw(connect_to)]
    elif command == "listen":
        argv = [command, draw(listen_at)]
    elif command == "serve":
        handler = draw(st.sampled_from(["echo", "discard", "ack", "chat", "nosuch", "os:nope"]))
        argv = [command, draw(listen_at), handler]
    else:
        argv = [command, draw(listen_at), draw(connect_to)]
    for action in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4)):
        flag = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:
            argv.append(flag)
            continue
        choices = list(action.choices or [])
        # A proxy that refuses: the port the fixture holds bound and not listening.
        values = [*choices, *VALUES, f"socks5://127.0.0.1:{refused}"]
        value = draw(st.sampled_from(values) | ARGUMENT_TEXT)
        argv.append(f"{flag}={value}" if value.startswith("-") else flag)
        if not value.startswith("-"):
            argv.append(value)
    return argv


def _run(argv: list[str], cwd: str) -> tuple[int, str]:
    proc = subprocess.Popen(
        [*SOCKETEER, *argv],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # a server that started: stopping must be clean too
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"did not stop on SIGTERM: {argv}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(60 + 4 * int(EXAMPLES or 40))  # about a second per example, more when busy
def test_no_command_line_ends_in_a_traceback(refusing_port: int) -> None:
    folder = tempfile.mkdtemp(prefix="sk-fuzz-", dir="/tmp")

    @settings(
        max_examples=int(EXAMPLES or 40),
        deadline=None,
        derandomize=not EXAMPLES,  # the same 40 each run; SOCKETEER_FUZZ_EXAMPLES=N explores
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(command_lines(refusing_port, folder))
    def check(argv: list[str]) -> None:
        code, err = _run(argv, folder)
        assert "Traceback" not in err, (argv, err)
        assert code in {0, 1, 2, 143}, (argv, code, err)

    try:
        check()
    finally:
        for path in Path(folder).iterdir():
            path.unlink()
        os.rmdir(folder)


def test_every_fuzzed_command_has_options() -> None:
    assert all(len(OPTIONS[command]) > 5 for command in COMMANDS)
