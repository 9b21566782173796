"""Socket options (SPEC §9): what ``--keepalive``, ``--ttl``, ``--join`` mean, and setting them.

``SocketOptions`` is the one value every entry point builds from its keyword
arguments (``connect``, ``listen``, ``open_datagram``, ``Server``, ``relay``)
and the CLI builds from its options; the parsers here (``Keepalive.parse``,
``Membership.parse``) are the CLI's argument types too, so the two cannot
disagree about a spelling.

When each option is applied:

- before connect or bind (``apply``): keepalive, the buffers, TTL and hop
  limit, the device, broadcast, the multicast TTL and loop, IPV6_V6ONLY;
- after bind (``join_groups``): multicast memberships, which need a bound
  socket on most systems;
- ``source`` is bound after the options, just before the connect
  (``prepare_connect``).

Options that make no sense for a socket are refused with a ``UsageError``
(a TTL on a Unix socket, broadcast on TCP) with one exception: keepalive is
quietly left off where there is no TCP, because servers and relays turn it on
by default whatever they listen on. Family-specific options (``ttl`` vs
``hop_limit``) are applied to the sockets of the family they name, so one set
of options serves every address a name resolves to.

A failing ``setsockopt`` becomes a typed error naming the option: EPERM and
EACCES a ``NetworkError`` "permission denied", ENODEV "no such interface",
EINVAL a ``UsageError`` for the value, ENOPROTOOPT a ``UsageError`` for the
option (never a bare ``OSError``, STYLE R6).
"""

from __future__ import annotations

import _socket
import errno
import functools
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass

from .address import Address
from .errors import AddressError, NetworkError, SocketeerError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Final, TypeAlias

    KeepaliveArg: TypeAlias = "bool | Keepalive | tuple[int, int, int] | str | None"

__all__ = [
    "CONNECT_OPTIONS",
    "DATAGRAM_OPTIONS",
    "DEFAULT_KEEPALIVE",
    "LISTEN_OPTIONS",
    "NO_OPTIONS",
    "Keepalive",
    "Membership",
    "SocketOptions",
    "apply",
    "apply_planned",
    "join_groups",
    "parse_source",
]

_LINUX = sys.platform.startswith("linux")
_raw_family: Final = _socket.socket.family.__get__
_raw_type: Final = _socket.socket.type.__get__

# Linux caps TCP_KEEPIDLE and TCP_KEEPINTVL at 32767 s and TCP_KEEPCNT at 127.
_MAX_KEEP_SECONDS: Final = 32767
_MAX_KEEP_COUNT: Final = 127

# macOS names the idle time TCP_KEEPALIVE; Python exposes one or the other.
_TCP_KEEPIDLE: Final = getattr(socket, "TCP_KEEPIDLE", None) or getattr(
    socket, "TCP_KEEPALIVE", None
)
_TCP_KEEPINTVL: Final = getattr(socket, "TCP_KEEPINTVL", None)
_TCP_KEEPCNT: Final = getattr(socket, "TCP_KEEPCNT", None)
_SO_BINDTODEVICE: Final = getattr(socket, "SO_BINDTODEVICE", None)
_IPV6_JOIN_GROUP: Final = getattr(socket, "IPV6_JOIN_GROUP", None) or getattr(
    socket, "IPV6_ADD_MEMBERSHIP", None
)


