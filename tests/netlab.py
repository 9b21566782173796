"""A test network: hosts as Linux network namespaces joined by veth pairs.

Every address lives inside the namespaces (10.x), so nothing a test sends can
leave this machine. Impairments are applied honestly with what the kernel
has: ``tc netem`` (delay, jitter, loss, reordering, duplication) where the
``sch_netem`` module exists; otherwise random loss with netfilter's
``statistic`` match on both ends of a link, and a rate limit with ``tbf``.
``Link.impairments`` says what was really applied, for the figures.

    with Network(["a", "b"]) as net:
        link = net.link("a", "b")            # 10.77.N.1 (a) <-> 10.77.N.2 (b)
        link.impair(loss=0.01, rate="100mbit")
        net.run("b", ["socketeer", "listen", f"{link.address('b')}:0"])
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import IN_CI


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


def available() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables)"
    name = f"sk-probe-{uuid.uuid4().hex[:6]}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"network namespaces are not permitted: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    return None


def require_namespaces() -> None:
    """Skip (locally) or fail (in CI) when namespaces cannot be made."""
    reason = available()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI must run the namespace tests: {reason}")
        pytest.skip(reason)


@dataclass
class Link:
    """A veth pair between two hosts, a /24 of its own."""

    net: Network
    a: str
    b: str
    subnet: int
    impairments: list[str] = field(default_factory=list)

    def address(self, host: str) -> str:
        """The host's IPv4 address on this link."""
        return f"10.77.{self.subnet}.{1 if host == self.a else 2}"

    def device(self, host: str) -> str:
        return f"v{self.subnet}{'a' if host == self.a else 'b'}"

    def impair(self, *, loss: float = 0.0, rate: str | None = None) -> None:
        """Drop ``loss`` of the packets arriving at each end; limit each direction to ``rate``.

        With netem, loss is netem's; without it, netfilter's random
        ``statistic`` match drops arriving packets on both ends.
        """
        for host in (self.a, self.b):
            if loss:
                self.net.exec(
                    host,
                    [
                        "iptables",
                        "-A",
                        "INPUT",
                        "-i",
                        self.device(host),
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        f"{loss:g}",
                        "-j",
                        "DROP",
                    ],
                )
            if rate:
                self.net.exec(
                    host,
                    [
                        "tc",
                        "qdisc",
                        "add",
                        "dev",
                        self.device(host),
                        "root",
                        "tbf",
                        "rate",
                        rate,
                        "burst",
                        "64kb",
                        "latency",
                        "100ms",
                    ],
                )
        if loss:
            self.impairments.append(f"{loss:.0%} loss each way (netfilter statistic)")
        if rate:
            self.impairments.append(f"{rate} each way (tbf)")

    def dropped(self) -> int:
        """Packets the loss rules have dropped so far, both ends: proof the loss happened."""
        total = 0
        for host in (self.a, self.b):
            out = self.net.exec(host, ["iptables", "-L", "INPUT", "-v", "-x", "-n"]).stdout
            for line in out.decode().splitlines():
                fields = line.split()
                if "statistic" in line and "DROP" in fields and fields[0].isdigit():
                    total += int(fields[0])
        return total

    def down(self, host: str) -> None:
        """Take the link down at ``host``'s end: the peer vanishes, no FIN, no RST."""
        self.net.exec(host, ["ip", "link", "set", self.device(host), "down"])


@dataclass
class Wire:
    """Two hosts joined through ``tests/wire.py``: TUN devices, every packet impaired in
    user space (delay, jitter, loss, reordering, duplication), where netem is missing."""

    net: Network
    a: str
    b: str
    subnet: int
    proc: subprocess.Popen[bytes]
    impairments: list[str]

    def address(self, host: str) -> str:
        return f"10.78.{self.subnet}.{1 if host == self.a else 2}"

    def counts(self) -> dict[str, int]:
        """Stop the wire and return what it did (packets, dropped, reordered, duplicated)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        last = out.decode().strip().splitlines()[-1]
        return {k: int(v) for k, v in (item.split("=") for item in last.split())}


class Network:
    """Hosts (namespaces) by name; links made with ``link``; all removed on exit."""

    def __init__(self, hosts: Sequence[str]) -> None:
        require_namespaces()
        self.tag = tag = uuid.uuid4().hex[:6]
        self.names = {host: f"sk-{tag}-{host}" for host in hosts}
        self.links: list[Link] = []
        self.wires: list[Wire] = []
        self.processes: list[subprocess.Popen[Any]] = []
        try:
            for name in self.names.values():
                _ip("netns", "add", name)
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def link(self, a: str, b: str) -> Link:
        link = Link(self, a, b, subnet=len(self.links) + 1)
        dev_a, dev_b = link.device(a), link.device(b)
        _ip("link", "add", dev_a, "netns", self.names[a], "type", "veth", "peer", "name", dev_b)
        _ip("link", "set", dev_b, "netns", self.names[b])
        for host, dev in ((a, dev_a), (b, dev_b)):
            _ip("-n", self.names[host], "addr", "add", f"{link.address(host)}/24", "dev", dev)
            _ip("-n", self.names[host], "link", "set", dev, "up")
        self.links.append(link)
        return link

    def wire(
        self,
        a: str,
        b: str,
        *,
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        mtu: int = 9000,
    ) -> Wire:
        """Join ``a`` and ``b`` through an impaired user-space wire (see tests/wire.py)."""
        subnet = len(self.links) + len(self.wires) + 1
        tun_a, tun_b = f"t{subnet}a{self.tag}", f"t{subnet}b{self.tag}"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("wire.py")),
                tun_a,
                tun_b,
                f"--delay={delay}",
                f"--jitter={jitter}",
                f"--loss={loss}",
                f"--reorder={reorder}",
                f"--duplicate={duplicate}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the wire did not start (needs /dev/net/tun)")
        described = [f"{delay * 1000:g} ms ± {jitter * 1000:g} ms delay each way"]
        described += [
            f"{v:.0%} {what}"
            for v, what in ((loss, "loss"), (reorder, "reordering"), (duplicate, "duplication"))
            if v
        ]
        described.append(f"MTU {mtu} (user-space TUN wire)")
        wire = Wire(self, a, b, subnet, proc, described)
        for host, dev, peer in ((a, tun_a, b), (b, tun_b, a)):
            _ip("link", "set", dev, "netns", self.names[host])
            ns = self.names[host]
            _ip("-n", ns, "addr", "add", wire.address(host), "peer", wire.address(peer), "dev", dev)
            _ip("-n", ns, "link", "set", dev, "mtu", str(mtu), "up")
        self.wires.append(wire)
        return wire

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``."""
        return ["ip", "netns", "exec", self.names[host], *argv]

    def exec(self, host: str, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside ``host`` to completion (it must succeed)."""
        return subprocess.run(self.argv(host, argv), check=True, capture_output=True, timeout=60)

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside ``host``; killed at ``close`` if still running."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.argv(host, argv), **kwargs)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for name in self.names.values():
            # Deleting a namespace removes its veth ends, and their peers with them.
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
