"""SPEC §10: `relay --connect-both`, `--listen-both` and `--retry` (backoff with jitter)."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

import socketeer
from socketeer.address import Address
from socketeer.errors import ConnectError
from socketeer.relay.dial import dial
from socketeer.relay.joined import ConnectBoth, ListenBoth
from socketeer.relay.retry import RetryPolicy, parse_retry
from socketeer.tls import TLSConfig

from .conftest import (
    NOBODY,
    SOCKETEER,
    Background,
    assert_one_line_error,
    free_port_refusing,
    open_fds,
    run_cli,
)

# -- the policy (pure) -----------------------------------------------------------------------


@given(
    st.integers(0, 50) | st.none(),
    st.floats(0, 5),
    st.floats(0, 1),
    st.integers(1, 200),
    st.floats(0, 1, exclude_max=True),
)
def test_backoff_grows_to_its_cap_and_jitter_only_shortens(
    retries: int | None, delay: float, jitter: float, attempt: int, draw: float
) -> None:
    policy = RetryPolicy(retries=retries, delay=delay, max_delay=max(30.0, delay), jitter=jitter)
    ceiling = policy.ceiling(attempt)
    assert ceiling <= policy.max_delay
    assert policy.ceiling(attempt + 1) >= ceiling
    wait = policy.delay_after(attempt, draw)
    assert ceiling * (1 - jitter) - 1e-9 <= wait <= ceiling
    assert policy.gives_up_after(attempt) == (retries is not None and attempt > retries)


def test_backoff_doubles_from_the_first_delay() -> None:
    policy = RetryPolicy(retries=5, delay=0.5, jitter=0)
    assert [policy.delay_after(n, 0.99) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.describe(2) == "attempt 2 of 6"
    assert RetryPolicy(retries=None).describe(7) == "attempt 7"


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("5", 5), ("forever", None), ("FOREVER", None)]
)
def test_retry_values(text: str, value: int | None) -> None:
    assert parse_retry(text) == value


@pytest.mark.parametrize("text", ["-1", "x", "1.5", "", "for ever"])
def test_bad_retry_values(text: str) -> None:
    with pytest.raises(ValueError, match="--retry"):
        parse_retry(text)


@pytest.mark.parametrize(
    "kwargs", [{"retries": -1}, {"delay": -1}, {"delay": 40, "max_delay": 30}, {"jitter": 2}]
)
def test_a_policy_that_cannot_be(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_dial_logs_every_attempt_and_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    refusing, port = free_port_refusing()
    with refusing:
        with pytest.raises(ConnectError, match="gave up after 3 attempts: connection refused"):
            dial(
                lambda: socketeer.connect(f"tcp://127.0.0.1:{port}", timeout=2),
                RetryPolicy(retries=2, delay=0.01),
                "",
            )
    lines = [r.getMessage() for r in caplog.records]
    assert [re.search(r"attempt \d of 3", line).group() for line in lines] == [  # type: ignore[union-attr]
        "attempt 1 of 3",
        "attempt 2 of 3",
        "attempt 3 of 3",
    ]
    assert lines[-1].endswith("giving up")


def test_dial_stops_waiting_when_told() -> None:
    refusing, port = free_port_refusing()
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with refusing:
        result = dial(
            lambda: socketeer.connect(f"tcp://127.0.0.1:{port}", timeout=2),
            RetryPolicy(retries=None, delay=30),
            "",
            stop=stop,
        )
    assert result is None
    assert time.monotonic() - started < 5


# -- --connect-both -------------------------------------------------------------------------


def relay_proc(background: type[Background], *argv: str) -> Background:
    return background([*SOCKETEER, "relay", *argv], stdin=subprocess.DEVNULL)


def exchange(a: socketeer.Connection, b: socketeer.Connection, tag: bytes) -> None:
    a.timeout = b.timeout = 5
    a.send(b"a to b " + tag)
    assert b.recv_exactly(7 + len(tag)) == b"a to b " + tag
    b.send(b"b to a " + tag)
    assert a.recv_exactly(7 + len(tag)) == b"b to a " + tag


@pytest.mark.parametrize("restarted", ["first", "second"])
def test_connect_both_survives_the_restart_of_either_side(
    background: type[Background], restarted: str
) -> None:
    listeners = [socketeer.listen("tcp://127.0.0.1:0") for _ in range(2)]
    addresses = [str(listener.address) for listener in listeners]
    relay = relay_proc(background, "-v", "--retry-delay", "0.05", "--connect-both", *addresses)
    try:
        conns = [listener.accept(timeout=10) for listener in listeners]
        exchange(conns[0], conns[1], b"one")
        # The restart: that side's connection and listener go away, then come back.
        gone = 0 if restarted == "first" else 1
        other = 1 - gone
        conns[gone].close()
        listeners[gone].close()
        assert conns[other].recv(10) == b""  # its peer's end passed on as EOF
        conns[other].close()  # as a server does when its client leaves
        relay.wait_for_stderr(b"connection refused", count=1)  # it knocks while the side is down
        listeners[gone] = socketeer.listen(addresses[gone])
        conns = [listener.accept(timeout=10) for listener in listeners]
        exchange(conns[0], conns[1], b"two")  # a new connection carries data
        for conn in conns:
            conn.close()
        relay.wait_for_stderr(b"joined", count=2)
        relay.proc.terminate()
        _, err, code = relay.finish()
        assert code == 0, err
        assert err.count(b"closed tcp://") >= 1
    finally:
        for listener in listeners:
            listener.close()


def test_connect_both_retry_5_gives_up_with_exit_1_and_logs_each_attempt(
    background: type[Background],
) -> None:
    refusing, port = free_port_refusing()
    with refusing, socketeer.listen("tcp://127.0.0.1:0") as other:
        result = run_cli(
            "relay",
            "--retry",
            "5",
            "--retry-delay",
            "0.01",
            "--connect-both",
            str(other.address),
            f"tcp://127.0.0.1:{port}",
        )
        with other.accept(timeout=5):
            pass  # the side that answered was connected first
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    attempts = [line for line in lines if re.search(r"attempt \d of 6", line)]
    assert [re.search(r"attempt (\d) of 6", line).group(1) for line in attempts] == list(  # type: ignore[union-attr]
        "123456"
    )
    assert "retrying in" in attempts[0]
    assert attempts[-1].endswith("giving up")
    assert lines[-1].startswith("socketeer: error: gave up after 6 attempts: connection refused")
    assert "Traceback" not in result.stderr.decode()


def test_connect_both_once_joins_one_pair_and_exits(background: type[Background]) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as a, socketeer.listen("tcp://127.0.0.1:0") as b:
        relay = relay_proc(background, "--once", "--connect-both", str(a.address), str(b.address))
        with a.accept(timeout=10) as first, b.accept(timeout=10) as second:
            exchange(first, second, b"once")
        _, err, code = relay.finish()
    assert code == 0, err


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("joined-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "server.pem")
    )
    return str(folder / "ca.pem"), str(folder / "server.pem")


def test_connect_both_to_a_tls_side(background: type[Background], certs: tuple[str, str]) -> None:
    ca, server = certs
    with (
        socketeer.listen("tls://127.0.0.1:0", tls=TLSConfig(cert=server, key=server)) as a,
        socketeer.listen("tcp://127.0.0.1:0") as b,
    ):
        relay = relay_proc(
            background, "--once", "--ca", ca, "--connect-both", str(a.address), str(b.address)
        )
        with a.accept(timeout=10) as first, b.accept(timeout=10) as second:
            exchange(first, second, b"tls")
        _, err, code = relay.finish()
    assert code == 0, err


# -- --retry on a relay's TO --------------------------------------------------------------


def test_a_relay_client_waits_while_to_is_retried(background: type[Background]) -> None:
    refusing, port = free_port_refusing()
    with refusing:
        relay = relay_proc(
            background,
            "--retry",
            "forever",
            "--retry-delay",
            "0.05",
            "tcp://127.0.0.1:0",
            f"tcp://127.0.0.1:{port}",
        )
        relay.wait_listening()
        with socketeer.connect(relay.wait_listening(), timeout=10) as client:
            client.send(b"sent before TO was up")
            relay.wait_for_stderr(b"(attempt 2); retrying in")
            refusing.listen()  # TO comes up: the next attempt gets through
            upstream, _ = refusing.accept()
            with upstream:
                upstream.settimeout(10)
                assert upstream.recv(100) == b"sent before TO was up"
                upstream.sendall(b"and back")
                client.timeout = 10
                assert client.recv_exactly(8) == b"and back"


def test_stdio_relay_retry_gives_up_with_exit_1() -> None:
    refusing, port = free_port_refusing()
    with refusing:
        result = run_cli(
            "relay",
            "--retry",
            "2",
            "--retry-delay",
            "0.01",
            "-",
            f"tcp://127.0.0.1:{port}",
            input=b"hello",
        )
    assert result.returncode == 1, result.stderr
    text = result.stderr.decode()
    assert text.count("connection refused") == 4  # three attempts and the error
    assert text.splitlines()[-1].startswith("socketeer: error: gave up after 3 attempts")


# -- --listen-both ---------------------------------------------------------------------------


def listening_both(relay: Background) -> list[str]:
    relay.wait_for_stderr(b"listening on", count=2)
    return [
        m.group(1).decode()
        for line in relay.stderr_lines
        if (m := re.search(rb"listening on (\S+)", line))
    ]


def test_listen_both_joins_two_clients_pair_after_pair(background: type[Background]) -> None:
    relay = relay_proc(background, "-v", "--listen-both", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    first, second = listening_both(relay)
    for round_no in range(3):
        with socketeer.connect(first, timeout=5) as a, socketeer.connect(second, timeout=5) as b:
            exchange(a, b, b"%d" % round_no)
            a.shutdown_write()  # half-close passes through
            assert b.recv(10) == b""
            b.send(b"last words")
            assert a.recv_exactly(10) == b"last words"
    relay.wait_for_stderr(b"closed tcp://", count=3)
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0, err


def test_listen_both_drops_a_waiting_client_that_left(background: type[Background]) -> None:
    relay = relay_proc(background, "-v", "--listen-both", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    first, second = listening_both(relay)
    with socketeer.connect(first, timeout=5):
        pass  # came and went before any partner
    relay.wait_for_stderr(b"waits for a client on")
    with socketeer.connect(first, timeout=5) as a, socketeer.connect(second, timeout=5) as b:
        exchange(a, b, b"the one that stayed")


def test_listen_both_once_over_tls(background: type[Background], certs: tuple[str, str]) -> None:
    ca, server = certs
    relay = relay_proc(
        background,
        "--once",
        "--cert",
        server,
        "--key",
        server,
        "--listen-both",
        "tls://127.0.0.1:0",
        "tcp://127.0.0.1:0",
    )
    first, second = listening_both(relay)
    tls = TLSConfig(ca=ca)
    with (
        socketeer.connect(first, timeout=5, tls=tls) as a,
        socketeer.connect(second, timeout=5) as b,
    ):
        exchange(a, b, b"tls")
    _, err, code = relay.finish()
    assert code == 0, err


# -- bad input -------------------------------------------------------------------------------

A, B = f"tcp://127.0.0.1:{NOBODY}", f"tcp://127.0.0.1:{NOBODY}"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--listen-both", "--retry", "3", A, B], "--listen-both only listens"),
        (["--listen-both", "--retry-delay", "1", A, B], "--listen-both only listens"),
        (["--retry", "3", "tcp://127.0.0.1:0", "exec:cat"], "needs a side that connects again"),
        (["--retry", "3", "--model", "async", "tcp://127.0.0.1:0", B], "thread or fork model"),
        (["--retry", "3", "udp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}"], "connects again"),
        (["--retry", "x", "--connect-both", A, B], "'forever'"),
        (["--retry", "-1", "--connect-both", A, B], "0 or more"),
        (["--retry", "2.5", "--connect-both", A, B], "whole number"),
        (["--retry-delay", "-1", "--connect-both", A, B], "--retry-delay"),
        (["--connect-both", "--listen-both", A, B], "not allowed with"),
        (["--connect-both", "--frame", A, B], "--frame: not for --connect-both"),
        (["--connect-both", "--model", "fork", A, B], "--model: not for --connect-both"),
        (["--connect-both", f"udp://127.0.0.1:{NOBODY}", B], "joins stream addresses"),
        (["--connect-both", "--cert", "x.pem", A, B], "accepts no TLS"),
        (["--connect-both", "--ca", "x.pem", A, B], "need a tls:// side"),
        (["--listen-both", "--ca", "x.pem", A, B], "connects to nothing"),
        (["--listen-both", "--max-conns", "3", A, B], "--max-conns: not for --listen-both"),
    ],
)
def test_bad_joining_command_lines_are_one_line_errors(argv: list[str], needle: str) -> None:
    result = run_cli("relay", *argv)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, needle)


# -- descriptors and threads ------------------------------------------------------------------


def _join_in_process() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as a, socketeer.listen("tcp://127.0.0.1:0") as b:
        connecting = ConnectBoth(a.address, b.address, retry=RetryPolicy(retries=None, delay=0.05))
        runner = threading.Thread(target=connecting.serve_forever)
        runner.start()
        for round_no in range(3):
            with a.accept(timeout=10) as first, b.accept(timeout=10) as second:
                exchange(first, second, b"%d" % round_no)
        listening = ListenBoth(Address.parse("tcp://127.0.0.1:0"), Address.parse("unix:@sk-join"))
        other = threading.Thread(target=listening.serve_forever)
        other.start()
        with (
            socketeer.connect(listening.addresses[0], timeout=5) as x,
            socketeer.connect(listening.addresses[1], timeout=5) as y,
        ):
            exchange(x, y, b"listen")
        with socketeer.connect(listening.addresses[0], timeout=5):
            time.sleep(0.1)  # one left waiting when the relay stops
        connecting.stopper.stop()
        listening.stopper.stop()
        for thread in (runner, other):
            thread.join(15)
            assert not thread.is_alive()


def test_joined_relays_leave_no_descriptor_or_thread() -> None:
    threads_before = threading.active_count()
    before = open_fds()
    _join_in_process()
    deadline = time.monotonic() + 5
    while (
        open_fds() - before or threading.active_count() > threads_before
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not open_fds() - before
    assert threading.active_count() <= threads_before
