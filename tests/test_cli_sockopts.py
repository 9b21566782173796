"""SPEC §9 on the command line: --proxy through a real SOCKS proxy (microsocks), and
the socket options, each seen from outside the process that set it (the server's
view of the peer, ``ss``, the TTL on arriving datagrams)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import socketeer

from .conftest import (
    HAS_IPV6,
    NOBODY,
    SOCKETEER,
    Background,
    assert_one_line_error,
    cli_env,
    free_port_refusing,
    require_peer,
    run_cli,
    serve_once,
)

USER, PASSWORD = "alice", "s3cret"
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux's value; Python 3.11 lacks the name


# -- microsocks ------------------------------------------------------------------------


def _accepting(port: int, proc: subprocess.Popen[bytes]) -> bool:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False  # the port was taken meanwhile
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        time.sleep(0.02)  # an external program: it prints no readiness line
    raise AssertionError(f"microsocks did not start accepting on {port}")


@pytest.fixture
def socks() -> Iterator[Callable[[bool], int]]:
    """Start microsocks on a free loopback port, with or without a password; its port."""
    exe = require_peer("microsocks")
    procs: list[subprocess.Popen[bytes]] = []

    def start(auth: bool) -> int:
        extra = ["-u", USER, "-P", PASSWORD] if auth else []
        for _ in range(5):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            proc = subprocess.Popen(
                [exe, "-i", "127.0.0.1", "-p", str(port), *extra],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            procs.append(proc)
            if _accepting(port, proc):
                return port
        raise AssertionError("could not start microsocks")

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def echo_once(listener: socketeer.Listener) -> threading.Thread:
    """Echo one line, then close. The client need not half-close: microsocks closes
    both sides at the first EOF, so a reply sent after one could be lost."""

    def echo(conn: socketeer.Connection) -> None:
        conn.send_line(conn.recv_line())

    return serve_once(listener, echo)


def drain(conn: socketeer.Connection) -> None:
    """Read to the end, whatever it is (-z sends nothing and closes)."""
    with contextlib.suppress(socketeer.SocketeerError):
        while conn.recv():
            pass


def test_connect_through_socks5_with_a_password(socks: Callable[[bool], int]) -> None:
    port = socks(True)
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = echo_once(listener)
        result = run_cli(
            "connect",
            "--no-shutdown",
            "--proxy",
            f"socks5://{USER}:{PASSWORD}@127.0.0.1:{port}",
            str(listener.address),
            input=b"through the proxy\n",
        )
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through the proxy\n"


def test_proxy_env_reads_all_proxy(socks: Callable[[bool], int]) -> None:
    port = socks(False)
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = echo_once(listener)
        env = {**cli_env(), "ALL_PROXY": f"socks5h://127.0.0.1:{port}"}
        result = subprocess.run(
            [*SOCKETEER, "connect", "--no-shutdown", "--proxy", "env", str(listener.address)],
            input=b"env\n",
            capture_output=True,
            env=env,
            timeout=30,
            check=False,
        )
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"env\n"


def test_dead_proxy_is_one_line_exit_1() -> None:
    held, port = free_port_refusing()
    result = run_cli("connect", "--proxy", f"socks5://127.0.0.1:{port}", f"127.0.0.1:{NOBODY}")
    held.close()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "proxy unreachable", f"127.0.0.1:{port}")


def test_wrong_password_is_one_line_exit_1(socks: Callable[[bool], int]) -> None:
    port = socks(True)
    result = run_cli(
        "connect", "--proxy", f"socks5://{USER}:wrong@127.0.0.1:{port}", f"127.0.0.1:{NOBODY}"
    )
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "proxy authentication failed")
    assert "wrong" not in result.stderr.decode()  # the password is never printed


def test_target_refused_by_the_proxy_is_one_line_exit_1(socks: Callable[[bool], int]) -> None:
    port = socks(False)
    held, target = free_port_refusing()
    result = run_cli("connect", "--proxy", f"socks5://127.0.0.1:{port}", f"127.0.0.1:{target}")
    held.close()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "through proxy", f"127.0.0.1:{target}", "refused")


def test_check_through_a_proxy(socks: Callable[[bool], int]) -> None:
    port = socks(False)
    held, closed = free_port_refusing()
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, drain)
        ok = run_cli(
            "connect", "-z", "--proxy", f"socks5://127.0.0.1:{port}", str(listener.address)
        )
        bad = run_cli(
            "connect", "-z", "--proxy", f"socks5://127.0.0.1:{port}", f"127.0.0.1:{closed}"
        )
        thread.join(10)
    held.close()
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 1
    assert_one_line_error(bad.stderr, "not ready", f"127.0.0.1:{closed}")


def test_relay_to_through_a_proxy(
    socks: Callable[[bool], int], background: type[Background]
) -> None:
    port = socks(True)
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        thread = echo_once(upstream)
        relay = background(
            [
                *SOCKETEER,
                "relay",
                "--once",
                "--proxy",
                f"socks5://{USER}:{PASSWORD}@127.0.0.1:{port}",
                "127.0.0.1:0",
                str(upstream.address),
            ]
        )
        address = relay.wait_listening()
        with socketeer.connect(address, timeout=10) as conn:
            conn.send(b"relayed\n")
            assert conn.recv_exactly(8) == b"relayed\n"
        thread.join(10)
        _, err, code = relay.finish()
    assert code == 0, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["connect", "--proxy", f"ftp://127.0.0.1:{NOBODY}", f"127.0.0.1:{NOBODY}"],
            "bad proxy URL",
        ),
        (["connect", "--proxy", f"socks5://127.0.0.1:{NOBODY}", "unix:/tmp/x.sock"], "host:port"),
        (
            ["connect", "--proxy", f"socks5://127.0.0.1:{NOBODY}", f"udp://127.0.0.1:{NOBODY}"],
            "--proxy",
        ),
    ],
)
def test_proxy_usage_errors(argv: list[str], needle: str) -> None:
    result = run_cli(*argv)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, needle)


# -- socket options --------------------------------------------------------------------


def test_source_is_the_address_the_server_sees() -> None:
    seen: list[object] = []
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = serve_once(listener, lambda conn: seen.append(conn.peer))
        result = run_cli("connect", "--source", "127.0.0.2", str(listener.address))
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert [getattr(peer, "host", None) for peer in seen] == ["127.0.0.2"]


def test_udp_source_binds_the_client() -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0") as server:
        result = run_cli(
            "connect", "--source", "127.0.0.3", "-i", "0.2", str(server.local), input=b"hi\n"
        )
        data, sender = server.recv(timeout=5)
    assert result.returncode == 0, result.stderr
    assert (data, sender.host if sender else None) == (b"hi\n", "127.0.0.3")


def _ss(port: int) -> str:
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("needs ss (iproute2)")
    return subprocess.run(
        [ss, "-tnoim", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout


@pytest.mark.parametrize(
    ("flags", "keepalive"),
    [([], False), (["--keepalive"], True), (["--keepalive=7,2,3"], True)],
)
def test_connect_keepalive_off_unless_asked(
    flags: list[str], keepalive: bool, background: type[Background]
) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        client = background(
            [*SOCKETEER, "connect", *flags, "--rcvbuf", "50000", str(listener.address)]
        )
        with listener.accept(timeout=10):
            report = _ss(listener.address.port)
            client.stop()
    assert ("keepalive" in report) is keepalive, report
    if flags == ["--keepalive=7,2,3"]:
        timer = re.search(r"timer:\(keepalive,(\d+(?:\.\d+)?)(m?s)", report)
        assert timer is not None, report
        assert float(timer.group(1)) <= (7 if timer.group(2) == "s" else 7000)
    assert "rb100000" in report  # Linux doubles SO_RCVBUF for its bookkeeping


def test_relay_keepalive_on_by_default_and_off_on_request(background: type[Background]) -> None:
    reports = []
    for flags in ([], ["--no-keepalive"]):
        with socketeer.listen("tcp://127.0.0.1:0") as upstream:
            relay = background([*SOCKETEER, "relay", *flags, "127.0.0.1:0", str(upstream.address)])
            address = relay.wait_listening()
            with socketeer.connect(address, timeout=10), upstream.accept(timeout=10):
                reports.append(_ss(upstream.address.port))  # the relay's socket to TO
            relay.stop()
    assert "keepalive" in reports[0], reports[0]
    assert "keepalive" not in reports[1], reports[1]


def _received_ttl(sock: socket.socket, level: int, kind: int) -> tuple[bytes, int]:
    sock.settimeout(10)
    data, ancillary, _, _ = sock.recvmsg(1024, socket.CMSG_SPACE(4))
    for cmsg_level, cmsg_type, value in ancillary:
        if (cmsg_level, cmsg_type) == (level, kind):
            return data, int.from_bytes(value[:4], sys.byteorder)
    raise AssertionError(f"no TTL in {ancillary}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVTTL's value is Linux's")
def test_ttl_is_on_the_datagrams_sent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        port = server.getsockname()[1]
        result = run_cli(
            "connect", "--ttl", "7", "-i", "0.2", f"udp://127.0.0.1:{port}", input=b"x\n"
        )
        data, ttl = _received_ttl(server, socket.IPPROTO_IP, socket.IP_TTL)
    assert result.returncode == 0, result.stderr
    assert (data, ttl) == (b"x\n", 7)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_hop_limit_is_on_the_datagrams_sent() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as server:
        server.bind(("::1", 0))
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        port = server.getsockname()[1]
        result = run_cli(
            "connect", "--hop-limit", "9", "-i", "0.2", f"udp://[::1]:{port}", input=b"y\n"
        )
        data, hops = _received_ttl(server, socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)
    assert result.returncode == 0, result.stderr
    assert (data, hops) == (b"y\n", 9)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_ipv6_only_listener_takes_no_ipv4_clients(background: type[Background]) -> None:
    codes = []
    for flags in (["--ipv6-only"], []):
        server = background([*SOCKETEER, "listen", "-k", *flags, "tcp6://[::]:0"])
        port = socketeer.Address.parse(server.wait_listening()).port
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                codes.append("accepted")
        except ConnectionRefusedError:
            codes.append("refused")
        server.stop()
    assert codes == ["refused", "accepted"]


def test_bind_device_lo_reaches_loopback() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        thread = echo_once(listener)
        result = run_cli("connect", "--bind-device", "lo", str(listener.address), input=b"lo\n")
        if result.returncode != 0:  # an unprivileged run: SO_BINDTODEVICE needs CAP_NET_RAW
            with socketeer.connect(listener.address, timeout=5):
                pass
        thread.join(10)
    if result.returncode != 0:
        assert_one_line_error(result.stderr, "permission denied")
        return
    assert result.stdout == b"lo\n"


def test_bind_device_that_does_not_exist() -> None:
    held, port = free_port_refusing()
    result = run_cli("connect", "--bind-device", "nosuch0", f"127.0.0.1:{port}")
    held.close()
    assert result.returncode in (1, 2)
    assert_one_line_error(result.stderr, "nosuch0")


def test_datagram_options_reach_the_socket() -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0") as server:
        result = run_cli(
            "connect",
            "--broadcast",
            "--multicast-ttl",
            "0",
            "--no-multicast-loop",
            "--sndbuf",
            "65536",
            "-i",
            "0.2",
            str(server.local),
            input=b"ok\n",
        )
        data, _ = server.recv(timeout=5)
    assert result.returncode == 0, result.stderr
    assert data == b"ok\n"


def test_listen_joins_a_multicast_group(background: type[Background]) -> None:
    server = background([*SOCKETEER, "listen", "--join", "239.255.7.7@lo", "udp://0.0.0.0:0"])
    deadline = time.monotonic() + 10
    while not server.stderr_lines and time.monotonic() < deadline:
        time.sleep(0.02)
    text = b"".join(server.stderr_lines).decode()
    # lo has no MULTICAST flag on some systems: then the join is refused, in one line.
    assert "listening on" in text or text.startswith("socketeer: error: "), text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["connect", "--broadcast", f"127.0.0.1:{NOBODY}"], "--broadcast"),
        (["connect", "--keepalive=1,2", f"127.0.0.1:{NOBODY}"], "IDLE,INTERVAL,COUNT"),
        (["connect", "--keepalive=0,1,1", f"127.0.0.1:{NOBODY}"], "keepalive idle"),
        (["connect", "--rcvbuf", "0", f"127.0.0.1:{NOBODY}"], "--rcvbuf"),
        (["connect", "--rcvbuf", "99999999999999999999", f"127.0.0.1:{NOBODY}"], "--rcvbuf"),
        (["connect", "--ttl", "256", f"127.0.0.1:{NOBODY}"], "--ttl"),
        (["connect", "--source", "nonsense::x", f"127.0.0.1:{NOBODY}"], "--source"),
        (["listen", "--join", "10.0.0.1", "udp://127.0.0.1:0"], "multicast"),
        (["listen", "--broadcast", "127.0.0.1:0"], "--broadcast"),
        (["serve", "--ttl", "0", "127.0.0.1:0", "echo"], "--ttl"),
        (["relay", "--join", "239.1.1.1", "127.0.0.1:0", f"127.0.0.1:{NOBODY}"], "--join"),
        (
            ["connect", "--alpn", "h2,\u00e9", f"tls://127.0.0.1:{NOBODY}"],
            "ALPN",
        ),  # a traceback once
        (
            ["connect", "--multicast-loop", "--no-multicast-loop", f"udp://127.0.0.1:{NOBODY}"],
            "not allowed",
        ),
    ],
)
def test_socket_option_usage_errors(argv: list[str], needle: str) -> None:
    result = run_cli(*argv, timeout=15)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, needle)


def test_bare_keepalive_never_takes_the_address_as_its_value() -> None:
    held, port = free_port_refusing()
    result = run_cli("connect", "--keepalive", f"127.0.0.1:{port}")
    held.close()
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "connection refused")


def test_relay_source_is_what_to_sees(background: type[Background]) -> None:
    seen: list[object] = []
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        thread = serve_once(upstream, lambda conn: seen.append(conn.peer))
        relay = background(
            [
                *SOCKETEER,
                "relay",
                "--once",
                "--source",
                "127.0.0.4",
                "127.0.0.1:0",
                str(upstream.address),
            ]
        )
        with socketeer.connect(relay.wait_listening(), timeout=10) as conn:
            conn.shutdown_write()
            thread.join(10)
        relay.finish()
    assert [getattr(peer, "host", None) for peer in seen] == ["127.0.0.4"]
