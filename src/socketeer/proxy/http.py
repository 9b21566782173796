"""HTTP CONNECT (RFC 9110 §9.3.6) messages and the client's handshake, sans I/O.

The request and the response head each have a pure encoder and parser, for
the client's side and for a proxy server's. ``HeadReader`` collects a message
head up to its blank line and says how many bytes it can take next without
reading past that line, so the first bytes the target sends stay in the
socket for the caller.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field

from ..errors import ProxyAuthError, ProxyError, ProxyRefused, ProxyTargetUnreachable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "ConnectRequest",
    "HeadReader",
    "HttpConnectHandshake",
    "Response",
    "basic_credentials",
    "encode_connect_request",
    "encode_response",
    "parse_connect_request",
    "parse_response",
]

END: Final = b"\r\n\r\n"
MAX_HEAD: Final = 16384
# The statuses that say the proxy could not reach the target (RFC 9110 §15.6).
TARGET_UNREACHABLE: Final = frozenset({502, 503, 504})
# 407 is the proxy's "authenticate"; tinyproxy answers wrong credentials with 401.
AUTH_FAILED: Final = frozenset({401, 407})
_REASON_MAX: Final = 120


@dataclass(frozen=True)
class ConnectRequest:
    """``CONNECT host:port``; ``credentials`` from Proxy-Authorization: Basic, if any."""

    host: str
    port: int
    credentials: tuple[str, str] | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    version: str = "HTTP/1.1"
    headers: tuple[tuple[str, str], ...] = ()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def basic_credentials(username: str, password: str) -> str:
    """The value of a Basic authorization header (RFC 7617, UTF-8)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def encode_connect_request(
    host: str, port: int, *, username: str | None = None, password: str | None = None
) -> bytes:
    """The CONNECT request head, Basic credentials included when a user name is given.

    Raises:
        ProxyError: the host or a credential holds a line break or a NUL.
    """
    for text in (host, username or "", password or ""):
        if any(c in text for c in "\r\n\0"):
            raise ProxyError("an HTTP CONNECT field cannot hold CR, LF or NUL")
    authority = _authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if username is not None:
        lines.append(f"Proxy-Authorization: {basic_credentials(username, password or '')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _split_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    if not head.endswith(END):
        raise ProxyError("an HTTP head ends with an empty line")
    try:
        text = head[: -len(END)].decode("iso-8859-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise ProxyError("not an HTTP head") from None
    first, *rest = text.split("\r\n")
    headers = []
    for line in rest:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProxyError(f"malformed HTTP header line {_printable(line)!r}")
        headers.append((name, value.strip()))
    return first, headers


def parse_connect_request(head: bytes) -> ConnectRequest:
    """A CONNECT request head, blank line included (a proxy server's side).

    Raises:
        ProxyError: not a CONNECT request for HOST:PORT.
    """
    first, headers = _split_head(head)
    parts = first.split(" ")
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        raise ProxyError(f"not an HTTP CONNECT request: {_printable(first)!r}")
    host, sep, port_text = parts[1].rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
        raise ProxyError(f"CONNECT needs HOST:PORT, not {_printable(parts[1])!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ProxyError(f"not an IPv6 address: {_printable(host)!r}") from None
    credentials = None
    for name, value in headers:
        if name.lower() == "proxy-authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(token.strip(), validate=True).decode()
                except (ValueError, UnicodeDecodeError):
                    raise ProxyError("malformed Basic credentials") from None
                user, _, secret = decoded.partition(":")
                credentials = (user, secret)
    return ConnectRequest(host, int(port_text), credentials, tuple(headers))


def encode_response(response: Response) -> bytes:
    lines = [f"{response.version} {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")


def parse_response(head: bytes) -> Response:
    """A response head, blank line included.

    Raises:
        ProxyError: not an HTTP/1.x response.
    """
    first, headers = _split_head(head)
    version, _, rest = first.partition(" ")
    status_text, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.0", "HTTP/1.1") or len(status_text) != 3:
        raise ProxyError(f"not an HTTP proxy (it answered {_printable(first)!r})")
    if not status_text.isdigit() or not status_text.isascii():
        raise ProxyError(f"not an HTTP status line: {_printable(first)!r}")
    return Response(int(status_text), _printable(reason), version, tuple(headers))


def _printable(text: str) -> str:
    """Text from the network, made safe for a one-line message."""
    clean = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return clean if len(clean) <= _REASON_MAX else clean[:_REASON_MAX] + "..."


class HeadReader:
    """Collects an HTTP head byte-exactly: it never asks for a byte past the blank line."""

    def __init__(self, max_size: int = MAX_HEAD) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._head: bytes | None = None

    def wanted(self) -> int:
        """How many bytes may be read now without going past the head (0 once it is complete).

        The terminator can end no sooner than after ``4 - k`` more bytes, where
        ``k`` is the length of its longest prefix the buffer already ends with.
        """
        if self._head is not None:
            return 0
        tail = bytes(self._buf[-3:])
        for k in (3, 2, 1):
            if tail.endswith(END[:k]):
                return len(END) - k
        return len(END)

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes (at most ``wanted()``); the whole head once its blank line is in.

        Raises:
            ProxyError: the head is longer than the limit, or more was fed than wanted.
        """
        if len(data) > self.wanted():
            raise ProxyError("fed an HTTP head more than it asked for")
        self._buf += data
        if self._buf.endswith(END):
            self._head = bytes(self._buf)
            return self._head
        if len(self._buf) > self._max:
            raise ProxyError(f"HTTP head longer than {self._max} bytes")
        return None


class HttpConnectHandshake:
    """The client's CONNECT exchange, shaped like the SOCKS handshakes.

    A 1xx interim response is skipped; 2xx opens the tunnel; anything else
    raises the matching ``ProxyRefused``.
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
        self._proxy = proxy
        self._target = target
        self._has_credentials = username is not None
        try:
            self._out = encode_connect_request(host, port, username=username, password=password)
        except ProxyError as exc:
            raise ProxyError(f"proxy {proxy}: {exc} (while connecting to {target})") from None
        self._reader = HeadReader()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def wanted(self) -> int:
        return 0 if self._done else self._reader.wanted()

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the proxy; ``b""`` means it closed the connection.

        Raises:
            ProxyError: the proxy closed early, broke the protocol or refused.
        """
        if self._done:
            raise ProxyError(f"proxy {self._proxy}: data after the handshake was done")
        if not data:
            raise ProxyError(
                f"proxy {self._proxy} closed the connection during the handshake for {self._target}"
            )
        try:
            head = self._reader.feed(data)
            if head is None:
                return
            response = parse_response(head)
        except ProxyError as exc:
            where = f"proxy {self._proxy}: {exc} (while connecting to {self._target})"
            raise ProxyError(where) from None
        if 100 <= response.status < 200:
            self._reader = HeadReader()  # an interim response: the real one follows
            return
        self._done = True
        if 200 <= response.status < 300:
            return
        raise self._refusal(response)

    def _refusal(self, response: Response) -> ProxyRefused:
        meaning = response.reason or f"status {response.status}"
        label = f"HTTP {response.status}"
        if response.status in AUTH_FAILED:
            why = "rejected the credentials" if self._has_credentials else "wants credentials"
            return ProxyAuthError(
                f"proxy authentication failed: {self._proxy} {why} "
                f"(for {self._target}, {label} {meaning})",
                code=response.status,
                meaning=meaning,
            )
        kind: type[ProxyRefused] = ProxyRefused
        message = f"proxy {self._proxy} refused {self._target}"
        if _target_unreachable(response):
            kind = ProxyTargetUnreachable
            message = f"target unreachable through proxy {self._proxy}: {self._target}"
        return kind(f"{message}: {meaning} ({label})", code=response.status, meaning=meaning)


def _target_unreachable(response: Response) -> bool:
    # RFC 9110 §15.6: 502/503/504 from a gateway that could not reach the
    # next hop. tinyproxy says it with "500 Unable to connect" (reqs.c).
    if response.status in TARGET_UNREACHABLE:
        return True
    return response.status == 500 and response.reason.lower().startswith("unable to connect")
