"""Listeners and datagram endpoints: ports, socket files, autobind, and their failures."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

import socketeer
from socketeer import (
    Address,
    AddressInUse,
    ConnectError,
    FrameTooLarge,
    Listener,
    Timeout,
    UsageError,
)

from .conftest import NOBODY, free_port_refusing


def test_port_zero_reports_the_real_port() -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        assert listener.address.port != 0
        assert listener.address == Address.parse(str(listener.address))
        with socketeer.connect(listener.address, timeout=5):
            pass


def test_tcp_port_in_use(no_fd_leak: None) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener:
        with pytest.raises(AddressInUse) as info:
            socketeer.listen(listener.address)
        assert str(listener.address) in str(info.value)


def test_unix_socket_file_lifecycle(sockdir: Path, no_fd_leak: None) -> None:
    path = sockdir / "life.sock"
    with socketeer.listen(f"unix:{path}", unix_mode=0o600) as listener:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert listener.address == Address.parse(f"unix:{path}")
    assert not path.exists()


def test_stale_socket_file_is_replaced(sockdir: Path, no_fd_leak: None) -> None:
    path = sockdir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # a server that died without removing its file
    assert path.exists()
    with socketeer.listen(f"unix:{path}") as listener, socketeer.connect(listener.address):
        pass
    assert not path.exists()


def test_live_server_path_is_address_in_use(sockdir: Path, no_fd_leak: None) -> None:
    path = sockdir / "live.sock"
    with socketeer.listen(f"unix:{path}"):
        with pytest.raises(AddressInUse, match="a server is listening there"):
            socketeer.listen(f"unix:{path}")
        assert path.exists()  # the live server's file is untouched
    assert not path.exists()


def test_regular_file_is_not_replaced(sockdir: Path) -> None:
    path = sockdir / "data.txt"
    path.write_text("precious")
    with pytest.raises(AddressInUse, match="not a socket"):
        socketeer.listen(f"unix:{path}")
    assert path.read_text() == "precious"


def test_forked_child_closing_the_listener_keeps_the_file(sockdir: Path) -> None:
    path = sockdir / "fork.sock"
    with socketeer.listen(f"unix:{path}") as listener:
        pid = os.fork()
        if pid == 0:  # the child closes its copy, as the fork model does
            listener.close()
            os._exit(0)
        os.waitpid(pid, 0)
        assert path.exists()
    assert not path.exists()


def test_accept_timeout(no_fd_leak: None) -> None:
    with socketeer.listen("tcp://127.0.0.1:0") as listener, pytest.raises(Timeout):
        listener.accept(timeout=0.2)


def test_adopt_inherited_listener_fd() -> None:
    raw = socket.create_server(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    fd = raw.detach()  # as if inherited: only the number is left
    with socketeer.listen(f"fd:{fd}") as listener:
        assert listener.address.port == port
        with socketeer.connect(listener.address, timeout=5) as client, listener.accept(5) as srv:
            client.send_line("via fd")
            assert srv.recv_line() == b"via fd"
    assert Listener.from_socket  # the same path systemd activation takes


def test_stream_calls_reject_datagram_addresses() -> None:
    with pytest.raises(UsageError):
        socketeer.connect(f"udp://127.0.0.1:{NOBODY}")
    with pytest.raises(UsageError):
        socketeer.listen("unix-dgram:/tmp/x")
    with pytest.raises(UsageError):
        socketeer.open_datagram(f"tcp://127.0.0.1:{NOBODY}")
    with pytest.raises(UsageError):
        socketeer.open_datagram()


# -- connect failures ------------------------------------------------------------------


def test_refused(no_fd_leak: None) -> None:
    sock, port = free_port_refusing()
    with sock, pytest.raises(ConnectError, match=f"connection refused: tcp://127.0.0.1:{port}"):
        socketeer.connect(f"127.0.0.1:{port}", timeout=5)


def test_unknown_host(no_fd_leak: None) -> None:
    with pytest.raises(ConnectError, match="host not found"):
        socketeer.connect("no-such-host.invalid:80", timeout=5)


def test_missing_unix_socket(sockdir: Path, no_fd_leak: None) -> None:
    with pytest.raises(ConnectError, match="no such socket"):
        socketeer.connect(f"unix:{sockdir}/absent.sock")


def test_timeout_against_a_full_backlog(no_fd_leak: None) -> None:
    """A listener that never accepts, its backlog full: SYNs are dropped, connect waits."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        with pytest.raises(Timeout, match=f"connect timed out after 0.5s: tcp://127.0.0.1:{port}"):
            socketeer.connect(f"127.0.0.1:{port}", timeout=0.5)
    finally:
        for filler in fillers:
            filler.close()
        server.close()


# -- datagrams -------------------------------------------------------------------------


def test_udp_exchange(no_fd_leak: None) -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0", timeout=5) as server:
        with socketeer.open_datagram(server.local, timeout=5) as client:
            client.send(b"question")
            data, sender = server.recv()
            assert data == b"question"
            assert sender == client.local
            server.send(b"answer", to=sender)
            assert client.recv() == (b"answer", server.local)