@dataclass(frozen=True)
class Keepalive:
    """TCP keepalive timings in seconds: first probe after ``idle``, then every
    ``interval``, the connection dropped after ``count`` unanswered probes.
    """

    idle: int = 60
    interval: int = 10
    count: int = 6

    def __post_init__(self) -> None:
        for name, value, top in (
            ("idle", self.idle, _MAX_KEEP_SECONDS),
            ("interval", self.interval, _MAX_KEEP_SECONDS),
            ("count", self.count, _MAX_KEEP_COUNT),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise UsageError(f"keepalive {name} must be a whole number from 1 to {top}")

    @classmethod
    def parse(cls, text: str) -> Keepalive:
        """``IDLE,INTERVAL,COUNT`` as ``--keepalive=`` takes it (seconds, seconds, probes).

        Raises:
            UsageError: not three whole numbers in range.
        """
        parts = text.split(",")
        if len(parts) != 3 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
            raise UsageError(
                f"bad keepalive {text!r}: use IDLE,INTERVAL,COUNT (seconds, seconds, probes)"
            )
        idle, interval, count = (int(p) for p in parts)
        return cls(idle, interval, count)

    @classmethod
    def of(cls, value: KeepaliveArg) -> Keepalive | None:
        """The timings a ``keepalive=`` argument asks for (None: keepalive off).

        ``True`` means ``DEFAULT_KEEPALIVE``; a tuple or a string gives the three numbers.
        """
        if value is None or value is False:
            return None
        if value is True:
            return DEFAULT_KEEPALIVE
        if isinstance(value, Keepalive):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, tuple) and len(value) == 3:
            return cls(*value)
        raise UsageError(f"keepalive takes True, False or (idle, interval, count), not {value!r}")

    def __str__(self) -> str:
        return f"{self.idle},{self.interval},{self.count}"


#: What servers and relays use unless told otherwise. HAProxy and ncat turn
#: SO_KEEPALIVE on and keep the system's timings, but Linux's are 7200 s idle,
#: 75 s interval, 9 probes: two hours, far beyond the idle timeouts of the
#: NATs and load balancers in between (Azure's 4 minutes, AWS NLB's 350 s,
#: home routers often 5 minutes), which drop the mapping silently. A probe
#: after 60 s of silence keeps every one of them open, costs one small
#: packet a minute per idle connection, and 6 probes 10 s apart notice a
#: vanished peer within two minutes.
DEFAULT_KEEPALIVE: Final = Keepalive(60, 10, 6)


@dataclass(frozen=True)
class Membership:
    """A multicast group to join (``--join GROUP[@IFACE]``); ``interface`` is a
    name (``eth0``) or, for IPv4, the address of one; None lets the routing table choose.
    """

    group: str
    interface: str | None = None

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.ip_address(self.group)
        except ValueError:
            raise AddressError(
                f"bad multicast group {self.group!r}: use GROUP[@IFACE], GROUP an IP address"
            ) from None
        if not ip.is_multicast:
            raise AddressError(f"{self.group} is not a multicast address (224.0.0.0/4 or ff00::/8)")
        if self.interface == "":
            raise AddressError(f"empty interface after '@' in {self.group}@")

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.group).version

    @classmethod
    def parse(cls, text: str) -> Membership:
        """``GROUP[@IFACE]`` as ``--join`` takes it; an IPv6 group may be in brackets.

        Raises:
            AddressError: the group is not a multicast IP address.
        """
        group, at, interface = text.rpartition("@")
        if not at:
            group, interface = text, ""
        group = group.strip()
        if group.startswith("[") and group.endswith("]"):
            group = group[1:-1]
        try:
            canonical = str(ipaddress.ip_address(group))
        except ValueError:
            raise AddressError(
                f"bad multicast group {text!r}: use GROUP[@IFACE], GROUP an IP address"
            ) from None
        return cls(canonical, interface if at else None)

    def __str__(self) -> str:
        group = f"[{self.group}]" if ":" in self.group else self.group
        return f"{group}@{self.interface}" if self.interface else group


