"""Streams across an impaired link between network namespaces: nothing lost, nothing stuck.

Two hosts, ``a`` and ``b``, joined (inside the namespaces only, 10.x) by one
of two links, each test run over both:

- ``veth``: a veth pair at line speed with 1% random loss each way from
  netfilter's ``statistic`` match (this kernel has no ``sch_netem``);
- ``wire``: TUN devices joined by ``tests/wire.py``, which holds every packet
  20 ms ± 5 ms, drops 1% and reorders 1% (the issue's condition), MTU 1500.

docs/reliability.md has the figures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ROOT, Background, cli_env
from .netlab import Network
from .swap import blocks, digest_of

SWAP = str(ROOT / "tests" / "swap.py")
MIB = 50  # each way


def socketeer_in(net: Network, host: str, *argv: str) -> list[str]:
    return net.argv(host, [sys.executable, "-m", "socketeer", *argv])


def swap_in(net: Network, host: str, *argv: str) -> list[str]:
    return net.argv(host, [sys.executable, SWAP, *argv])


def result_of(proc: Background, timeout: float = 240) -> tuple[str, int]:
    out, err, code = proc.finish(timeout=timeout)
    assert code == 0, err.decode()
    digest, total = out.decode().split()
    return digest, int(total)


LINKS = ["veth", "wire"]


def impaired(net: Network, kind: str) -> tuple[str, str, Callable[[], str]]:
    """Join a and b by an impaired link: a's address, b's, and a check that it bit.

    The check returns what the link did, for the figures of docs/reliability.md.
    """
    if kind == "veth":
        link = net.link("a", "b")
        link.impair(loss=0.01)

        def check() -> str:
            dropped = link.dropped()
            assert dropped > 0, "no packet was dropped: the loss was not applied"
            return f"{dropped} packets dropped"

        return link.address("a"), link.address("b"), check
    wire = net.wire("a", "b", delay=0.020, jitter=0.005, loss=0.01, reorder=0.01, mtu=1500)

    def check_wire() -> str:
        counts = wire.counts()
        assert counts["dropped"] > 0 and counts["reordered"] > 0, counts
        return ", ".join(f"{value} {name}" for name, value in counts.items())

    return wire.address("a"), wire.address("b"), check_wire


@pytest.mark.slow
@pytest.mark.parametrize("kind", LINKS)
@pytest.mark.parametrize("model", ["async", "thread"])
def test_relay_50_mb_each_way_over_an_impaired_link(
    model: str, kind: str, background: type[Background]
) -> None:
    """The data crosses the link twice each way (a -> relay on b -> back to a)."""
    with Network(["a", "b"]) as net:
        at_a, at_b, check = impaired(net, kind)
        server = background(swap_in(net, "a", "listen", at_a, str(MIB), "down"))
        upstream = server.wait_listening()
        relay = background(
            socketeer_in(net, "b", "relay", "--model", model, f"{at_b}:0", upstream),
            stdin=subprocess.DEVNULL,
        )
        front = relay.wait_listening().removeprefix("tcp://")
        started = time.monotonic()
        client = background(swap_in(net, "a", "connect", front, str(MIB), "up"))
        assert result_of(client) == (digest_of(MIB, b"down"), MIB << 20)
        assert result_of(server) == (digest_of(MIB, b"up"), MIB << 20)
        took = time.monotonic() - started
        print(f"relay {model} over {kind}: {MIB} MiB each way in {took:.1f}s; {check()}")
        relay.proc.terminate()
        _, err, code = relay.finish()
        assert code == 0 and b"Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize("kind", LINKS)
def test_connect_and_listen_50_mb_each_way_over_an_impaired_link(
    kind: str, tmp_path: Path, background: type[Background]
) -> None:
    """``socketeer listen`` on b, ``socketeer connect`` on a, a file each way."""
    up, down = tmp_path / "up", tmp_path / "down"
    for path, seed in ((up, b"up"), (down, b"down")):
        with path.open("wb") as f:
            for block in blocks(MIB, seed):
                f.write(block)
    with Network(["a", "b"]) as net:
        _, at_b, check = impaired(net, kind)
        got_up, got_down = tmp_path / "got-up", tmp_path / "got-down"
        with down.open("rb") as stdin, got_up.open("wb") as stdout:
            listener = background(
                socketeer_in(net, "b", "listen", f"{at_b}:0"),
                stdin=stdin.fileno(),
                stdout=stdout.fileno(),
            )
            address = listener.wait_listening()
        started = time.monotonic()
        with up.open("rb") as stdin, got_down.open("wb") as stdout:
            client = subprocess.run(
                socketeer_in(net, "a", "connect", "-t", "10", address),
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=cli_env(),
                timeout=240,
                check=False,
            )
        assert client.returncode == 0, client.stderr
        _, err, code = listener.finish(timeout=60)
        assert code == 0, err
        took = time.monotonic() - started
        print(f"connect/listen over {kind}: {MIB} MiB each way in {took:.1f}s; {check()}")
    assert got_down.read_bytes() == down.read_bytes()
    assert got_up.read_bytes() == up.read_bytes()


def test_a_vanished_peer_ends_the_pair_by_idle_timeout(background: type[Background]) -> None:
    """Links limited to 50 Mbit/s (tbf), taken down mid-transfer: no FIN, no RST arrives."""
    with Network(["a", "b", "c"]) as net:
        front = net.link("a", "b")  # the client's side
        back = net.link("b", "c")  # the upstream's side
        for link in (front, back):
            link.impair(rate="50mbit")  # 400 MiB would take a minute: it is cut long before
        server = background(swap_in(net, "c", "listen", back.address("c"), "400", "down"))
        upstream = server.wait_listening()
        relay = background(
            socketeer_in(
                net, "b", "relay", "-v", "--idle-timeout", "1", f"{front.address('b')}:0", upstream
            ),
            stdin=subprocess.DEVNULL,
        )
        address = relay.wait_listening().removeprefix("tcp://")
        client = background(swap_in(net, "a", "connect", address, "400", "up"))
        time.sleep(1.0)  # the transfer is under way
        started = time.monotonic()
        back.down("c")  # the upstream vanishes mid-transfer
        front.down("a")  # and so does the client: neither can say goodbye
        relay.wait_for_stderr(b"closed", timeout=15)
        took = time.monotonic() - started
        assert took < 5, f"the pair outlived its 1 s idle timeout by {took - 1:.1f}s"
        print(f"vanished peers: the pair ended {took:.2f}s after the links went down")
        line = next(x for x in relay.stderr_lines if b"closed" in x).decode()
        assert "idle" in line, line
        assert relay.proc.poll() is None, "the relay must keep serving"
        client.stop()
        server.stop()
        relay.proc.terminate()
        _, err, code = relay.finish()
        assert code == 0 and b"Traceback" not in err, err