def test_unix_datagram_client_is_autobound(sockdir: Path, no_fd_leak: None) -> None:
    path = sockdir / "dgram.sock"
    with socketeer.open_datagram(bind=f"unix-dgram:{path}", timeout=5) as server:
        with socketeer.open_datagram(f"unix-dgram:{path}", timeout=5) as client:
            assert client.local is not None  # it has an address a server can reply to
            client.send(b"hi")
            data, sender = server.recv()
            assert (data, sender) == (b"hi", client.local)
            server.send(b"back", to=sender)
            assert client.recv()[0] == b"back"
    assert not path.exists()
    assert os.listdir(sockdir) == []


def test_abstract_datagram(abstract_name: str) -> None:
    with socketeer.open_datagram(bind=f"unix-dgram:@{abstract_name}", timeout=5) as server:
        with socketeer.open_datagram(f"unix-dgram:@{abstract_name}", timeout=5) as client:
            client.send(b"x")
            assert server.recv()[0] == b"x"


def test_udp_refused_surfaces_on_the_next_call(no_fd_leak: None) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    with socketeer.open_datagram(f"udp://127.0.0.1:{port}", timeout=2) as client:
        client.send(b"anyone?")
        with pytest.raises(ConnectError, match="connection refused"):
            client.recv()


def test_udp_recv_timeout(no_fd_leak: None) -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0") as server, pytest.raises(Timeout):
        server.recv(timeout=0.2)


def test_oversized_datagrams(sockdir: Path, no_fd_leak: None) -> None:
    with socketeer.open_datagram(bind="udp://127.0.0.1:0") as server:
        with socketeer.open_datagram(server.local) as client, pytest.raises(FrameTooLarge):
            client.send(b"x" * 70000)
    path = sockdir / "big.sock"
    with socketeer.open_datagram(bind=f"unix-dgram:{path}", timeout=5) as server:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        with raw:
            try:
                raw.sendto(b"y" * (300 * 1024), str(path))
            except OSError:
                pytest.skip("this kernel's limits refuse a 300 KiB Unix datagram")
            with pytest.raises(FrameTooLarge):
                server.recv()


# -- resolution --------------------------------------------------------------------


def test_connect_tries_each_resolved_address_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with two addresses, the first refusing: the second answers (SPEC §1)."""
    from socketeer import _sockio

    refusing, refused_port = free_port_refusing()
    with refusing, socketeer.listen("tcp://127.0.0.1:0") as listener:
        good_port = listener.address.port
        targets = [
            _sockio.Target(socket.AF_INET, socket.SOCK_STREAM, 0, ("127.0.0.1", refused_port)),
            _sockio.Target(socket.AF_INET, socket.SOCK_STREAM, 0, ("127.0.0.1", good_port)),
        ]
        monkeypatch.setattr(_sockio, "resolve", lambda address, passive: targets)
        with socketeer.connect("tcp://two-addresses.test:1", timeout=5) as conn:
            assert conn.peer == Address.parse(f"tcp://127.0.0.1:{good_port}")


def test_names_resolve_in_the_family_asked_for() -> None:
    with socketeer.listen("tcp4://localhost:0") as listener:
        assert listener.address.ip_version == 4
        with socketeer.connect(f"tcp4://localhost:{listener.address.port}", timeout=5) as conn:
            assert conn.peer is not None
            assert conn.peer.host == "127.0.0.1"


def test_ipv6_name_resolution() -> None:
    from .conftest import HAS_IPV6

    if not HAS_IPV6:
        pytest.skip("no IPv6 loopback here")
    names = [n for n in ("ip6-localhost", "ip6-loopback", "localhost") if _resolves_v6(n)]
    if not names:
        pytest.skip("no host name resolves to ::1 here")
    with socketeer.listen("tcp6://[::1]:0") as listener:
        target = f"tcp6://{names[0]}:{listener.address.port}"
        with socketeer.connect(target, timeout=5) as conn:
            assert conn.peer == listener.address


def _resolves_v6(name: str) -> bool:
    try:
        return any(r[4][0] == "::1" for r in socket.getaddrinfo(name, 1, socket.AF_INET6))
    except OSError:
        return False


def test_ipv4_mapped_peers_are_shown_as_ipv4() -> None:
    """What a dual-stack listener's accept() returns for an IPv4 client.

    (Tests bind only loopback, never every interface, so this checks the
    conversion on the sockaddr the kernel would hand back.)
    """
    from socketeer._sockio import address_of

    like = Address("tcp", port=0)
    mapped = address_of(("::ffff:127.0.0.1", 443, 0, 0), like)
    assert mapped == Address.parse("tcp://127.0.0.1:443")
    plain6 = address_of(("::1", 443, 0, 0), Address("tcp4", port=0))
    assert plain6 == Address.parse("tcp://[::1]:443")  # tcp4 cannot hold it: scheme widened