@dataclass(frozen=True)
class SocketOptions:
    """Every socket option socketeer sets, as the keyword arguments of the same names.

    ``None`` (or empty) leaves the system's default alone. ``ttl`` limits
    IPv4 hops and, unless ``hop_limit`` is given, IPv6 hops too (one knob for
    "how far"); ``hop_limit`` is IPv6's alone.
    """

    source: Address | None = None
    keepalive: Keepalive | None = None
    bind_device: str | None = None
    rcvbuf: int | None = None
    sndbuf: int | None = None
    ttl: int | None = None
    hop_limit: int | None = None
    ipv6_only: bool | None = None
    broadcast: bool = False
    join: tuple[Membership, ...] = ()
    multicast_ttl: int | None = None
    multicast_loop: bool | None = None

    def __post_init__(self) -> None:
        for name in ("rcvbuf", "sndbuf"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise UsageError(f"{name} must be a positive number of bytes")
        for name in ("ttl", "hop_limit", "multicast_ttl"):
            value = getattr(self, name)
            low = 0 if name == "multicast_ttl" else 1
            if value is not None and (type(value) is not int or not low <= value <= 255):
                raise UsageError(f"{name} must be a whole number from {low} to 255")
        if self.bind_device is not None and not self.bind_device:
            raise UsageError("bind_device needs an interface name")

    @classmethod
    def of(
        cls,
        *,
        source: str | Address | None = None,
        keepalive: KeepaliveArg = None,
        bind_device: str | None = None,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        ttl: int | None = None,
        hop_limit: int | None = None,
        ipv6_only: bool | None = None,
        broadcast: bool = False,
        join: Iterable[str | Membership] | str | Membership = (),
        multicast_ttl: int | None = None,
        multicast_loop: bool | None = None,
    ) -> SocketOptions:
        """The options from the public calls' keyword arguments, parsed and checked.

        Raises:
            UsageError, AddressError: a value out of range or that does not parse.
        """
        if (
            source is None
            and (keepalive is None or keepalive is False)
            and bind_device is None
            and rcvbuf is None
            and sndbuf is None
            and ttl is None
            and hop_limit is None
            and ipv6_only is None
            and not broadcast
            and not join
            and multicast_ttl is None
            and multicast_loop is None
        ):
            return _NONE  # the common case, once per connect: nothing to build or check
        if isinstance(join, (str, Membership)):
            join = (join,)
        return cls(
            source=parse_source(source) if source is not None else None,
            keepalive=Keepalive.of(keepalive),
            bind_device=bind_device,
            rcvbuf=rcvbuf,
            sndbuf=sndbuf,
            ttl=ttl,
            hop_limit=hop_limit,
            ipv6_only=ipv6_only,
            broadcast=bool(broadcast),
            join=tuple(m if isinstance(m, Membership) else Membership.parse(m) for m in join),
            multicast_ttl=multicast_ttl,
            multicast_loop=multicast_loop,
        )

    def without(self, *names: str) -> SocketOptions:
        """These options with some left at the system default (an inherited socket,
        bound already, can no longer take IPV6_V6ONLY or join before its bind).
        """
        from dataclasses import fields, replace

        defaults: dict[str, Any] = {f.name: f.default for f in fields(self) if f.name in names}
        return replace(self, **defaults)

    def kwargs(self, *names: str) -> dict[str, Any]:
        """Some of these options as the public calls' keyword arguments (to pass them on)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in names}
        if "keepalive" in out and out["keepalive"] is None:
            out["keepalive"] = False
        if "join" in out:
            out["join"] = tuple(out["join"])
        return out

    def check_stream(self, where: object) -> None:
        """Refuse the datagram-only options for a stream socket.

        Raises:
            UsageError: broadcast or multicast asked for on ``where``.
        """
        given = [
            name
            for name, value in (
                ("broadcast", self.broadcast),
                ("join", self.join),
                ("multicast_ttl", self.multicast_ttl is not None),
                ("multicast_loop", self.multicast_loop is not None),
            )
            if value
        ]
        if given:
            raise UsageError(f"{', '.join(given)}: for datagram sockets, not {where}")


_NONE: Final = SocketOptions()
#: No options at all: what the calls build when given none (compare with ``is``).
NO_OPTIONS: Final = _NONE


def parse_source(text: str | Address) -> Address:
    """The local address to connect from: ``ADDR[:PORT]`` (``--source``; ncat's -s and -p).

    A bare host (``127.0.0.2``, ``::1``, ``[::1]``) means any port; a bare
    ``PORT`` any address with that port.

    Raises:
        AddressError: neither an address nor a host.
    """
    try:
        return Address.parse(text)
    except AddressError:
        if not isinstance(text, str) or not text or "://" in text:
            raise
        host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        try:
            return Address.parse(f"tcp://[{host}]:0" if ":" in host else f"tcp://{host}:0")
        except AddressError:
            raise AddressError(
                f"bad source address {text!r}: use ADDR, ADDR:PORT, [IPv6]:PORT or PORT"
            ) from None


#: Which keyword arguments each public call takes (the CLI maps its long options to these).
CONNECT_OPTIONS: Final = (
    "source",
    "keepalive",
    "bind_device",
    "rcvbuf",
    "sndbuf",
    "ttl",
    "hop_limit",
)
LISTEN_OPTIONS: Final = (
    "keepalive",
    "bind_device",
    "rcvbuf",
    "sndbuf",
    "ttl",
    "hop_limit",
    "ipv6_only",
)
DATAGRAM_OPTIONS: Final = (
    "bind_device",
    "rcvbuf",
    "sndbuf",
    "ttl",
    "hop_limit",
    "ipv6_only",
    "broadcast",
    "join",
    "multicast_ttl",
    "multicast_loop",
)


# -- applying -------------------------------------------------------------------------


def apply(sock: socket.socket, options: SocketOptions) -> None:
    """Set ``options`` on a new socket, before it connects or binds.

    Raises:
        UsageError: an option that does not fit this socket, or an invalid value.
        NetworkError: the system refused (permission, no such interface).
    """
    if options is _NONE:
        return
    for level, name, value, what in _settings(options, sock.family, sock.type):
        _set(sock, level, name, value, what)


def apply_planned(
    plans: dict[tuple[int, int], tuple[tuple[int, int, int | bytes, str], ...]],
    sock: socket.socket,
    options: SocketOptions,
) -> None:
    """``apply``, with the settings for each kind of socket kept in ``plans``.

    For a relay's every connection: the settings are worked out once per kind
    of socket, read with the raw family and type (``sock.family`` builds an
    enum member each time).
    """
    key = (_raw_family(sock), _raw_type(sock) & 0xF)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _settings(options, *key)
    for level, name, value, what in plan:
        _set(sock, level, name, value, what)


def join_groups(sock: socket.socket, options: SocketOptions) -> None:
    """Join each multicast group of ``options`` on a bound datagram socket.

    Raises:
        UsageError: not an Internet datagram socket, or a group of the other family.
        NetworkError: no such interface, or the system refused.
    """
    if not options.join:
        return
    family = sock.family
    if sock.type != socket.SOCK_DGRAM or family not in (socket.AF_INET, socket.AF_INET6):
        raise UsageError("join needs a UDP socket")
    for membership in options.join:
        what = f"join {membership}"
        if membership.version == 4:
            try:
                mreq = _ip_mreq(membership)
                _set(sock, socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq, what)
            except NetworkError as exc:
                if exc.errno != errno.ENODEV or membership.interface is not None:
                    raise
                error = NetworkError(
                    f"no interface to {what} on (no multicast route): name one as GROUP@IFACE"
                )
                error.errno = exc.errno
                raise error from exc
        else:
            if family != socket.AF_INET6:
                raise UsageError(f"{what}: an IPv6 group needs an IPv6 socket (udp6://)")
            if _IPV6_JOIN_GROUP is None:
                raise UsageError(f"{what}: IPv6 multicast is not available on this platform")
            index = _interface_index(membership.interface) if membership.interface else 0
            mreq = ipaddress.IPv6Address(membership.group).packed + struct.pack("@I", index)
            _set(sock, socket.IPPROTO_IPV6, _IPV6_JOIN_GROUP, mreq, what)


def _ip_mreq(membership: Membership) -> bytes:
    group = ipaddress.IPv4Address(membership.group).packed
    interface = membership.interface
    if interface is None:
        return group + socket.inet_aton("0.0.0.0")
    try:
        return group + ipaddress.IPv4Address(interface).packed  # an interface's own address
    except ValueError:
        pass
    if not _LINUX:
        raise UsageError(
            f"join {membership}: name the interface by its IPv4 address on this platform"
        )
    # struct ip_mreqn: the group, any local address, the interface's index.
    return group + socket.inet_aton("0.0.0.0") + struct.pack("@i", _interface_index(interface))


def _interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        error = NetworkError(f"no such interface: {name}")
        error.errno = errno.ENODEV
        raise error from None


@functools.lru_cache(maxsize=64)
def _settings(
    options: SocketOptions, family: int, kind: int
) -> tuple[tuple[int, int, int | bytes, str], ...]:
    """The ``setsockopt`` calls ``options`` means for one kind of socket, worked out once.

    A relay applies the same options to every socket it opens: the checks and
    the choice of calls run once per family and type, not once per client.
    """
    inet = family in (socket.AF_INET, socket.AF_INET6)
    v6 = family == getattr(socket, "AF_INET6", None)
    tcp = inet and kind == socket.SOCK_STREAM
    udp = inet and kind == socket.SOCK_DGRAM
    out: list[tuple[int, int, int | bytes, str]] = []
    sol = socket.SOL_SOCKET

    def need(condition: bool, what: str, kind_needed: str) -> None:
        if not condition:
            raise UsageError(f"{what} needs {kind_needed}")

    keep = options.keepalive
    if keep is not None and tcp:  # quietly off elsewhere: servers turn it on by default
        out.append((sol, socket.SO_KEEPALIVE, 1, "keepalive"))
        for name, value in (
            (_TCP_KEEPIDLE, keep.idle),
            (_TCP_KEEPINTVL, keep.interval),
            (_TCP_KEEPCNT, keep.count),
        ):
            if name is not None:  # else the system's timing for that one
                out.append((socket.IPPROTO_TCP, name, value, f"keepalive {keep}"))
    if options.bind_device is not None:
        what = f"bind_device {options.bind_device}"
        need(inet, what, "an Internet socket")
        if _SO_BINDTODEVICE is None:
            raise UsageError(f"{what}: SO_BINDTODEVICE is Linux-only")
        out.append((sol, _SO_BINDTODEVICE, options.bind_device.encode(), what))
    if options.rcvbuf is not None:
        out.append((sol, socket.SO_RCVBUF, options.rcvbuf, f"rcvbuf {options.rcvbuf}"))
    if options.sndbuf is not None:
        out.append((sol, socket.SO_SNDBUF, options.sndbuf, f"sndbuf {options.sndbuf}"))
    hops = options.hop_limit if options.hop_limit is not None else options.ttl
    if options.ttl is not None:
        need(inet, "ttl", "an Internet socket")
        if not v6 or _LINUX:  # Linux: an IPv6 socket's IPv4-mapped traffic uses IP_TTL
            out.append((socket.IPPROTO_IP, socket.IP_TTL, options.ttl, f"ttl {options.ttl}"))
    if hops is not None:
        need(inet, "hop_limit", "an Internet socket")
        if v6:
            out.append((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops, f"hop_limit {hops}"))
    if options.ipv6_only is not None:
        need(inet, "ipv6_only", "an Internet socket")
        if v6:
            flag = int(options.ipv6_only)
            out.append((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, flag, "ipv6_only"))
    if options.broadcast:
        need(udp, "broadcast", "a UDP socket")
        out.append((sol, socket.SO_BROADCAST, 1, "broadcast"))
    if options.multicast_ttl is not None:
        need(udp, "multicast_ttl", "a UDP socket")
        value = options.multicast_ttl
        if v6:
            out.append((socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, value, "multicast_ttl"))
        else:
            out.append((socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, value, "multicast_ttl"))
    if options.multicast_loop is not None:
        need(udp, "multicast_loop", "a UDP socket")
        flag = int(options.multicast_loop)
        if v6:
            out.append((socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, flag, "multicast_loop"))
        else:
            out.append((socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, flag, "multicast_loop"))
    return tuple(out)


def _set(sock: socket.socket, level: int, name: int, value: int | bytes, what: str) -> None:
    try:
        sock.setsockopt(level, name, value)
    except OSError as exc:
        raise _option_error(exc, what) from exc


def _option_error(exc: OSError, what: str) -> SocketeerError:
    code = exc.errno
    error: SocketeerError
    if code in (errno.EPERM, errno.EACCES):
        hint = " (needs CAP_NET_RAW)" if what.startswith("bind_device") else ""
        error = NetworkError(f"permission denied: {what}{hint}")
    elif code == errno.ENODEV:
        error = NetworkError(f"no such interface: {what}")
    elif code == errno.EINVAL:
        return UsageError(f"invalid value: {what}")
    elif code in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
        return UsageError(f"not supported on this socket: {what}")
    elif code == errno.EADDRINUSE:  # joining a group twice
        error = NetworkError(f"already set: {what}")
    else:
        reason = (exc.strerror or str(exc)).lower()
        error = NetworkError(f"{what} failed: {reason}")
    if isinstance(error, OSError):
        error.errno = code
    return error
