"""Happy Eyeballs (RFC 8305): a name with a dead first address connects through the next.

A "dead" address here is a real one that never answers a SYN: a listener whose
accept queue is full (Linux drops the SYNs it has no room for, so the connect
hangs as it would against a firewall), or, for the command line, an IPv6
address whose SYNs a netfilter rule drops inside a network namespace the test
creates. The resolver is the only thing patched in the library tests: the name
must resolve to the dead address first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import socketeer
from socketeer import aio
from socketeer._eyeballs import ATTEMPT_DELAY, attempt_order
from socketeer._sockio import Target

from .conftest import IN_CI, ROOT, ServingThread, free_port_refusing, open_fds


def _target(family: int, n: int) -> Target:
    host = f"2001:db8::{n}" if family == socket.AF_INET6 else f"192.0.2.{n}"
    return Target(family, socket.SOCK_STREAM, 6, (host, 80))


# -- the order -----------------------------------------------------------------------


def test_order_starts_with_ipv6_and_alternates() -> None:
    v4 = [_target(socket.AF_INET, n) for n in (1, 2, 3)]
    v6 = [_target(socket.AF_INET6, n) for n in (1, 2)]
    order = attempt_order([*v4, *v6])
    assert order == [v6[0], v4[0], v6[1], v4[1], v4[2]]


@given(st.lists(st.sampled_from([socket.AF_INET, socket.AF_INET6]), max_size=12))
def test_order_is_a_permutation_that_keeps_each_familys_order(families: list[int]) -> None:
    targets = [_target(family, n) for n, family in enumerate(families, 1)]
    order = attempt_order(targets)
    assert sorted(order) == sorted(targets)
    for family in (socket.AF_INET, socket.AF_INET6):
        assert [t for t in order if t.family == family] == [
            t for t in targets if t.family == family
        ]
    if any(f == socket.AF_INET6 for f in families):
        assert order[0].family == socket.AF_INET6
    # Alternating while both families remain.
    both = 2 * min(families.count(socket.AF_INET), families.count(socket.AF_INET6))
    for a, b in itertools.pairwise(order[:both]):
        assert a.family != b.family


# -- racing on loopback ----------------------------------------------------------------


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered: a listener with a full accept queue."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        # Fill the queue: connects that complete but are never accepted.
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            pass  # the hole swallows SYNs, as wanted
        else:
            pytest.fail("the full accept queue answered a SYN: no black hole on this kernel")
        finally:
            probe.close()
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


def _echo_a_line(conn: socketeer.Connection) -> None:
    conn.send_line(conn.recv_line())


@pytest.fixture
def echo() -> Iterator[ServingThread]:
    """A listener in a thread that echoes one line per client."""
    server = ServingThread(_echo_a_line, timeout=5)
    yield server
    server.close()


def _resolving_to(monkeypatch: pytest.MonkeyPatch, *ports: int) -> None:
    """``dual.test`` resolves to 127.0.0.1 at each of ``ports``, in that order."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "dual.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)) for p in ports]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_dead_first_address_costs_one_attempt_delay(
    monkeypatch: pytest.MonkeyPatch, echo: ServingThread
) -> None:
    with black_hole() as dead:
        _resolving_to(monkeypatch, dead, echo.port)
        before = open_fds()
        started = time.monotonic()
        with socketeer.connect(f"tcp://dual.test:{dead}", timeout=5) as conn:
            took = time.monotonic() - started
            assert conn.peer is not None and conn.peer.port == echo.port
            conn.send_line(b"hi")
            assert conn.recv_line() == b"hi"
        echo.wait_served()
        assert open_fds() == before, "the losing attempt's socket was not closed"
    assert ATTEMPT_DELAY <= took < 0.5, f"connected after {took:.3f}s"


def test_a_failed_attempt_starts_the_next_at_once(
    monkeypatch: pytest.MonkeyPatch, echo: ServingThread
) -> None:
    refusing, refused = free_port_refusing()
    with refusing:
        _resolving_to(monkeypatch, refused, echo.port)
        started = time.monotonic()
        with socketeer.connect(f"tcp://dual.test:{refused}", timeout=5) as conn:
            assert conn.peer is not None and conn.peer.port == echo.port
        assert time.monotonic() - started < ATTEMPT_DELAY


def test_all_refused_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    a, port_a = free_port_refusing()
    b, port_b = free_port_refusing()
    with a, b:
        _resolving_to(monkeypatch, port_a, port_b)
        before = open_fds()
        with pytest.raises(socketeer.ConnectError, match=r"connection refused: tcp://dual\.test"):
            socketeer.connect(f"tcp://dual.test:{port_a}", timeout=5)
        assert open_fds() == before


