"""The HAProxy PROXY protocol, versions 1 (text) and 2 (binary), sans I/O.

A proxy puts one header in front of the stream it forwards, so the server
behind it learns the real client. ``encode_v1``/``encode_v2`` write one;
``parse_proxy_header`` reads one from the start of a buffer and returns it
with the number of bytes it took, ``None`` while the buffer is too short to
tell, and raises ``ProxyProtocolError`` for anything that is not a valid
header — garbage never passes for one.

Rules follow the HAProxy specification (proxy-protocol.txt): a v1 line is at
most 107 bytes including CRLF, with TCP4, TCP6 or UNKNOWN; v2 starts with a
12-byte signature, then version/command, family/transport, and a big-endian
length covering the addresses and any TLVs (which are skipped).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from .address import Address
from .errors import SocketeerError

__all__ = [
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyProtocolError",
    "encode_v1",
    "encode_v2",
    "parse_proxy_header",
]

V1_MAX: Final = 107
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED: Final = struct.Struct("!12sBBH")
_INET: Final = struct.Struct("!4s4sHH")
_INET6: Final = struct.Struct("!16s16sHH")
_UNIX: Final = struct.Struct("!108s108s")
_V2_MAX_LENGTH: Final = 65535


class ProxyProtocolError(SocketeerError, ValueError):
    """Bytes that are not a valid PROXY protocol header."""


class NothingSent(ProxyProtocolError):
    """The client closed before sending a byte: a load balancer's health check
    (a plain connect) looks like this, so it is worth a debug line, not a warning."""


def closed_before_header(buffer: bytes) -> ProxyProtocolError:
    """The error for a client that closed after sending ``buffer``, no header complete."""
    if not buffer:
        return NothingSent("connection closed before sending anything")
    return ProxyProtocolError("connection closed before a PROXY header")


@dataclass(frozen=True)
class ProxyHeader:
    """What a PROXY header says: who connected (``source``) to whom (``destination``).

    ``command`` is ``PROXY`` or ``LOCAL`` (a health check from the proxy
    itself: use the connection's own addresses); ``source`` and
    ``destination`` are None when the header carries none (LOCAL, UNKNOWN,
    or an unspecified family).
    """

    version: int
    command: str
    source: Address | None = None
    destination: Address | None = None


# -- writing ------------------------------------------------------------------------


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _inet_pair(source: Address, destination: Address) -> tuple[IP, IP]:
    try:
        src = ipaddress.ip_address(source.host)
        dst = ipaddress.ip_address(destination.host)
    except ValueError:
        raise ProxyProtocolError("PROXY addresses must be IP literals") from None
    if (
        isinstance(src, ipaddress.IPv6Address)
        and src.ipv4_mapped
        and isinstance(dst, ipaddress.IPv4Address)
    ):
        src = src.ipv4_mapped
    if src.version != dst.version:
        raise ProxyProtocolError("PROXY source and destination must be of one family")
    return src, dst


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """``PROXY TCP4 SRC DST SPORT DPORT\\r\\n`` (``PROXY UNKNOWN\\r\\n`` if not TCP over IP)."""
    if source is None or destination is None or not (source.is_inet and destination.is_inet):
        return b"PROXY UNKNOWN\r\n"
    src, dst = _inet_pair(source, destination)
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {source.port} {destination.port}\r\n".encode()


def encode_v2(source: Address | None, destination: Address | None, *, local: bool = False) -> bytes:
    """The binary header; ``local=True`` (or no addresses) sends a LOCAL command."""
    command = 0x20 | (0x0 if local else 0x1)
    if local or source is None or destination is None:
        return _V2_FIXED.pack(V2_SIGNATURE, command, 0x00, 0)
    dgram = source.is_datagram
    transport = 0x2 if dgram else 0x1
    if source.is_inet and destination.is_inet:
        src, dst = _inet_pair(source, destination)
        if src.version == 4:
            body = _INET.pack(src.packed, dst.packed, source.port, destination.port)
            family = 0x10
        else:
            body = _INET6.pack(src.packed, dst.packed, source.port, destination.port)
            family = 0x20
    elif source.is_unix and destination.is_unix:
        body = _UNIX.pack(_unix_bytes(source), _unix_bytes(destination))
        family = 0x30
    else:
        return _V2_FIXED.pack(V2_SIGNATURE, command, 0x00, 0)
    return _V2_FIXED.pack(V2_SIGNATURE, command, family | transport, len(body)) + body


def _unix_bytes(address: Address) -> bytes:
    raw = address.path.encode("utf-8", "surrogateescape")
    return b"\0" + raw if address.abstract else raw


# -- reading --------------------------------------------------------------------------


def parse_proxy_header(buf: bytes | bytearray | memoryview) -> tuple[ProxyHeader, int] | None:
    """The header at the start of ``buf`` and its length, or None if more bytes are needed.

    Raises:
        ProxyProtocolError: the bytes are not a valid v1 or v2 header.
    """
    data = bytes(buf[: max(V1_MAX, _V2_FIXED.size + _V2_MAX_LENGTH)])
    if data[:1] == b"P":
        if not b"PROXY ".startswith(data[:6]):
            raise ProxyProtocolError("missing PROXY header")
        return _parse_v1(data)
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyProtocolError("missing PROXY header (bad v2 signature)")
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyProtocolError("missing PROXY header")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyProtocolError("PROXY v1 line without CRLF within 107 bytes")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[0] == "PROXY" and parts[1] == "UNKNOWN":
        return ProxyHeader(1, "PROXY"), end + 2
    if len(parts) != 6 or parts[0] != "PROXY" or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line: {line[:60]!r}")
    _, family, src, dst, sport, dport = parts
    version = 4 if family == "TCP4" else 6
    source = Address("tcp", host=_v1_ip(src, version), port=_v1_port(sport))
    destination = Address("tcp", host=_v1_ip(dst, version), port=_v1_port(dport))
    return ProxyHeader(1, "PROXY", source, destination), end + 2


def _v1_ip(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"bad address in PROXY v1 line: {text!r}") from None
    if ip.version != version:
        raise ProxyProtocolError(f"{text} is not an IPv{version} address")
    return str(ip)


def _v1_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"bad port in PROXY v1 line: {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"port {port} above 65535 in PROXY v1 line")
    return port


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if len(data) < _V2_FIXED.size:
        return None
    _, ver_cmd, fam, length = _V2_FIXED.unpack_from(data)
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header with version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command}")
    total = _V2_FIXED.size + length
    if len(data) < total:
        return None
    body = data[_V2_FIXED.size : total]
    family, transport = fam >> 4, fam & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError(f"PROXY v2 header with unknown family/transport {fam:#04x}")
    if command == 0:
        return ProxyHeader(2, "LOCAL"), total
    scheme = "udp" if transport == 2 else "tcp"
    source = destination = None
    if family == 1:
        if length < _INET.size:
            raise ProxyProtocolError("PROXY v2 INET header too short for its addresses")
        src, dst, sport, dport = _INET.unpack_from(body)
        source = Address(scheme, host=str(ipaddress.IPv4Address(src)), port=sport)
        destination = Address(scheme, host=str(ipaddress.IPv4Address(dst)), port=dport)
    elif family == 2:
        if length < _INET6.size:
            raise ProxyProtocolError("PROXY v2 INET6 header too short for its addresses")
        src, dst, sport, dport = _INET6.unpack_from(body)
        source = Address(scheme, host=str(ipaddress.IPv6Address(src)), port=sport)
        destination = Address(scheme, host=str(ipaddress.IPv6Address(dst)), port=dport)
    elif family == 3:
        if length < _UNIX.size:
            raise ProxyProtocolError("PROXY v2 UNIX header too short for its addresses")
        src, dst = _UNIX.unpack_from(body)
        unix_scheme = "unix-dgram" if transport == 2 else "unix"
        source = _unix_address(unix_scheme, src)
        destination = _unix_address(unix_scheme, dst)
    return ProxyHeader(2, "PROXY", source, destination), total


def _unix_address(scheme: str, raw: bytes) -> Address | None:
    abstract = raw.startswith(b"\0")
    name = raw[1:] if abstract else raw
    name = name.split(b"\0", 1)[0]
    if not name:
        return None
    try:
        return Address(scheme, path=name.decode("utf-8", "surrogateescape"), abstract=abstract)
    except SocketeerError:
        raise ProxyProtocolError("PROXY v2 UNIX address is not a valid path") from None
