"""Servers and relays under pressure: out of descriptors, slowloris, a UDP flood, SIGTERM
in the middle of transfers. Each keeps serving (or finishes what it started) and leaks nothing.

Every load here is bounded in count and time, on loopback only.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import SOCKETEER, Background, cli_env, fd_count, limit_descriptors, port_of, rss_kib


def _raise_own_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def echo_once(port: int, payload: bytes = b"ping\n", timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


# -- out of descriptors: serve ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["thread", "async", "fork"])
def test_serve_out_of_descriptors_keeps_serving(model: str, tmp_path: Path) -> None:
    """RLIMIT_NOFILE 48: 80 clients held open. New clients are closed at once, one log
    line a second at most says so, and as soon as descriptors free up, clients are served."""
    err_path = tmp_path / "err"
    with err_path.open("wb") as err_file:
        proc = subprocess.Popen(
            [*SOCKETEER, "serve", "--model", model, "tcp://127.0.0.1:0", "echo"],
            stdin=subprocess.DEVNULL,
            stderr=err_file,
            env=cli_env(),
            preexec_fn=limit_descriptors(48),  # noqa: PLW1509 - the limit must be set before exec
        )
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 15
        while b"listening on" not in err_path.read_bytes():
            assert time.monotonic() < deadline and proc.poll() is None, err_path.read_text()
            time.sleep(0.05)
        port = int(err_path.read_text().split("listening on tcp://127.0.0.1:")[1].split()[0])
        started = time.monotonic()
        for _ in range(80):  # more clients than 48 descriptors can hold
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        if model == "fork":
            # Each child has its own table: the parent runs out only of processes'
            # worth of nothing. The clients are all served; none is dropped.
            for sock in clients:
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
        else:
            deadline = time.monotonic() + 20
            while "a client was closed at once" not in err_path.read_text():
                assert time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.1)
        time.sleep(1.5)  # a second and more of pressure: still at most a line a second
        lines = [x for x in err_path.read_text().splitlines() if "too many open files" in x]
        elapsed = time.monotonic() - started
        assert len(lines) <= elapsed + 1, lines
        for sock in clients:
            sock.close()
        clients.clear()
        freed = time.monotonic()
        deadline = freed + 20
        while True:
            try:
                if echo_once(port) == b"ping\n":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not served after descriptors freed up"
            time.sleep(0.2)
        print(
            f"out of descriptors, {model}: {len(lines)} log lines in {elapsed:.1f}s of "
            f"pressure; served again {time.monotonic() - freed:.2f}s after the clients left"
        )
        assert proc.poll() is None, "the server must never exit"
    finally:
        for sock in clients:
            sock.close()
        proc.terminate()
        proc.wait(30)
    text = err_path.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text


# -- slowloris ----------------------------------------------------------------------------------


def _rate(port: int, seconds: float) -> float:
    """Well-behaved request/response exchanges per second for ``seconds``, one at a time."""
    done = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        assert echo_once(port, timeout=10) == b"ping\n"
        done += 1
    return done / seconds


@pytest.mark.slow
@pytest.mark.parametrize("model", ["async", "thread"])
def test_slowloris_does_not_starve_well_behaved_clients(
    model: str, background: type[Background]
) -> None:
    """2,000 clients sending a byte a second against --max-conns 1000 --idle-timeout 5:
    never idle, they would hold every slot; the server sheds the slowest for each
    well-behaved client (``admission.slowest``)."""
    _raise_own_limit(4096)
    server = background(
        [
            *SOCKETEER,
            "serve",
            "--model",
            model,
            "--max-conns",
            "1000",
            "--idle-timeout",
            "5",
            "tcp://127.0.0.1:0",
            "echo",
        ],
        stdin=subprocess.DEVNULL,
    )
    port = port_of(server.wait_listening())
    undisturbed = _rate(port, 2.0)
    slow: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        # Open 2,000 slow clients, then send each a byte a second until stopped.
        for _ in range(2000):
            if stop.is_set():
                return
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue
            sock.setblocking(False)
            slow.append(sock)
        while not stop.wait(1.0):
            for sock in list(slow):
                try:
                    sock.send(b"G")
                except OSError:
                    slow.remove(sock)  # shed by the server: as it should
                    sock.close()

    attacker = threading.Thread(target=trickle, daemon=True)
    attacker.start()
    try:
        time.sleep(3.0)  # the table is full of slow clients by now
        disturbed = _rate(port, 4.0)
    finally:
        stop.set()
        attacker.join(30)
        for sock in slow:
            sock.close()
    print(f"slowloris {model}: {disturbed:.0f}/s under attack, {undisturbed:.0f}/s alone")
    assert disturbed >= 0.5 * undisturbed, f"{disturbed:.0f}/s vs {undisturbed:.0f}/s alone"
    server.proc.terminate()
    _, err, code = server.finish()
    assert code == 0 and b"Traceback" not in err, err[-2000:]
    assert b"shed tcp://127.0.0.1:" in err, "the slow clients were not the ones to go"


# -- a UDP flood --------------------------------------------------------------------------------


@pytest.mark.slow
def test_udp_flood_keeps_the_session_table_bounded(background: type[Background]) -> None:
    """50,000 senders (one datagram each, each from a new port) at a datagram relay with
    --max-sessions 256: the table stays at its bound, memory flat, a live client's
    replies keep flowing."""
    echo = background([*SOCKETEER, "serve", "udp://127.0.0.1:0", "echo"], stdin=subprocess.DEVNULL)
    relay = background(
        [
            *SOCKETEER,
            "relay",
            "--max-sessions",
            "256",
            "udp://127.0.0.1:0",
            echo.wait_listening(),
        ],
        stdin=subprocess.DEVNULL,
    )
    address = relay.wait_listening()
    port = port_of(address)
    live = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    live.settimeout(5)
    live.connect(("127.0.0.1", port))

    def live_round_trip(i: int) -> None:
        """A live client's request gets its reply; resent after 0.25 s without one,
        as any UDP client does: the flood outruns the relay, and the kernel drops
        what no longer fits its receive buffer, the live datagram too at times."""
        payload = f"live {i}".encode()
        live.settimeout(0.25)
        for _ in range(20):
            live.send(payload)
            try:
                while live.recv(65536) != payload:
                    pass
                return
            except TimeoutError:
                retries.append(i)
                continue
        raise AssertionError(f"no reply to the live client after 20 tries ({i})")

    retries: list[int] = []

    live_round_trip(0)
    time.sleep(0.2)
    fds_before, rss_before = fd_count(relay.proc.pid), rss_kib(relay.proc.pid)
    for i in range(50):
        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"flood", ("127.0.0.1", port))
        live_round_trip(i + 1)  # replies to a live session keep flowing mid-flood
        # The live client is the most recently active session, never evicted.
    time.sleep(0.5)
    fds_after, rss_after = fd_count(relay.proc.pid), rss_kib(relay.proc.pid)
    print(
        f"udp flood: {len(retries)} resends in 51 round trips, fds {fds_before}->{fds_after}, "
        f"rss {rss_before}->{rss_after} KiB"
    )
    live.close()
    assert fds_after <= fds_before + 256, (fds_before, fds_after)
    assert rss_after <= rss_before * 1.25 + 8192, (rss_before, rss_after)
    assert relay.proc.poll() is None
    relay.proc.terminate()
    _, err, code = relay.finish()
    assert code == 0 and b"Traceback" not in err, err[-2000:]
    # Tens of thousands of evictions, told a line a second with the count.
    evictions = [line for line in err.splitlines() if b"session table full" in line]
    assert 1 <= len(evictions) < 60, len(evictions)
    assert b"more since the last line" in err


# -- SIGTERM in the middle of transfers ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "relay"])
def test_sigterm_with_grace_lets_100_started_transfers_finish(
    command: str, background: type[Background]
) -> None:
    """100 clients each send 2 MiB at a steady pace and read it back; SIGTERM arrives when
    all have started. --grace 30 lets each finish with the SHA-256 it started with."""
    _raise_own_limit(1024)
    if command == "serve":
        argv = [*SOCKETEER, "serve", "--grace", "30", "tcp://127.0.0.1:0", "echo"]
        upstream = None
    else:
        upstream = background(
            [*SOCKETEER, "serve", "tcp://127.0.0.1:0", "echo"], stdin=subprocess.DEVNULL
        )
        argv = [
            *SOCKETEER,
            "relay",
            "--grace",
            "30",
            "tcp://127.0.0.1:0",
            upstream.wait_listening(),
        ]
    proc = background(argv, stdin=subprocess.DEVNULL)
    port = port_of(proc.wait_listening())
    started = threading.Barrier(101)
    results: list[bool] = []
    errors: list[BaseException] = []
    chunk = os.urandom(64 << 10)

    def transfer() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sent, got = hashlib.sha256(), hashlib.sha256()
                received = 0
                reader_done = threading.Event()
                echoed = threading.Event()

                def read() -> None:
                    nonlocal received
                    while data := sock.recv(65536):
                        got.update(data)
                        received += len(data)
                        echoed.set()
                    reader_done.set()

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                sock.sendall(chunk)
                sent.update(chunk)
                # Started means served: bytes have come back. (A client still in
                # the backlog has not started; at SIGTERM the listener closes and
                # the kernel resets it, as HAProxy's and nginx's soft stops do.)
                assert echoed.wait(30), "the first chunk never came back"
                started.wait(30)
                for _ in range(31):  # 2 MiB in all, spread over about a second
                    time.sleep(0.03)
                    sock.sendall(chunk)
                    sent.update(chunk)
                sock.shutdown(socket.SHUT_WR)
                reader_done.wait(60)
                results.append(received == 32 * len(chunk) and got.digest() == sent.digest())
        except BaseException as exc:
            errors.append(exc)
            started.abort()

    threads = [threading.Thread(target=transfer) for _ in range(100)]
    for thread in threads:
        thread.start()
    started.wait(30)  # every transfer is under way
    signalled = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(90)
    assert not errors, errors[:3]
    assert results.count(True) == 100, f"{results.count(False)} transfers broke"
    print(
        f"SIGTERM mid-transfer, {command}: {results.count(True)}/100 SHA-256 equal, the last "
        f"done {time.monotonic() - signalled:.1f}s after the signal"
    )
    _, err, code = proc.finish(timeout=60)
    assert code == 0 and b"Traceback" not in err, err[-2000:]
    # Once it has stopped, nothing listens.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