def test_the_timeout_bounds_the_whole_race(monkeypatch: pytest.MonkeyPatch) -> None:
    with black_hole() as dead:
        _resolving_to(monkeypatch, dead, dead, dead)
        before = open_fds()
        started = time.monotonic()
        with pytest.raises(socketeer.Timeout, match=r"dual\.test"):
            socketeer.connect(f"tcp://dual.test:{dead}", timeout=0.6)
        took = time.monotonic() - started
        assert open_fds() == before
    assert 0.6 <= took < 3, took


def test_aio_a_dead_first_address_costs_one_attempt_delay(
    monkeypatch: pytest.MonkeyPatch, echo: ServingThread
) -> None:
    async def main() -> float:
        started = time.monotonic()
        conn = await aio.connect(f"tcp://dual.test:{echo.port}", timeout=5)
        took = time.monotonic() - started
        async with conn:
            assert conn.peer is not None and conn.peer.port == echo.port
            await conn.send_line(b"hi")
            assert await conn.recv_line() == b"hi"
        return took

    with black_hole() as dead:
        _resolving_to(monkeypatch, dead, echo.port)
        before = open_fds()
        took = asyncio.run(main())
        echo.wait_served()
        assert open_fds() == before, "the losing attempt's socket was not closed"
    assert ATTEMPT_DELAY <= took < 0.5, f"connected after {took:.3f}s"


def test_aio_all_failing_raise_the_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    a, port_a = free_port_refusing()
    with a, black_hole() as dead:
        _resolving_to(monkeypatch, dead, port_a)
        before = open_fds()
        with pytest.raises(socketeer.Timeout):
            asyncio.run(aio.connect(f"tcp://dual.test:{dead}", timeout=0.6))
        _resolving_to(monkeypatch, port_a, port_a)
        with pytest.raises(socketeer.ConnectError, match="refused"):
            asyncio.run(aio.connect(f"tcp://dual.test:{port_a}", timeout=2))
        assert open_fds() == before


# -- the command line, with the system resolver, in a network namespace -----------------


@pytest.fixture
def namespace_with_dead_ipv6() -> Iterator[str]:
    """A namespace where ``dual.test`` is ::1 then 127.0.0.1 and SYNs to ::1 are dropped.

    ``ip netns exec`` shows /etc/netns/NAME/hosts as /etc/hosts inside: the
    name resolves through the real system resolver, from a file only this
    namespace sees.
    """
    for tool in ("ip", "ip6tables"):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"{tool} is missing, and CI must run the namespace tests")
            pytest.skip(f"{tool} is not installed (apt-get install iproute2 iptables)")
    name = f"sk-he-{uuid.uuid4().hex[:8]}"
    if (
        subprocess.run(["ip", "netns", "add", name], check=False, capture_output=True).returncode
        != 0
    ):
        if IN_CI:
            pytest.fail("CI must be able to create network namespaces")
        pytest.skip("network namespaces are not permitted here")
    etc = Path("/etc/netns") / name
    try:
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("::1 dual.test\n127.0.0.1 dual.test\n")

        def inside(*argv: str) -> None:
            subprocess.run(["ip", "netns", "exec", name, *argv], check=True, capture_output=True)

        inside("ip", "link", "set", "lo", "up")
        inside("ip6tables", "-A", "INPUT", "-p", "tcp", "--syn", "-d", "::1", "-j", "DROP")
        yield name
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        with contextlib.suppress(OSError):
            etc.parent.rmdir()  # only when no other namespace has files there
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def test_cli_connects_past_a_dead_ipv6_address(namespace_with_dead_ipv6: str) -> None:
    ns = namespace_with_dead_ipv6
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    script = (
        "import socket, sys, time\n"
        "import socketeer\n"
        "lst = socketeer.listen('tcp://127.0.0.1:0')\n"
        "port = lst.address.port\n"
        "rows = {r[0] for r in socket.getaddrinfo('dual.test', port, type=socket.SOCK_STREAM)}\n"
        "assert rows == {socket.AF_INET, socket.AF_INET6}, rows\n"
        "import subprocess\n"
        "started = time.monotonic()\n"
        "client = subprocess.Popen([sys.executable, '-m', 'socketeer', 'connect', '-t', '5',\n"
        "                           f'dual.test:{port}'], stdin=subprocess.PIPE,\n"
        "                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "conn = lst.accept(timeout=10)\n"
        "took = time.monotonic() - started\n"
        "conn.send(b'hello\\n'); conn.close()\n"
        "out, err = client.communicate(b'', timeout=10)\n"
        "assert out == b'hello\\n', (out, err)\n"
        "assert client.returncode == 0, err\n"
        "print(f'{took:.3f}')\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script],
        check=False,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    took = float(done.stdout)
    # Tried one after the other, the dead ::1 would hold the client for all 5 s
    # of -t; the measured time includes starting the client's interpreter.
    assert took < 2.5, f"connected after {took:.3f}s"
