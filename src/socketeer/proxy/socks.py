"""SOCKS4, SOCKS4a and SOCKS5 messages and the client's handshakes, sans I/O.

Each message has a pure encoder and decoder, for the client's side (requests
out, replies in) and the server's (requests in, replies out), so a SOCKS
server can be built on the same functions. Decoders take the start of a
buffer and return the message with the bytes it took, or ``None`` while the
buffer is too short; ``*_size`` functions say how long the message starting
with a prefix is, so a reader never takes a byte past it.

The handshake classes (``Socks4Handshake``, ``Socks5Handshake``) drive a
client through the exchange: ``data_to_send()`` is what to write now,
``wanted()`` how many bytes to read at most next (0 once done), and
``receive_data(data)`` feeds what was read (``b""`` for EOF). They raise only
``ProxyError`` and its subclasses.

References: SOCKS4 (Ying-Da Lee, "SOCKS: A protocol for TCP proxy across
firewalls"), SOCKS4a ("SOCKS 4A: A Simple Extension to SOCKS 4 Protocol"),
RFC 1928 (SOCKS5) and RFC 1929 (its username/password authentication).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ..errors import ProxyAuthError, ProxyError, ProxyRefused, ProxyTargetUnreachable
from ._exchange import Exchange

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "SOCKS4_REPLIES",
    "SOCKS5_REPLIES",
    "Socks4Handshake",
    "Socks4Reply",
    "Socks4Request",
    "Socks5Handshake",
    "Socks5Message",
    "decode_socks4_reply",
    "decode_socks4_request",
    "decode_socks5_greeting",
    "decode_socks5_message",
    "decode_socks5_method",
    "decode_socks5_userpass",
    "decode_socks5_userpass_status",
    "encode_socks4_reply",
    "encode_socks4_request",
    "encode_socks5_greeting",
    "encode_socks5_message",
    "encode_socks5_method",
    "encode_socks5_userpass",
    "encode_socks5_userpass_status",
    "socks5_message_size",
]

CONNECT: Final = 1

# -- SOCKS4 and 4a ------------------------------------------------------------------

SOCKS4_GRANTED: Final = 0x5A
SOCKS4_REPLIES: Final = {
    0x5A: "request granted",
    0x5B: "request rejected or failed",
    0x5C: "request rejected: the proxy cannot reach the client's identd",
    0x5D: "request rejected: identd reports a different user id",
}
_SOCKS4_HEAD: Final = struct.Struct("!BBH4s")
SOCKS4_REPLY_SIZE: Final = 8
# A user id or name longer than this is not a SOCKS4 request we will read.
_SOCKS4_FIELD_MAX: Final = 255


@dataclass(frozen=True)
class Socks4Request:
    """``CONNECT`` to ``host`` (an IPv4 literal, or a name for 4a) and ``port``."""

    host: str
    port: int
    user_id: str = ""
    command: int = CONNECT


@dataclass(frozen=True)
class Socks4Reply:
    code: int
    host: str = "0.0.0.0"
    port: int = 0


def encode_socks4_request(request: Socks4Request) -> bytes:
    """A SOCKS4 request; a host that is not an IPv4 literal makes it SOCKS4a.

    Raises:
        ProxyError: a field cannot be encoded (a NUL, a name too long, a
            0.0.0.x target).
    """
    user = _field(request.user_id, "user id")
    try:
        ip = ipaddress.IPv4Address(request.host).packed
        name = b""
        if ip[:3] == b"\0\0\0" and ip[3]:
            # 0.0.0.x (x != 0) is SOCKS4a's "a name follows": as a target it
            # would be read as a name that is not there.
            raise ProxyError(f"{request.host} cannot be a SOCKS4 target (SOCKS4a's marker)")
    except ValueError:
        ip = b"\0\0\0\1"  # 0.0.0.x, x != 0: "the name follows" (4a)
        name = _field(request.host, "host name") + b"\0"
        if name == b"\0":
            raise ProxyError("SOCKS4a needs a host name") from None
    return _SOCKS4_HEAD.pack(4, request.command, request.port, ip) + user + b"\0" + name


def decode_socks4_request(buf: bytes | bytearray) -> tuple[Socks4Request, int] | None:
    """A SOCKS4/4a request from the start of ``buf`` (the server's side).

    Raises:
        ProxyError: not a SOCKS4 request.
    """
    if len(buf) < _SOCKS4_HEAD.size:
        return None
    version, command, port, ip = _SOCKS4_HEAD.unpack_from(buf)
    if version != 4:
        raise ProxyError(f"not a SOCKS4 request (version {version})")
    found = _nul_field(buf, _SOCKS4_HEAD.size)
    if found is None:
        return None
    user, end = found
    host = str(ipaddress.IPv4Address(ip))
    if ip[:3] == b"\0\0\0" and ip[3]:
        found = _nul_field(buf, end)
        if found is None:
            return None
        host, end = found
        if not host:
            raise ProxyError("SOCKS4a request with an empty host name")
    return Socks4Request(host, port, user, command), end


def encode_socks4_reply(reply: Socks4Reply) -> bytes:
    ip = ipaddress.IPv4Address(reply.host).packed
    return _SOCKS4_HEAD.pack(0, reply.code, reply.port, ip)


def decode_socks4_reply(buf: bytes | bytearray) -> tuple[Socks4Reply, int] | None:
    """A SOCKS4 reply (always 8 bytes) from the start of ``buf``.

    Raises:
        ProxyError: not a SOCKS4 reply.
    """
    if len(buf) < SOCKS4_REPLY_SIZE:
        return None
    version, code, port, ip = _SOCKS4_HEAD.unpack_from(buf)
    if version not in (0, 4):  # the protocol says 0; some servers echo 4
        raise ProxyError(f"not a SOCKS4 reply (version byte {version})")
    if code not in SOCKS4_REPLIES:
        raise ProxyError(f"not a SOCKS4 reply (unknown reply code {code:#04x})")
    return Socks4Reply(code, str(ipaddress.IPv4Address(ip)), port), SOCKS4_REPLY_SIZE


def _field(text: str, what: str) -> bytes:
    data = text.encode()
    if b"\0" in data:
        raise ProxyError(f"a SOCKS {what} cannot contain a NUL byte")
    if len(data) > _SOCKS4_FIELD_MAX:
        raise ProxyError(f"a SOCKS {what} is at most {_SOCKS4_FIELD_MAX} bytes")
    return data


def _nul_field(buf: bytes | bytearray, start: int) -> tuple[str, int] | None:
    end = buf.find(b"\0", start, start + _SOCKS4_FIELD_MAX + 1)
    if end < 0:
        if len(buf) - start > _SOCKS4_FIELD_MAX:
            raise ProxyError(f"SOCKS4 field longer than {_SOCKS4_FIELD_MAX} bytes")
        return None
    try:
        return bytes(buf[start:end]).decode(), end + 1
    except UnicodeDecodeError:
        raise ProxyError("SOCKS4 field is not UTF-8") from None


# -- SOCKS5 -------------------------------------------------------------------------

NO_AUTH: Final = 0x00
USERPASS: Final = 0x02
NO_ACCEPTABLE: Final = 0xFF
ATYP_IPV4: Final = 1
ATYP_NAME: Final = 3
ATYP_IPV6: Final = 4
SOCKS5_REPLIES: Final = {  # RFC 1928 §6
    0: "succeeded",
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}
# The replies that say the proxy could not reach the target (not that it refused us).
SOCKS5_TARGET_UNREACHABLE: Final = frozenset({3, 4, 5, 6})


@dataclass(frozen=True)
class Socks5Message:
    """A request (``code`` is the command) or a reply (``code`` is the reply code).

    RFC 1928 gives both the same layout: VER, CODE, RSV, ATYP, ADDR, PORT.
    ``host`` is an IP literal or, with ATYP 3, a name.
    """

    code: int
    host: str
    port: int


def encode_socks5_greeting(methods: tuple[int, ...] | list[int]) -> bytes:
    return bytes([5, len(methods), *methods])


def decode_socks5_greeting(buf: bytes | bytearray) -> tuple[tuple[int, ...], int] | None:
    """The client's offered methods (the server's side).

    Raises:
        ProxyError: not a SOCKS5 greeting.
    """
    if len(buf) < 2:
        return None
    if buf[0] != 5:
        raise ProxyError(f"not a SOCKS5 greeting (version {buf[0]})")
    end = 2 + buf[1]
    if buf[1] == 0:
        raise ProxyError("SOCKS5 greeting offers no method")
    if len(buf) < end:
        return None
    return tuple(buf[2:end]), end


def encode_socks5_method(method: int) -> bytes:
    return bytes([5, method])


def decode_socks5_method(buf: bytes | bytearray) -> tuple[int, int] | None:
    """The server's chosen method (0xFF: none of those offered).

    Raises:
        ProxyError: not a SOCKS5 method selection.
    """
    if len(buf) < 2:
        return None
    if buf[0] != 5:
        raise ProxyError(f"not a SOCKS5 proxy (its answer starts with {bytes(buf[:2])!r})")
    return buf[1], 2


def encode_socks5_userpass(username: str, password: str) -> bytes:
    """RFC 1929: VER 1, ULEN, UNAME, PLEN, PASSWD (an empty password is sent as PLEN 0).

    Raises:
        ProxyError: an empty user name, or a field longer than 255 bytes.
    """
    user, secret = username.encode(), password.encode()
    if not 0 < len(user) < 256 or len(secret) > 255:
        raise ProxyError("a SOCKS5 user name is 1 to 255 bytes, a password at most 255")
    return bytes([1, len(user)]) + user + bytes([len(secret)]) + secret


def decode_socks5_userpass(buf: bytes | bytearray) -> tuple[tuple[str, str], int] | None:
    """The client's user name and password (the server's side).

    Raises:
        ProxyError: not an RFC 1929 request.
    """
    if len(buf) < 2:
        return None
    if buf[0] != 1:
        raise ProxyError(f"not a SOCKS5 username/password request (version {buf[0]})")
    ulen = buf[1]
    if len(buf) < 3 + ulen:
        return None
    plen = buf[2 + ulen]
    end = 3 + ulen + plen
    if len(buf) < end:
        return None
    try:
        user = bytes(buf[2 : 2 + ulen]).decode()
        secret = bytes(buf[3 + ulen : end]).decode()
    except UnicodeDecodeError:
        raise ProxyError("SOCKS5 user name or password is not UTF-8") from None
    return (user, secret), end


def encode_socks5_userpass_status(ok: bool) -> bytes:
    return bytes([1, 0 if ok else 1])


def decode_socks5_userpass_status(buf: bytes | bytearray) -> tuple[bool, int] | None:
    """Whether the server accepted the credentials.

    Raises:
        ProxyError: not an RFC 1929 status.
    """
    if len(buf) < 2:
        return None
    # RFC 1929 says version 1; some servers answer with 5.
    if buf[0] not in (1, 5):
        raise ProxyError(f"not a SOCKS5 authentication status (version {buf[0]})")
    return buf[1] == 0, 2


def socks5_message_size(prefix: bytes | bytearray) -> int:
    """The length of the request or reply that starts with ``prefix``, as far as it tells.

    A lower bound until the prefix reaches the address type (and, for a name,
    its length byte); exact from then on.

    Raises:
        ProxyError: an unknown address type.
    """
    if len(prefix) < 4:
        return 5  # enough to learn the address type, and a name's length: no message is shorter
    atyp = prefix[3]
    if atyp == ATYP_IPV4:
        return 10
    if atyp == ATYP_IPV6:
        return 22
    if atyp == ATYP_NAME:
        return 7 + prefix[4] if len(prefix) >= 5 else 5
    raise ProxyError(f"not a SOCKS5 message (address type {atyp})")


def encode_socks5_message(message: Socks5Message) -> bytes:
    """A request or reply; ``host`` an IP literal or a name (sent as ATYP 3).

    Raises:
        ProxyError: a name longer than 255 bytes, or empty.
    """
    try:
        ip = ipaddress.ip_address(message.host)
    except ValueError:
        name = message.host.encode("idna") if not message.host.isascii() else message.host.encode()
        if not 0 < len(name) < 256:
            raise ProxyError(f"a SOCKS5 host name is 1 to 255 bytes: {message.host!r}") from None
        addr = bytes([ATYP_NAME, len(name)]) + name
    else:
        addr = bytes([ATYP_IPV4 if ip.version == 4 else ATYP_IPV6]) + ip.packed
    return bytes([5, message.code, 0]) + addr + struct.pack("!H", message.port)


def decode_socks5_message(buf: bytes | bytearray) -> tuple[Socks5Message, int] | None:
    """A request or reply from the start of ``buf``.

    Raises:
        ProxyError: not a SOCKS5 request or reply.
    """
    if len(buf) < 4:
        return None
    if buf[0] != 5:
        raise ProxyError(f"not a SOCKS5 reply (version {buf[0]})")
    size = socks5_message_size(buf)
    if len(buf) < size:
        return None
    atyp = buf[3]
    if atyp == ATYP_IPV4:
        host = str(ipaddress.IPv4Address(bytes(buf[4:8])))
    elif atyp == ATYP_IPV6:
        host = str(ipaddress.IPv6Address(bytes(buf[4:20])))
    else:
        try:
            host = bytes(buf[5 : size - 2]).decode("ascii")
        except UnicodeDecodeError:
            raise ProxyError("SOCKS5 host name is not ASCII") from None
    (port,) = struct.unpack_from("!H", buf, size - 2)
    return Socks5Message(buf[1], host, port), size


# -- the client's handshakes -----------------------------------------------------------


class _Handshake(Exchange):
    """What every client handshake shares: the feed discipline, and errors that name
    the proxy (without its password) and the target."""

    def __init__(self, proxy: str, target: str) -> None:
        super().__init__()
        self._proxy = proxy  # for messages only: the proxy URL without its password
        self._target = target

    def _late(self) -> ProxyError:
        return ProxyError(f"proxy {self._proxy}: data after the handshake was done")

    def _closed_early(self) -> None:
        raise ProxyError(
            f"proxy {self._proxy} closed the connection during the handshake for {self._target}"
        )

    def _overfed(self) -> ProxyError:
        return ProxyError(f"proxy {self._proxy}: read more than the handshake wanted")

    def _invalid(self, exc: ProxyError) -> ProxyError:
        return ProxyError(f"proxy {self._proxy}: {exc} (while connecting to {self._target})")

    def _refused(self, kind: type[ProxyRefused], code: int, meaning: str, label: str) -> Exception:
        if kind is ProxyTargetUnreachable:
            message = f"target unreachable through proxy {self._proxy}: {self._target}"
        else:
            message = f"proxy {self._proxy} refused {self._target}"
        return kind(f"{message}: {meaning} ({label})", code=code, meaning=meaning)


class Socks4Handshake(_Handshake):
    """SOCKS4 (``host`` an IPv4 literal) or SOCKS4a (``host`` a name the proxy resolves)."""

    def __init__(self, host: str, port: int, *, user_id: str = "", proxy: str, target: str) -> None:
        super().__init__(proxy, target)
        try:
            self._out += encode_socks4_request(Socks4Request(host, port, user_id))
        except ProxyError as exc:
            raise self._invalid(exc) from None

    def wanted(self) -> int:
        return 0 if self._over else SOCKS4_REPLY_SIZE - len(self._in)

    def _advance(self) -> None:
        try:
            decoded = decode_socks4_reply(self._in)
        except ProxyError as exc:
            raise self._invalid(exc) from None
        if decoded is None:
            return
        reply, _ = decoded
        self._over = True
        if reply.code != SOCKS4_GRANTED:
            label = f"SOCKS4 reply {reply.code:#04x}"
            raise self._refused(ProxyRefused, reply.code, SOCKS4_REPLIES[reply.code], label)


class Socks5Handshake(_Handshake):
    """SOCKS5 CONNECT: method selection, optional RFC 1929 login, the request.

    ``host`` is an IP literal (``socks5``, resolved here) or a name (``socks5h``).
    No step is sent before the proxy answered the previous one: some servers
    drop a client that runs ahead.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        proxy: str,
        target: str,
    ) -> None:
        super().__init__(proxy, target)
        self._credentials = None if username is None else (username, password or "")
        try:
            self._request = encode_socks5_message(Socks5Message(CONNECT, host, port))
            if self._credentials is not None:
                self._login = encode_socks5_userpass(*self._credentials)
        except ProxyError as exc:
            raise self._invalid(exc) from None
        methods = [NO_AUTH] if self._credentials is None else [NO_AUTH, USERPASS]
        self._out += encode_socks5_greeting(methods)
        self._step = "method"

    def wanted(self) -> int:
        if self._over:
            return 0
        if self._step == "reply":
            try:
                return socks5_message_size(self._in) - len(self._in)
            except ProxyError:
                return 0  # _advance has raised already
        return 2 - len(self._in)

    def _advance(self) -> None:
        try:
            self._advance_step()
        except ProxyRefused:
            raise
        except ProxyError as exc:
            raise self._invalid(exc) from None

    def _advance_step(self) -> None:
        if self._step == "method":
            method = decode_socks5_method(self._in)
            if method is None:
                return
            self._in.clear()
            self._choose(method[0])
        elif self._step == "login":
            status = decode_socks5_userpass_status(self._in)
            if status is None:
                return
            code = self._in[1]
            self._in.clear()
            if not status[0]:
                self._over = True
                raise ProxyAuthError(
                    f"proxy authentication failed: {self._proxy} rejected the user name "
                    f"and password (for {self._target}, SOCKS5 login status {code})",
                    code=code,
                    meaning="username/password rejected",
                )
            self._out += self._request
            self._step = "reply"
        else:
            decoded = decode_socks5_message(self._in)
            if decoded is None:
                return
            reply, _ = decoded
            self._over = True
            if reply.code != 0:
                meaning = SOCKS5_REPLIES.get(reply.code, "unknown reply code")
                kind = (
                    ProxyTargetUnreachable
                    if reply.code in SOCKS5_TARGET_UNREACHABLE
                    else ProxyRefused
                )
                raise self._refused(kind, reply.code, meaning, f"SOCKS5 reply {reply.code}")

    def _choose(self, method: int) -> None:
        if method == NO_AUTH:
            self._out += self._request
            self._step = "reply"
        elif method == USERPASS and self._credentials is not None:
            self._out += self._login
            self._step = "login"
        else:
            self._over = True
            if method != NO_ACCEPTABLE:
                wants = f"chose a method that was not offered ({method:#04x})"
            elif self._credentials is None:
                wants = "wants a user name and password, none given"
            else:
                wants = "accepts neither no authentication nor username/password"
            raise ProxyAuthError(
                f"proxy authentication failed: {self._proxy} {wants} "
                f"(for {self._target}, SOCKS5 method {method:#04x})",
                code=method,
                meaning="no acceptable authentication method",
            )
