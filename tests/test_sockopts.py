"""Socket options (SPEC §9): parsed, set, and read back with getsockopt on live sockets.

Keepalive is on by default on every socket a server or relay accepts (the
listening socket's options are inherited) and on a relay's TO sockets; the
broadcast and multicast exchanges run between two network namespaces the
test makes and removes (skipped where namespaces are not permitted).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import socketeer
import socketeer.aio
from socketeer import Address, NetworkError, ProxyUnreachable, UsageError
from socketeer._sockopts import (
    DEFAULT_KEEPALIVE,
    Keepalive,
    Membership,
    SocketOptions,
    parse_source,
)
from socketeer.errors import AddressError
from socketeer.relay import relay
from socketeer.server import Server

from .conftest import (
    NOBODY,
    cli_env,
    free_port_refusing,
    has_ipv6_loopback,
    require_peer,
    serve_once,
)

LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="TCP_KEEPIDLE and SO_BINDTODEVICE are Linux's")


def keepalive_of(sock: Any) -> tuple[int, int, int, int]:
    """SO_KEEPALIVE and the three timings, as the kernel holds them."""
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


DEFAULT_READBACK = (1, DEFAULT_KEEPALIVE.idle, DEFAULT_KEEPALIVE.interval, DEFAULT_KEEPALIVE.count)


# -- parsing ----------------------------------------------------------------------------


def test_keepalive_default_and_parse() -> None:
    assert Keepalive(60, 10, 6) == DEFAULT_KEEPALIVE
    assert Keepalive.parse("30,5,3") == Keepalive(30, 5, 3)
    assert str(Keepalive(30, 5, 3)) == "30,5,3"
    assert Keepalive.of(True) == DEFAULT_KEEPALIVE
    assert Keepalive.of(False) is None
    assert Keepalive.of((1, 2, 3)) == Keepalive(1, 2, 3)


@pytest.mark.parametrize("text", ["", "60", "60,10", "60,10,6,1", "a,b,c", "0,10,6", "60,10,128"])
def test_keepalive_parse_refuses(text: str) -> None:
    with pytest.raises(UsageError) as info:
        Keepalive.parse(text)
    assert "\n" not in str(info.value)


def test_membership_parse() -> None:
    assert Membership.parse("239.1.2.3") == Membership("239.1.2.3")
    assert Membership.parse("239.1.2.3@eth0") == Membership("239.1.2.3", "eth0")
    assert Membership.parse("[ff02::1]@veth0") == Membership("ff02::1", "veth0")
    assert Membership.parse("ff02::1@veth0") == Membership("ff02::1", "veth0")
    assert str(Membership("ff02::1", "veth0")) == "[ff02::1]@veth0"


@pytest.mark.parametrize("text", ["10.0.0.1", "eth0", "239.1.2.3@", "", "::1@lo"])
def test_membership_parse_refuses(text: str) -> None:
    with pytest.raises(AddressError) as info:
        Membership.parse(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.2", "tcp://127.0.0.2:0"),
        ("127.0.0.2:4000", "tcp://127.0.0.2:4000"),
        ("::1", "tcp://[::1]:0"),
        ("[::1]", "tcp://[::1]:0"),
        ("4000", "tcp://:4000"),
    ],
)
def test_source_forms(text: str, expected: str) -> None:
    assert str(parse_source(text)) == expected


@given(st.text(max_size=40))
def test_parsers_raise_only_usage_errors(text: str) -> None:
    for parse in (Keepalive.parse, Membership.parse, parse_source):
        with contextlib.suppress(UsageError):
            parse(text)


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": 0}, {"ttl": 256}, {"rcvbuf": 0}, {"sndbuf": -1}, {"multicast_ttl": 300}],
)
def test_out_of_range_values_are_usage_errors(kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        SocketOptions.of(**kwargs)  # type: ignore[arg-type]


# -- read back on live sockets ------------------------------------------------------------


@linux_only
def test_connect_options_read_back() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        with socketeer.connect(
            listener.address,
            timeout=10,
            keepalive=(30, 5, 3),
            rcvbuf=65536,
            sndbuf=65536,
            ttl=7,
            bind_device="lo",
        ) as conn:
            sock = conn.socket
            assert keepalive_of(sock) == (1, 30, 5, 3)
            # Linux doubles the buffer sizes asked for (bookkeeping overhead).
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 65536
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 65536
            assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 7
            device = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
            assert device.rstrip(b"\0") == b"lo"


def test_connect_leaves_keepalive_off_by_default() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        with socketeer.connect(listener.address, timeout=10) as conn:
            assert conn.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_hop_limit_on_ipv6_and_ttl_for_both() -> None:
    with socketeer.listen("tcp6://[::1]:0") as listener:
        with socketeer.connect(listener.address, timeout=10, hop_limit=3) as conn:
            assert conn.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 3
        with socketeer.connect(listener.address, timeout=10, ttl=9) as conn:  # one knob: how far
            assert conn.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 9


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 here")
@pytest.mark.parametrize(("ipv6_only", "expected"), [(None, 0), (False, 0), (True, 1)])
def test_ipv6_only_and_dual_stack_default(ipv6_only: bool | None, expected: int) -> None:
    with socketeer.listen("tcp://:0", ipv6_only=ipv6_only) as listener:
        assert listener.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == expected


@linux_only
def test_accepted_sockets_inherit_the_listeners_options() -> None:
    with socketeer.listen(
        "tcp://127.0.0.1:0", keepalive=(20, 4, 2), rcvbuf=32768, ttl=5
    ) as listener:
        with socketeer.connect(listener.address, timeout=10):
            with listener.accept(timeout=10) as accepted:
                assert keepalive_of(accepted.socket) == (1, 20, 4, 2)
                assert accepted.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 65536
                assert accepted.socket.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 5


def test_datagram_options_read_back() -> None:
    with socketeer.open_datagram(
        bind="udp4://127.0.0.1:0",
        broadcast=True,
        multicast_ttl=4,
        multicast_loop=False,
        rcvbuf=32768,
    ) as endpoint:
        sock = endpoint.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 4
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
    with socketeer.open_datagram(f"udp4://127.0.0.1:{NOBODY}", ttl=3, multicast_ttl=2) as client:
        assert client.socket.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 3
        assert client.socket.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 2


@linux_only
def test_aio_options_read_back() -> None:
    async def main() -> None:
        listener = await socketeer.aio.listen("tcp://127.0.0.1:0", keepalive=True, ttl=6)
        async with listener:
            conn = await socketeer.aio.connect(
                listener.address, timeout=10, keepalive=(40, 8, 4), sndbuf=65536, ttl=8
            )
            async with conn:
                sock = conn.transport.get_extra_info("socket")
                assert keepalive_of(sock) == (1, 40, 8, 4)
                assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 8
                async with await listener.accept(timeout=10) as accepted:
                    theirs = accepted.transport.get_extra_info("socket")
                    assert keepalive_of(theirs) == DEFAULT_READBACK
                    assert theirs.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 6
        endpoint = await socketeer.aio.open_datagram(bind="udp4://127.0.0.1:0", broadcast=True)
        async with endpoint:
            assert endpoint._sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1

    asyncio.run(main())


# -- typed errors --------------------------------------------------------------------------


@linux_only
def test_an_unknown_interface_is_a_network_error_with_enodev() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        with pytest.raises(NetworkError) as info:
            socketeer.connect(listener.address, timeout=10, bind_device="nosuch0")
    assert info.value.errno == errno.ENODEV
    assert "nosuch0" in str(info.value)
    with pytest.raises(NetworkError) as joined:
        socketeer.open_datagram(bind="udp4://127.0.0.1:0", join="239.1.2.3@nosuch0")
    assert joined.value.errno == errno.ENODEV


def test_options_that_do_not_fit_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ttl"):
        socketeer.listen(f"unix:{tmp_path}/s", ttl=3)
    with pytest.raises(UsageError, match="join needs a bound socket"):
        socketeer.open_datagram(f"udp://127.0.0.1:{NOBODY}", join="239.1.2.3")
    with pytest.raises(UsageError, match="IPv6 group"):
        socketeer.open_datagram(bind="udp4://127.0.0.1:0", join="ff02::1")
    with pytest.raises(UsageError, match="broadcast"):
        Server("tcp://127.0.0.1:0", "echo", broadcast=True)
    with pytest.raises(UsageError, match="for stream relays only"):
        relay("udp://127.0.0.1:0", f"udp://127.0.0.1:{NOBODY}", to_source="127.0.0.2")


def test_keepalive_is_quietly_off_where_there_is_no_tcp(tmp_path: Path) -> None:
    server = Server(f"unix:{tmp_path}/s", "echo")  # keepalive on by default: no error
    server.close()
    with socketeer.listen(f"unix:{tmp_path}/t", keepalive=True):
        pass


# -- keepalive by default in servers and relays -----------------------------------------


def report_keepalive(conn: socketeer.Connection) -> None:
    conn.send_line(",".join(str(v) for v in keepalive_of(conn.socket)))


async def report_keepalive_async(conn: socketeer.aio.Connection) -> None:
    values = keepalive_of(conn.transport.get_extra_info("socket"))
    await conn.send_line(",".join(str(v) for v in values))


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    runner = threading.Thread(target=server.serve_forever)
    runner.start()
    try:
        yield server
    finally:
        server.shutdown(now=True)
        runner.join(15)
        assert not runner.is_alive()


def readback_line(address: Address) -> tuple[int, ...]:
    with socketeer.connect(address, timeout=10) as conn:
        return tuple(int(v) for v in conn.recv_line().split(b","))


@linux_only
@pytest.mark.parametrize("model", ["thread", "fork", "async"])
def test_keepalive_on_by_default_on_accepted_sockets(model: str) -> None:
    handler = report_keepalive_async if model == "async" else report_keepalive
    with running(Server("tcp://127.0.0.1:0", handler, model=model)) as server:
        assert readback_line(server.address) == DEFAULT_READBACK
    with running(Server("tcp://127.0.0.1:0", handler, model=model, keepalive=False)) as server:
        assert readback_line(server.address)[0] == 0
    with running(Server("tcp://127.0.0.1:0", handler, model=model, keepalive=(90, 15, 4))) as s:
        assert readback_line(s.address) == (1, 90, 15, 4)


@linux_only
def test_keepalive_on_by_default_in_workers(tmp_path: Path) -> None:
    (tmp_path / "keepreport.py").write_text(
        textwrap.dedent(
            """
            import socket

            def report(conn):
                s = conn.socket
                values = (
                    s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                )
                conn.send_line(",".join(map(str, values)))
            """
        )
    )
    argv = [sys.executable, "-m", "socketeer", "serve", "--workers", "2", "tcp://127.0.0.1:0"]
    proc = subprocess.Popen(
        [*argv, "keepreport:report"],
        cwd=tmp_path,
        env=cli_env(),
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert "listening on " in line, line
        address = Address.parse(line.rsplit("listening on ", 1)[1].split()[0])
        for _ in range(4):  # the kernel spreads clients over both workers
            assert readback_line(address) == DEFAULT_READBACK
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(15)
        if proc.stderr is not None:
            proc.stderr.close()


def sockets_of_this_process(local: Any, peer: Any) -> list[tuple[int, int, int, int]]:
    """The keepalive settings of this process's sockets from ``local`` to ``peer``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
            with sock:
                if sock.type != socket.SOCK_STREAM or sock.family != socket.AF_INET:
                    continue
                if sock.getsockname() == local and sock.getpeername() == peer:
                    found.append(keepalive_of(sock))
    return found


