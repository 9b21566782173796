"""The CLI's shared option groups: declared once, parsed into frozen dataclasses (SPEC §5).

The first half is pure (argparse and the dataclasses, no sockets); the
second runs the command: usage errors, and --allow/--deny on listen.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

import socketeer
from socketeer.cli._log import log_level
from socketeer.cli._options import (
    AccessOptions,
    IdleOptions,
    OutputOptions,
    ServerOptions,
    StreamOptions,
    TLSClientOptions,
    TLSServerOptions,
)
from socketeer.cli.parser import build_parser
from socketeer.errors import UsageError

from .conftest import NOBODY, SOCKETEER, Background, cli_env, run_cli

ADDRESS = "tcp://127.0.0.1:0"

# The groups each command has; every one must build from every parse of it.
GROUPS: dict[str, tuple[list[str], list[Callable[..., object]]]] = {
    "connect": (
        [ADDRESS],
        [IdleOptions.from_args, StreamOptions.from_args, TLSClientOptions.from_args,
         OutputOptions.from_args],
    ),
    "listen": (
        [ADDRESS],
        [IdleOptions.from_args, StreamOptions.from_args, AccessOptions.from_args,
         TLSServerOptions.from_args, OutputOptions.from_args],
    ),
    "serve": (
        [ADDRESS, "echo"],
        [IdleOptions.from_args, ServerOptions.from_args, AccessOptions.from_args,
         TLSServerOptions.from_args, OutputOptions.from_args],
    ),
    "relay": (
        [ADDRESS, "exec:cat"],
        [IdleOptions.from_args, ServerOptions.from_args, AccessOptions.from_args,
         TLSServerOptions.from_args, TLSClientOptions.from_args, OutputOptions.from_args],
    ),
}  # fmt: skip


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def words(text: str) -> list[str]:
    """A command line written as one string (no quoting needed in these tests)."""
    return text.split()


def assert_one_line_error(stderr: bytes, *needles: str) -> None:
    text = stderr.decode()
    assert text.startswith("socketeer: error: "), text
    assert text.count("\n") == 1, text
    for needle in needles:
        assert needle in text, text


# -- the dataclasses, from parsed arguments ----------------------------------------------------


@pytest.mark.parametrize("command", sorted(GROUPS))
def test_every_group_builds_with_its_defaults(command: str) -> None:
    positional, builders = GROUPS[command]
    args = parse(command, *positional)
    for build in builders:
        options = build(args)
        assert dataclasses.is_dataclass(options)
        serve_model = command == "serve" and isinstance(options, ServerOptions)
        default = ServerOptions(model="thread") if serve_model else type(options)()
        assert options == default, f"{command}: {options} is not the default"


def test_defaults_agree_with_the_library() -> None:
    assert ServerOptions().grace == 5.0 and ServerOptions().workers == 1
    assert parse("serve", ADDRESS, "echo").model == "thread"
    assert ServerOptions.from_args(parse("relay", ADDRESS, "-")).model is None  # relay picks
    assert parse("relay", ADDRESS, "-").timeout == 10.0


def test_groups_are_frozen() -> None:
    options = AccessOptions.from_args(parse("listen", "--deny", "127.0.0.2", ADDRESS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.deny = ()  # type: ignore[misc]


@pytest.mark.parametrize("command", ["listen", "serve", "relay"])
def test_access_takes_repeats_and_comma_lists(command: str) -> None:
    positional, _ = GROUPS[command]
    args = parse(
        command,
        "--allow",
        "10.0.0.0/8, 127.0.0.1",
        "--allow=::1",
        "--deny",
        "127.0.0.2,,",
        *positional,
    )
    options = AccessOptions.from_args(args)
    assert options == AccessOptions(("10.0.0.0/8", "127.0.0.1", "::1"), ("127.0.0.2",))
    assert options
    assert not AccessOptions()


def test_server_options() -> None:
    options = "--model fork --workers 0 --grace 2.5 --max-conns 3 --log-format json"
    args = parse("relay", *words(options), ADDRESS, "exec:cat")
    assert ServerOptions.from_args(args) == ServerOptions("fork", 0, 2.5, 3, "json")


def test_output_and_stream_and_idle_options() -> None:
    args = parse(*words("connect -vv --debug --hexdump - --crlf --no-shutdown -i 1.5"), ADDRESS)
    assert OutputOptions.from_args(args) == OutputOptions(2, False, True, "-")
    assert StreamOptions.from_args(args) == StreamOptions(half_close=False, crlf=True)
    assert IdleOptions.from_args(args) == IdleOptions(1.5)
    quiet = parse("serve", "-q", ADDRESS, "echo")
    assert OutputOptions.from_args(quiet) == OutputOptions(quiet=True)


def test_serve_has_no_hexdump() -> None:
    # The server's handlers own the sockets: there is nothing for serve to dump.
    with pytest.raises(UsageError, match="unrecognized arguments: --hexdump"):
        parse("serve", "--hexdump", "-", ADDRESS, "echo")


def test_tls_server_ca_is_the_client_ca() -> None:
    args = parse(
        *words("serve --cert c.pem --key k.pem --ca ca.pem --alpn"),
        "h2, http/1.1",
        ADDRESS,
        "echo",
    )
    assert TLSServerOptions.from_args(args) == TLSServerOptions(
        cert="c.pem", key="k.pem", client_ca="ca.pem", alpn=("h2", "http/1.1")
    )
    listen = TLSServerOptions.from_args(parse("listen", "--self-signed", ADDRESS))
    assert listen.self_signed and listen.given
    assert not TLSServerOptions(alpn=("h2",)).given  # --alpn alone says no side


def test_tls_client_options() -> None:
    args = parse(
        *words("connect --cert me.pem --key k.pem --ca ca.pem --insecure"),
        *words("--server-name example.test --pin AB:CD"),
        ADDRESS,
    )
    assert TLSClientOptions.from_args(args) == TLSClientOptions(
        ca="ca.pem",
        insecure=True,
        server_name="example.test",
        pin="AB:CD",
        cert="me.pem",
        key="k.pem",
    )


def test_relay_tls_sides_are_kept_apart() -> None:
    args = parse(
        *words("relay --cert c.pem --key k.pem --client-ca clients.pem"),
        *words("--ca upstream.pem --pin ab --alpn h2"),
        *words(f"tls://127.0.0.1:0 tls://127.0.0.1:{NOBODY}"),
    )
    server = TLSServerOptions.from_args(args)
    client = TLSClientOptions.from_args(args)
    assert server == TLSServerOptions("c.pem", "k.pem", "clients.pem", False, ("h2",))
    # FROM's certificate is not presented to TO.
    assert client == TLSClientOptions(ca="upstream.pem", pin="ab", alpn=("h2",))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "green"], "invalid choice: 'green'"),
        (["--workers", "-1"], "must be 0 or more"),
        (["--workers", "two"], "not a whole number"),
        (["--grace", "0"], "seconds must be a positive number"),
        (["--grace", "soon"], "not a number of seconds"),
        (["--grace", "inf"], "seconds must be a positive number"),
        (["--max-conns", "0"], "must be at least 1"),
        (["--log-format", "xml"], "invalid choice: 'xml'"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "relay"])
def test_bad_server_options_are_usage_errors(command: str, argv: list[str], message: str) -> None:
    positional, _ = GROUPS[command]
    with pytest.raises(UsageError, match=message):
        parse(command, *argv, *positional)


def test_log_levels() -> None:
    serve, relay = logging.INFO, logging.WARNING
    assert log_level(OutputOptions(), serve) == logging.INFO  # a line per closed connection
    assert log_level(OutputOptions(), relay) == logging.WARNING  # quiet by default
    assert log_level(OutputOptions(verbose=1), relay) == logging.INFO  # a line per pair
    assert log_level(OutputOptions(verbose=1), serve) == logging.INFO
    assert log_level(OutputOptions(verbose=2), relay) == logging.DEBUG
    assert log_level(OutputOptions(quiet=True), serve) == logging.WARNING
    assert log_level(OutputOptions(quiet=True), relay) == logging.ERROR


# -- no abbreviations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        # Refused while parsing: nothing is bound or connected, so no port is real.
        ["relay", "--proxy-proto", "v1", ADDRESS, f"tcp://127.0.0.1:{NOBODY}"],
        ["relay", "--accept", ADDRESS, f"tcp://127.0.0.1:{NOBODY}"],
        ["serve", "--work", "2", ADDRESS, "echo"],
        ["connect", "--time", "1", f"127.0.0.1:{NOBODY}"],
        ["listen", "--keep", ADDRESS],
    ],
)
def test_abbreviated_options_are_refused(argv: list[str]) -> None:
    # Before: `relay --proxy URL` was taken as --proxy-protocol URL.
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, "unrecognized arguments: --", "--help")
    assert result.stdout == b""


def test_short_options_still_combine() -> None:
    args = parse("connect", "-vv", "-t1", ADDRESS)
    assert OutputOptions.from_args(args).verbose == 2


# -- relay: the server options, end to end --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "green"], "invalid choice: 'green'"),
        (["--workers", "-1"], "--workers: must be 0 or more"),
        (["--grace", "0"], "--grace: seconds must be a positive number"),
    ],
)
def test_relay_bad_server_options_exit_2(argv: list[str], message: str) -> None:
    result = run_cli("relay", *argv, ADDRESS, f"tcp://127.0.0.1:{NOBODY}")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, message)


def test_relay_alpn_without_tls_exits_2() -> None:
    result = run_cli("relay", "--alpn", "h2", ADDRESS, f"tcp://127.0.0.1:{NOBODY}")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "--alpn needs a tls:// FROM or TO")


@pytest.mark.parametrize("model", ["thread", "fork", "async"])
def test_relay_runs_with_model_workers_and_grace(model: str, background: type[Background]) -> None:
    argv = ["relay", "--model", model, *words("--workers 1 --grace 1"), ADDRESS, "exec:cat"]
    relay = background([*SOCKETEER, *argv], stdin=subprocess.DEVNULL)
    address = relay.wait_listening()
    with socketeer.connect(address, timeout=10) as conn:
        conn.send(b"through the relay\n")
        conn.shutdown_write()
        assert conn.recv_line() == b"through the relay"
    relay.proc.send_signal(signal.SIGTERM)
    _, err, code = relay.finish()
    assert code == 0, err


# -- listen --allow/--deny ----------------------------------------------------------------------


def connect_from(source: str, address: str) -> socket.socket:
    """A client bound to ``source`` (127.0.0.2 is loopback too), for the deny lists."""
    target = socketeer.Address.parse(address)
    sock = socket.socket()
    sock.settimeout(10)
    try:
        sock.bind((source, 0))
        sock.connect((target.host, target.port))
    except BaseException:
        sock.close()
        raise
    return sock


def receive_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_listen_deny_closes_the_client_and_waits_for_the_next(
    background: type[Background],
) -> None:
    server = background([*SOCKETEER, "listen", "--deny", "127.0.0.1", ADDRESS])
    address = server.wait_listening()
    with connect_from("127.0.0.1", address) as denied:
        assert denied.recv(1) == b""  # closed, unserved
    server.wait_for_stderr(b"closed: denied by --allow/--deny")
    assert server.proc.poll() is None  # still waiting for a client it may serve
    assert server.proc.stdin is not None
    server.proc.stdin.write(b"for the allowed one\n")
    server.proc.stdin.close()
    with connect_from("127.0.0.2", address) as allowed:
        allowed.sendall(b"hello\n")
        allowed.shutdown(socket.SHUT_WR)
        assert receive_all(allowed) == b"for the allowed one\n"
    out, err, code = server.finish()
    assert code == 0, err
    assert out == b"hello\n"


def test_listen_allow_and_timeout_count_the_whole_wait() -> None:
    proc = subprocess.Popen(
        [*SOCKETEER, "listen", "-t", "1", "--allow", "127.0.0.2", ADDRESS],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    address = line.split(b"listening on ")[1].strip().decode()
    with connect_from("127.0.0.1", address) as denied:
        assert denied.recv(1) == b""
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert out == b""
    assert b"denied by --allow/--deny" in err
    assert err.decode().endswith(f"socketeer: error: accept timed out after 1s: {address}\n")


def test_listen_bad_network_exits_2() -> None:
    result = run_cli("listen", "--deny", "not-a-net", ADDRESS)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "bad network 'not-a-net'")


def test_listen_keep_open_deny(background: type[Background]) -> None:
    server = background(
        [*SOCKETEER, "listen", "-k", "--deny", "127.0.0.2", ADDRESS], stdin=subprocess.DEVNULL
    )
    address = server.wait_listening()
    assert server.proc.stdout is not None
    with connect_from("127.0.0.2", address) as denied:
        assert denied.recv(1) == b""
    server.wait_for_stderr(b"closed: denied by --allow/--deny")
    with connect_from("127.0.0.1", address) as allowed:
        allowed.sendall(b"let in\n")
        assert server.proc.stdout.readline() == b"let in\n"
    server.proc.send_signal(signal.SIGINT)
    _, err, code = server.finish()
    assert code == 130, err


def test_listen_datagram_deny_drops_the_sender(background: type[Background]) -> None:
    server = background(
        [*SOCKETEER, "listen", "--deny", "127.0.0.2", "udp://127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
    )
    target = socketeer.Address.parse(server.wait_listening())
    assert server.proc.stdout is not None
    for source, data in (("127.0.0.2", b"dropped\n"), ("127.0.0.1", b"kept\n")):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.sendto(data, (target.host, target.port))
        if source == "127.0.0.2":
            server.wait_for_stderr(b"dropped: denied by --allow/--deny")
    assert server.proc.stdout.readline() == b"kept\n"
    server.proc.send_signal(signal.SIGINT)
    server.finish()


def test_tls_options_on_a_datagram_listen_exit_2() -> None:
    result = run_cli("listen", "--self-signed", "udp://127.0.0.1:0")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "TLS options need a tls:// address")


# -- the --help path --------------------------------------------------------------------------


def test_help_loads_no_io_modules() -> None:
    code = (
        "import sys\n"
        "from socketeer.cli.main import main\n"
        "try:\n"
        "    main(['relay', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'ssl', 'asyncio', 'selectors', 'socket', 'threading', 'dataclasses', 'logging'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert out.stdout.splitlines()[-1] == "[]"
