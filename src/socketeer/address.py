"""The address grammar of SPEC §1: one parser and one canonical form.

Pure: no sockets, no DNS. Turning an ``Address`` into socket addresses
(resolution) is the I/O layer's job (``_sockio``), so this module can be
tested and fuzzed without touching the network.

    >>> Address.parse("localhost:8080")
    Address.parse('tcp://localhost:8080')
    >>> str(Address.parse("[0:0::1]:80"))
    'tcp://[::1]:80'
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, replace

from .errors import AddressError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["ACCEPTED_FORMS", "Address"]

ACCEPTED_FORMS: Final = (
    "tcp://HOST:PORT, tcp4://HOST:PORT, tcp6://HOST:PORT, udp://HOST:PORT, udp4://, udp6://, "
    "tls://HOST:PORT, unix:PATH, unix:@NAME, unix-dgram:PATH, unix-dgram:@NAME, "
    "HOST:PORT, :PORT, PORT, [IPv6]:PORT, fd:N, systemd:"
)

INET_SCHEMES: Final = frozenset({"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "tls"})
UNIX_SCHEMES: Final = frozenset({"unix", "unix-dgram"})
STREAM_SCHEMES: Final = frozenset({"tcp", "tcp4", "tcp6", "tls", "unix", "fd"})
DATAGRAM_SCHEMES: Final = frozenset({"udp", "udp4", "udp6", "unix-dgram"})

# sun_path is 108 bytes on Linux and 104 on the BSDs and macOS, NUL included;
# an abstract name spends its first byte on the leading NUL instead.
UNIX_PATH_MAX: Final = 107 if sys.platform.startswith("linux") else 103

_HOSTNAME = re.compile(
    r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?", re.ASCII
)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
# Exactly what ipaddress.IPv4Address accepts (no leading zeros), several times
# faster: every accepted connection builds two addresses.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)
_FD = re.compile(r"[0-9]{1,9}", re.ASCII)


@dataclass(frozen=True)
class Address:
    """A socket address of any kind socketeer speaks.

    ``host`` is a name or an IP literal (IPv6 without brackets), ``""`` meaning
    all interfaces; ``path`` is a filesystem path, or an abstract name when
    ``abstract`` is true; ``fd`` is an inherited descriptor (``fd:3``).
    Construct with ``Address.parse``; direct construction is validated too.
    """

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""
    abstract: bool = False
    fd: int = -1

    def __post_init__(self) -> None:
        reason = self._invalid_reason()
        if reason:
            error = AddressError(_message(self._describe(), reason))
            error.reason = reason  # type: ignore[attr-defined]
            raise error

    # -- parsing ------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | Address) -> Address:
        """Parse one of the forms of SPEC §1 (an ``Address`` is returned as is).

        Raises:
            AddressError: the text is not an address; the message lists the forms.
        """
        if isinstance(text, Address):
            return text
        if not isinstance(text, str):
            raise AddressError(_message(repr(text), "an address must be a string"))
        try:
            return _parse(text)
        except AddressError as exc:
            reason = getattr(exc, "reason", str(exc))
            raise AddressError(_message(repr(text), reason)) from None

    # -- canonical form -----------------------------------------------------

    def __str__(self) -> str:
        if self.scheme in INET_SCHEMES:
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"{self.scheme}://{host}:{self.port}"
        if self.scheme in UNIX_SCHEMES:
            if self.abstract:
                return f"{self.scheme}:@{self.path}"
            # "unix://PATH" and "unix:PATH" both parse; a path that itself starts
            # with "//" needs the long form to survive a round trip.
            sep = "://" if self.path.startswith("//") else ":"
            return f"{self.scheme}{sep}{self.path}"
        return f"fd:{self.fd}"

    def __repr__(self) -> str:
        return f"Address.parse({str(self)!r})"

    # -- what kind of socket ------------------------------------------------

    @property
    def is_inet(self) -> bool:
        return self.scheme in INET_SCHEMES

    @property
    def is_unix(self) -> bool:
        return self.scheme in UNIX_SCHEMES

    @property
    def is_stream(self) -> bool:
        return self.scheme in STREAM_SCHEMES

    @property
    def is_datagram(self) -> bool:
        return self.scheme in DATAGRAM_SCHEMES

    @property
    def is_tls(self) -> bool:
        return self.scheme == "tls"

    def _literal_version(self) -> int | None:
        """4 or 6 when the host is an IP literal (the fast check for dotted quads first)."""
        if _IPV4.fullmatch(self.host):
            return 4
        try:
            return ipaddress.ip_address(self.host.split("%", 1)[0]).version
        except ValueError:
            return None

    @property
    def is_ip_literal(self) -> bool:
        """Whether the host is an IP address, not a name: nothing to look up."""
        return self._literal_version() is not None

    @property
    def ip_version(self) -> int | None:
        """4 or 6 when the scheme (tcp4, udp6, ...) or an IP literal forces one."""
        if self.scheme.endswith("4"):
            return 4
        if self.scheme.endswith("6"):
            return 6
        return self._literal_version()

    def with_port(self, port: int) -> Address:
        return replace(self, port=port)

    # -- validation ---------------------------------------------------------

    def _describe(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"Address({fields})"

    def _invalid_reason(self) -> str | None:
        if self.scheme in INET_SCHEMES:
            if self.path or self.abstract or self.fd != -1:
                return "an Internet address has no path or descriptor"
            if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
                return f"port {self.port!r} is out of range 0-65535"
            return _host_reason(self.scheme, self.host)
        if self.scheme in UNIX_SCHEMES:
            if self.host or self.port or self.fd != -1:
                return "a Unix address has no host, port or descriptor"
            return _path_reason(self.path, self.abstract)
        if self.scheme == "fd":
            if self.host or self.port or self.path or self.abstract:
                return "an fd address has only a descriptor number"
            if not isinstance(self.fd, int) or self.fd < 0:
                return f"descriptor {self.fd!r} must be a number >= 0"
            return None
        return f"unknown scheme {self.scheme!r}"


def _message(text: str, reason: str) -> str:
    return f"bad address {text}: {reason} (accepted forms: {ACCEPTED_FORMS})"


def _host_reason(scheme: str, host: object) -> str | None:
    if not isinstance(host, str):
        return "host must be a string"
    if host == "":
        return None
    if ":" in host:
        if scheme.endswith("4"):
            return f"{scheme} needs an IPv4 address or a name, not {host!r}"
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        if str(ip6) != host:
            return f"IPv6 address not in canonical form: {host!r} (write {ip6})"
        return None
    if _IPV4.fullmatch(host):
        if scheme.endswith("6"):
            return f"{scheme} needs an IPv6 address or a name, not {host!r}"
        return None
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        return f"{host!r} is not a host name or IP address"
    if host != host.lower():
        return f"host name not in canonical form: {host!r} (write {host.lower()})"
    return None


def _path_reason(path: object, abstract: bool) -> str | None:
    if not isinstance(path, str):
        return "path must be a string"
    if path == "":
        return "empty abstract name" if abstract else "empty path"
    if "\0" in path:
        return "a path cannot contain a NUL byte"
    if not abstract and path.startswith("@"):
        return f"a path starting with '@' names an abstract socket (write ./{path} for a file)"
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        kind = "abstract name" if abstract else "Unix socket path"
        return f"{kind} is {size} bytes, longer than the {UNIX_PATH_MAX} this OS allows"
    return None


def _parse(text: str) -> Address:
    if text == "":
        raise AddressError("empty address")
    head, sep, rest = text.partition("://")
    if sep and head.lower() in INET_SCHEMES:
        return _parse_inet(head.lower(), rest, shorthand=False)
    if sep and head.lower() in UNIX_SCHEMES:
        return _parse_unix(head.lower(), rest)
    for scheme in ("unix-dgram", "unix"):
        if text[: len(scheme) + 1].lower() == scheme + ":":
            return _parse_unix(scheme, text[len(scheme) + 1 :])
    lowered = text.lower()
    if lowered == "systemd:":
        return Address("fd", fd=3)  # SD_LISTEN_FDS_START
    if lowered.startswith("fd:"):
        number = text[3:]
        if not _FD.fullmatch(number):
            raise AddressError(f"descriptor {number!r} is not a number")
        return Address("fd", fd=int(number))
    if sep:
        raise AddressError(f"unknown scheme {head!r}")
    if text.partition(":")[0].lower() in INET_SCHEMES:
        raise AddressError("missing '//' after the scheme (write SCHEME://HOST:PORT)")
    if _PORT.fullmatch(text):  # "8080": TCP on all interfaces
        return Address("tcp", port=_port(text))
    return _parse_inet("tcp", text, shorthand=True)


def _parse_unix(scheme: str, rest: str) -> Address:
    if rest.startswith("@"):
        return Address(scheme, path=rest[1:], abstract=True)
    return Address(scheme, path=rest)


def _parse_inet(scheme: str, rest: str, *, shorthand: bool) -> Address:
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise AddressError("unbalanced brackets")
        host, tail = rest[1:close], rest[close + 1 :]
        if "[" in host or "]" in tail or "[" in tail:
            raise AddressError("unbalanced brackets")
        if not tail.startswith(":"):
            raise AddressError("missing port after ']' (write [IPv6]:PORT)")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise AddressError(f"{host!r} is not an IPv6 address") from None
        return Address(scheme, host=host, port=_port(tail[1:]))
    if "[" in rest or "]" in rest:
        raise AddressError("unbalanced brackets")
    if ":" not in rest:
        what = "a scheme or port" if shorthand else "a port"
        raise AddressError(f"missing {what} (write HOST:PORT)")
    host, _, port = rest.rpartition(":")
    if ":" in host:
        raise AddressError("IPv6 literals must be in brackets: [ADDRESS]:PORT")
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        host = host.lower()
    return Address(scheme, host=host, port=_port(port))


def _port(text: str) -> int:
    if text == "":
        raise AddressError("missing port")
    if not _PORT.fullmatch(text):
        raise AddressError(f"port {text!r} is not a number")
    port = int(text)
    if port > 65535:
        raise AddressError(f"port {port} is above 65535")
    return port