@linux_only
@pytest.mark.parametrize("model", ["thread", "async"])
def test_keepalive_on_both_relay_sockets_by_default(model: str) -> None:
    seen: list[Any] = []

    def upstream_echo(conn: socketeer.Connection) -> None:
        seen.append(conn.peer)
        conn.send(conn.recv())
        conn.recv()

    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        serve_once(upstream, upstream_echo)
        with running(relay("tcp://127.0.0.1:0", str(upstream.address), model=model)) as front:
            with socketeer.connect(front.address, timeout=10) as client:
                client.send(b"ping")
                assert client.recv_exactly(4) == b"ping"
                to_local = (seen[0].host, seen[0].port)
                to_peer = (upstream.address.host, upstream.address.port)
                from_local = (front.address.host, front.address.port)
                from_peer = (client.local.host, client.local.port)  # type: ignore[union-attr]
                assert sockets_of_this_process(to_local, to_peer) == [DEFAULT_READBACK]
                assert sockets_of_this_process(from_local, from_peer) == [DEFAULT_READBACK]


def keepalive_timer(local: Any, peer: Any) -> str:
    """``ss``'s timer column for the TCP socket from ``local`` to ``peer`` (any process)."""
    ss = require_peer("ss")
    between = ["src", f"{local.host}:{local.port}", "dst", f"{peer.host}:{peer.port}"]
    out = subprocess.run(
        [ss, "-Htno", "state", "established", *between],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return out.strip()


@linux_only
def test_keepalive_on_both_sockets_of_a_forked_relay_child() -> None:
    """The fork model's sockets live in the child: read from outside, with ``ss -o``."""
    seen: list[Any] = []

    def upstream_echo(conn: socketeer.Connection) -> None:
        seen.append(conn.peer)
        conn.send(conn.recv())
        conn.recv()

    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        serve_once(upstream, upstream_echo)
        with running(relay("tcp://127.0.0.1:0", str(upstream.address), model="fork")) as front:
            with socketeer.connect(front.address, timeout=10) as client:
                client.send(b"ping")
                assert client.recv_exactly(4) == b"ping"
                assert "timer:(keepalive," in keepalive_timer(seen[0], upstream.address)
                assert client.local is not None
                assert "timer:(keepalive," in keepalive_timer(front.address, client.local)
                assert "keepalive" not in keepalive_timer(client.local, front.address)


# -- the source address ------------------------------------------------------------------


def test_source_is_what_the_server_sees() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        peers: list[Any] = []
        serve_once(listener, lambda conn: peers.append(conn.peer))
        with socketeer.connect(listener.address, timeout=10, source="127.0.0.2"):
            pass
        with socketeer.connect(listener.address, timeout=10) as probe:
            pass
        deadline = time.monotonic() + 10
        while not peers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert peers[0].host == "127.0.0.2"
        assert probe.local is not None and probe.local.host == "127.0.0.1"


def test_source_with_a_port_and_in_aio() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.2", 0))
    port = holder.getsockname()[1]
    holder.close()  # a port that was free a moment ago

    async def main() -> Any:
        with socketeer.listen("tcp://127.0.0.1:0") as listener:
            conn = await socketeer.aio.connect(
                listener.address, timeout=10, source=f"127.0.0.2:{port}"
            )
            async with conn:
                with listener.accept(timeout=10) as accepted:
                    return accepted.peer

    peer = asyncio.run(main())
    assert (peer.host, peer.port) == ("127.0.0.2", port)


@pytest.mark.parametrize("model", ["thread", "async"])
def test_relay_to_source(model: str) -> None:
    peers: list[Any] = []

    def upstream_echo(conn: socketeer.Connection) -> None:
        peers.append(conn.peer)
        conn.send(conn.recv())

    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        serve_once(upstream, upstream_echo)
        front_relay = relay(
            "tcp://127.0.0.1:0", str(upstream.address), model=model, to_source="127.0.0.3"
        )
        with running(front_relay) as front, socketeer.connect(front.address, timeout=10) as c:
            c.send(b"x")
            assert c.recv_exactly(1) == b"x"
    assert peers[0].host == "127.0.0.3"


# -- through a proxy --------------------------------------------------------------------


@pytest.fixture
def socks_proxy(tmp_path: Path) -> Iterator[str]:
    """microsocks on a free loopback port: its URL."""
    exe = require_peer("microsocks")
    for _ in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proc = subprocess.Popen(
            [exe, "-i", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        up = False
        while proc.poll() is None and time.monotonic() < deadline and not up:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                up = True
            if not up:
                time.sleep(0.02)  # an external program: no readiness line to wait for
        if up:
            try:
                yield f"socks5://127.0.0.1:{port}"
            finally:
                proc.terminate()
                proc.wait(10)
            return
        proc.kill()
        proc.wait(10)
    pytest.fail("microsocks did not start")


def echo_upstream(upstream: Any, peers: list[Any]) -> None:
    def echo(conn: socketeer.Connection) -> None:
        peers.append(conn.peer)
        conn.send(conn.recv())

    serve_once(upstream, echo)


def test_connect_through_a_proxy(socks_proxy: str) -> None:
    peers: list[Any] = []
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        echo_upstream(upstream, peers)
        with socketeer.connect(
            upstream.address, timeout=10, proxy=socks_proxy, keepalive=True
        ) as conn:
            assert conn.peer is not None and conn.peer.port == Address.parse(socks_proxy[9:]).port
            assert conn.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            conn.send(b"through")
            assert conn.recv_exactly(7) == b"through"


def test_aio_connect_through_a_proxy(socks_proxy: str) -> None:
    peers: list[Any] = []

    async def main() -> bytes:
        conn = await socketeer.aio.connect(upstream.address, timeout=10, proxy=socks_proxy)
        async with conn:
            await conn.send(b"async")
            return await conn.recv_exactly(5)

    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        echo_upstream(upstream, peers)
        assert asyncio.run(main()) == b"async"


@pytest.mark.parametrize("model", ["thread", "async"])
def test_relay_through_a_proxy(socks_proxy: str, model: str) -> None:
    peers: list[Any] = []
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        echo_upstream(upstream, peers)
        front_relay = relay(
            "tcp://127.0.0.1:0", str(upstream.address), model=model, proxy=socks_proxy
        )
        with running(front_relay) as front, socketeer.connect(front.address, timeout=10) as c:
            c.send(b"relayed")
            assert c.recv_exactly(7) == b"relayed"


def test_proxy_env_reads_all_proxy(socks_proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", socks_proxy)
    peers: list[Any] = []
    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        echo_upstream(upstream, peers)
        with socketeer.connect(upstream.address, timeout=10, proxy="env") as conn:
            conn.send(b"e")
            assert conn.recv_exactly(1) == b"e"


def test_a_dead_proxy_is_proxy_unreachable() -> None:
    holder, port = free_port_refusing()
    try:
        with pytest.raises(ProxyUnreachable) as info:
            socketeer.connect(
                f"tcp://127.0.0.1:{NOBODY}", timeout=10, proxy=f"socks5://u:secret@127.0.0.1:{port}"
            )
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "secret" not in str(info.value)
        with pytest.raises(ProxyUnreachable):
            asyncio.run(
                socketeer.aio.connect(
                    f"tcp://127.0.0.1:{NOBODY}", timeout=10, proxy=f"socks5://127.0.0.1:{port}"
                )
            )
    finally:
        holder.close()


def test_a_unix_target_with_a_proxy_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="proxy"):
        socketeer.connect(f"unix:{tmp_path}/s", proxy="socks5://127.0.0.1:1080")
    with pytest.raises(UsageError, match="proxy"):
        relay("tcp://127.0.0.1:0", f"unix:{tmp_path}/s", proxy="socks5://127.0.0.1:1080")


# -- broadcast and multicast between two network namespaces ------------------------------

PEER = textwrap.dedent(
    """
    import sys
    import socketeer

    role, *args = sys.argv[1:]
    if role == "receive":           # bind, [join], print the port, answer one datagram
        bind, join = args[0], args[1:]
        with socketeer.open_datagram(bind=bind, join=join, timeout=10) as ep:
            print(ep.local.port, flush=True)
            data, sender = ep.recv()
            ep.send(b"got " + data, to=sender)
            print(data.decode(), flush=True)
    else:                           # send one datagram to ADDRESS, await the answer
        to, options = args[0], dict(a.split("=", 1) for a in args[1:])
        kwargs = {k: int(v) for k, v in options.items()}
        bind = "udp6://[::]:0" if "[" in to else "udp4://0.0.0.0:0"
        with socketeer.open_datagram(bind=bind, timeout=10, **kwargs) as ep:
            ep.send(b"hello", to=to)
            data, sender = ep.recv()
            print(data.decode(), sender.host, flush=True)
    """
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns_pair(tmp_path: Path) -> Iterator[tuple[Callable[..., subprocess.Popen[bytes]], str]]:
    """Two network namespaces joined by a veth pair: A at 10.77.0.1 and fd77::1,
    B at 10.77.0.2 and fd77::2.

    Yields ``spawn(ns, *args)`` that runs the peer script in a namespace, and a name suffix.
    """
    tag = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"sk-a-{tag}", f"sk-b-{tag}"
    try:
        ip("netns", "add", ns_a)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ip("netns", "add", ns_b)
        ip(
            "link",
            "add",
            f"va{tag}",
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            f"vb{tag}",
            "netns",
            ns_b,
        )
        for ns, dev, addr, addr6 in (
            (ns_a, f"va{tag}", "10.77.0.1/24", "fd77::1/64"),
            (ns_b, f"vb{tag}", "10.77.0.2/24", "fd77::2/64"),
        ):
            ip("-n", ns, "addr", "add", addr, "broadcast", "10.77.0.255", "dev", dev)
            ip("-n", ns, "addr", "add", addr6, "dev", dev, "nodad")  # usable at once
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        script = tmp_path / "peer.py"
        script.write_text(PEER)

        def spawn(ns: str, *args: str) -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    {"a": ns_a, "b": ns_b}[ns],
                    sys.executable,
                    str(script),
                    *args,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=cli_env(),
            )
            procs.append(proc)
            return proc

        yield spawn, tag
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        for ns in (ns_a, ns_b):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", ns)


def exchange(
    spawn: Callable[..., subprocess.Popen[bytes]], receive: list[str], send_to: str, *send: str
) -> tuple[bytes, bytes]:
    receiver = spawn("b", "receive", *receive)
    assert receiver.stdout is not None
    port = receiver.stdout.readline().strip().decode()
    assert port.isdigit(), receiver.communicate(timeout=10)
    sender = spawn("a", "send", f"udp://{send_to}:{port}", *send)
    sent_out, sent_err = sender.communicate(timeout=20)
    assert sender.returncode == 0, sent_err
    received, _ = receiver.communicate(timeout=20)
    return sent_out, received


@linux_only
def test_broadcast_between_namespaces(netns_pair: Any) -> None:
    spawn, _ = netns_pair
    sent, received = exchange(spawn, ["udp4://0.0.0.0:0"], "10.77.0.255", "broadcast=1")
    assert received.strip() == b"hello"
    assert sent.split() == [b"got", b"hello", b"10.77.0.2"]


@linux_only
def test_broadcast_needs_the_option(netns_pair: Any) -> None:
    spawn, _ = netns_pair
    sender = spawn("a", "send", "udp://10.77.0.255:9")
    _, err = sender.communicate(timeout=20)
    assert sender.returncode != 0
    assert b"NetworkError" in err and b"permission denied" in err


@linux_only
def test_multicast_sender_and_receiver_between_namespaces(netns_pair: Any) -> None:
    spawn, tag = netns_pair
    sent, received = exchange(
        spawn,
        ["udp4://0.0.0.0:0", f"239.7.7.7@vb{tag}"],
        "239.7.7.7",
        "multicast_ttl=1",
        "multicast_loop=0",
    )
    assert received.strip() == b"hello"
    assert sent.split() == [b"got", b"hello", b"10.77.0.2"]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A CA, a server certificate for 127.0.0.1, and one for another host (all PEM paths)."""
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    paths = []
    for name, blob in (
        ("ca.pem", ca.cert_pem),
        ("server.pem", ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem),
        ("wrong.pem", ca.issue_cert("elsewhere.test").private_key_and_cert_chain_pem),
    ):
        blob.write_to_path(str(folder / name))
        paths.append(str(folder / name))
    return paths[0], paths[1], paths[2]


def tls_echo(cert: str) -> tuple[socketeer.Listener, threading.Thread]:
    from socketeer.tls import TLSConfig

    listener = socketeer.listen("tls://127.0.0.1:0", tls=TLSConfig(cert=cert, key=cert))

    def serve() -> None:
        with contextlib.suppress(socketeer.SocketeerError), listener.accept(timeout=10) as conn:
            conn.timeout = 10
            conn.send(conn.recv())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_tls_through_a_proxy_verifies_the_target(
    socks_proxy: str, tls_files: tuple[str, str, str]
) -> None:
    from socketeer.tls import TLSConfig

    ca, server, wrong = tls_files
    listener, thread = tls_echo(server)
    with listener:
        with socketeer.connect(
            listener.address, timeout=10, tls=TLSConfig(ca=ca), proxy=socks_proxy
        ) as conn:
            conn.send(b"secret")
            assert conn.recv_exactly(6) == b"secret"
        thread.join(10)
    listener, thread = tls_echo(wrong)  # the target's name, not the proxy's, is checked
    with listener, pytest.raises(socketeer.TLSError):
        socketeer.connect(listener.address, timeout=10, tls=TLSConfig(ca=ca), proxy=socks_proxy)


@pytest.mark.parametrize("model", ["thread", "async"])
def test_relay_to_tls_through_a_proxy(
    socks_proxy: str, tls_files: tuple[str, str, str], model: str
) -> None:
    from socketeer.tls import TLSConfig

    ca, server, _ = tls_files
    listener, thread = tls_echo(server)
    with listener:
        front_relay = relay(
            "tcp://127.0.0.1:0",
            str(listener.address),
            model=model,
            proxy=socks_proxy,
            tls_client=TLSConfig(ca=ca),
        )
        with running(front_relay) as front, socketeer.connect(front.address, timeout=10) as c:
            c.send(b"tls-relay")
            assert c.recv_exactly(9) == b"tls-relay"
        thread.join(10)


def test_aio_tls_through_a_proxy(socks_proxy: str, tls_files: tuple[str, str, str]) -> None:
    from socketeer.tls import TLSConfig

    ca, server, _ = tls_files
    listener, thread = tls_echo(server)

    async def main() -> bytes:
        conn = await socketeer.aio.connect(
            listener.address, timeout=10, tls=TLSConfig(ca=ca), proxy=socks_proxy
        )
        async with conn:
            await conn.send(b"aio-tls")
            return await conn.recv_exactly(7)

    with listener:
        assert asyncio.run(main()) == b"aio-tls"
        thread.join(10)


def test_a_source_of_one_family_skips_the_targets_of_the_other() -> None:
    rows = {row[0] for row in socket.getaddrinfo("localhost", 1, type=socket.SOCK_STREAM)}
    if rows != {socket.AF_INET, socket.AF_INET6}:
        pytest.skip("localhost does not resolve to both IPv4 and IPv6 here")
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        port = listener.address.port
        with socketeer.connect(f"tcp://localhost:{port}", timeout=10, source="127.0.0.2"):
            with listener.accept(timeout=10) as accepted:
                assert accepted.peer is not None and accepted.peer.host == "127.0.0.2"


@linux_only
def test_keepalive_on_an_inherited_listening_socket() -> None:
    """``fd:N`` (systemd's sockets): the options are set on the socket as it comes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    fd = sock.detach()
    with running(Server(f"fd:{fd}", report_keepalive, keepalive=(70, 7, 7))) as server:
        assert readback_line(server.address) == (1, 70, 7, 7)


@linux_only
@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 here")
def test_ttl_on_a_dual_stack_listener_covers_its_ipv4_clients() -> None:
    with socketeer.listen("tcp://:0", ttl=5) as listener:
        port = listener.address.port
        with socketeer.connect(f"tcp://127.0.0.1:{port}", timeout=10):
            with listener.accept(timeout=10) as accepted:
                sock = accepted.socket
                assert sock.family == socket.AF_INET6  # an IPv4-mapped client
                assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 5
                assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 5


@linux_only
def test_a_relay_handler_made_by_hand_keeps_keepalive_on_to() -> None:
    from socketeer.relay import RelayHandler

    seen: list[Any] = []

    def upstream_echo(conn: socketeer.Connection) -> None:
        seen.append(conn.peer)
        conn.send(conn.recv())
        conn.recv()

    with socketeer.listen("tcp://127.0.0.1:0") as upstream:
        serve_once(upstream, upstream_echo)
        handler = RelayHandler(upstream.address)
        with running(Server("tcp://127.0.0.1:0", handler, model="thread")) as front:
            with socketeer.connect(front.address, timeout=10) as client:
                client.send(b"ping")
                assert client.recv_exactly(4) == b"ping"
                to_local = (seen[0].host, seen[0].port)
                to_peer = (upstream.address.host, upstream.address.port)
                assert sockets_of_this_process(to_local, to_peer) == [DEFAULT_READBACK]


@linux_only
def test_ipv6_multicast_between_namespaces(netns_pair: Any) -> None:
    spawn, tag = netns_pair
    sent, received = exchange(
        spawn, ["udp6://[::]:0", f"ff05::7@vb{tag}"], "[ff05::7]", "multicast_ttl=1"
    )
    assert received.strip() == b"hello"
    assert sent.split() == [b"got", b"hello", b"fd77::2"]


def test_off_linux_bind_device_is_a_usage_error_and_keepalive_keeps_what_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What macOS and the BSDs get: no SO_BINDTODEVICE, perhaps no TCP_KEEPCNT."""
    from socketeer import _sockopts

    monkeypatch.setattr(_sockopts, "_SO_BINDTODEVICE", None)
    monkeypatch.setattr(_sockopts, "_TCP_KEEPCNT", None)
    _sockopts._settings.cache_clear()
    try:
        with socketeer.listen("tcp://127.0.0.1:0") as listener:
            with pytest.raises(UsageError, match="Linux-only"):
                socketeer.connect(listener.address, timeout=10, bind_device="lo")
            with socketeer.connect(listener.address, timeout=10, keepalive=(30, 5, 3)) as conn:
                sock = conn.socket
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        _sockopts._settings.cache_clear()


@linux_only
def test_a_datagram_server_on_an_inherited_socket_joins_its_groups() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    server = Server(f"fd:{sock.detach()}", "echo", join="239.1.2.77@127.0.0.1")
    try:
        with open("/proc/net/igmp") as groups:  # the group as a 32-bit word, hex
            word = socket.inet_aton("239.1.2.77")[:: -1 if sys.byteorder == "little" else 1]
            assert any(word.hex().upper() in line for line in groups)
    finally:
        server.close()
