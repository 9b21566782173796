"""Who may connect: ``allow`` and ``deny`` lists of addresses and CIDR networks (SPEC §4).

Pure: decides on an ``Address``, opens no socket. The rules, as tcpwrappers
and most servers read them: a client matching ``deny`` is refused; with a
non-empty ``allow``, a client must match it too. Unix-domain clients have no
IP address and are not subject to the lists (file permissions guard them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .address import Address
from .errors import UsageError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = ["AccessList", "parse_network"]


def parse_network(text: str) -> Network:
    """``10.0.0.0/8``, ``::1``, ``127.0.0.1`` (a single host), ``[::1]``.

    Raises:
        UsageError: not an address or network.
    """
    cleaned = text.strip()
    if cleaned.startswith("[") and cleaned.endswith("]"):
        cleaned = cleaned[1:-1]
    try:
        return ipaddress.ip_network(cleaned, strict=False)
    except ValueError:
        raise UsageError(
            f"bad network {text!r}: write an IP address or a CIDR network (10.0.0.0/8, ::1/128)"
        ) from None


class AccessList:
    """The allow/deny decision for a client address."""

    def __init__(self, allow: Iterable[str | Network] = (), deny: Iterable[str | Network] = ()):
        self.allow = [n if not isinstance(n, str) else parse_network(n) for n in allow]
        self.deny = [n if not isinstance(n, str) else parse_network(n) for n in deny]

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def permits(self, peer: Address | None) -> bool:
        if not self or peer is None or not peer.is_inet:
            return True  # no rules (the common case: no parsing per client), or no IP
        try:
            ip = ipaddress.ip_address(peer.host.split("%", 1)[0])
        except ValueError:
            return not self.allow
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.deny if net.version == ip.version):
            return False
        if self.allow:
            return any(ip in net for net in self.allow if net.version == ip.version)
        return True
