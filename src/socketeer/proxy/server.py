"""The proxy server's side of SOCKS5 and HTTP CONNECT, sans I/O.

Built on the message encoders and decoders of ``socks`` and ``http``, shaped
like the client's handshakes: ``wanted()`` is how many bytes to read at most
next (never past the client's request, so the first bytes of the tunnel stay
in the socket), ``receive_data(data)`` feeds them (``b""`` for EOF),
``data_to_send()`` is what to write now. Once ``request`` is set the caller
decides where the client may go, opens it, and answers with ``reply``.

A client that breaks the protocol makes ``receive_data`` raise ``ProxyError``;
a request the server answers with a refusal of its own (no acceptable
method, a bad password, BIND or UDP ASSOCIATE, an unknown address type, a
plain GET) queues that answer first and raises ``ProxyRefused`` (its
``code`` is the SOCKS reply or HTTP status): the caller sends
``data_to_send()`` and closes either way.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from ..errors import ProxyAuthError, ProxyError, ProxyRefused
from . import http, socks
from ._exchange import Exchange

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "HTTP_METHODS",
    "HttpProxyHandshake",
    "Socks5ServerHandshake",
    "check_password",
]

#: RFC 1928 §6 codes the server answers with.
SUCCEEDED: Final = 0
GENERAL_FAILURE: Final = 1
NOT_ALLOWED: Final = 2
NETWORK_UNREACHABLE: Final = 3
HOST_UNREACHABLE: Final = 4
CONNECTION_REFUSED: Final = 5
COMMAND_NOT_SUPPORTED: Final = 7
ADDRESS_TYPE_NOT_SUPPORTED: Final = 8

#: Methods an HTTP proxy knows but refuses (405, only CONNECT is allowed);
#: anything else is 501 Not Implemented (RFC 9110 §15.5.6, §15.6.2).
HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"}
)
REALM: Final = "socketeer"


def check_password(users: Mapping[str, str], username: str, password: str) -> bool:
    """Whether the pair is one of ``users``, compared in constant time (no timing oracle)."""
    expected = users.get(username)
    # Compare against something even for an unknown user, so both cost the same.
    candidate = (expected if expected is not None else password + "\0").encode()
    return hmac.compare_digest(candidate, password.encode()) and expected is not None


class _ServerHandshake(Exchange):
    """The feed discipline, and the request once it is in; a broken or refused
    exchange is over at once (nothing more is read)."""

    def __init__(self) -> None:
        super().__init__()
        #: ``(host, port)`` the client asks for, once its request is complete.
        self.request: tuple[str, int] | None = None
        #: The user name it logged in with (None: no login).
        self.username: str | None = None

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client (at most ``wanted()``); ``b""`` means EOF.

        Raises:
            ProxyError: the client closed early or broke the protocol.
            ProxyRefused: refused (its answer is queued in ``data_to_send``).
        """
        try:
            super().receive_data(data)
        except ProxyError:
            self._over = True  # broken or refused: nothing more is read
            raise

    def _taking_no_more(self) -> bool:
        return self._over or self.request is not None

    def _late(self) -> ProxyError:
        return ProxyError("client sent data before the proxy answered")

    def _closed_early(self) -> None:
        raise ProxyError("client closed the connection during the proxy handshake")

    def _overfed(self) -> ProxyError:
        return ProxyError("fed the proxy handshake more than it asked for")

    def _refuse(self, answer: bytes, error: ProxyRefused) -> ProxyRefused:
        self._out += answer
        self._over = True
        return error


class Socks5ServerHandshake(_ServerHandshake):
    """SOCKS5 CONNECT, the server's side (RFC 1928), RFC 1929 login when ``users`` is set.

    With ``users`` the client must offer username/password and give a pair
    from the mapping; without, only "no authentication" is chosen.
    """

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.users = dict(users) if users else None
        self._step = "greeting"

    def wanted(self) -> int:
        if self._taking_no_more():
            return 0
        buf = self._in
        if self._step == "greeting":
            return 2 - len(buf) if len(buf) < 2 else 2 + buf[1] - len(buf)
        if self._step == "login":
            if len(buf) < 2:
                return 2 - len(buf)
            if len(buf) < 3 + buf[1]:
                return 3 + buf[1] - len(buf)
            return 3 + buf[1] + buf[2 + buf[1]] - len(buf)
        if len(buf) >= 4 and buf[3] not in (socks.ATYP_IPV4, socks.ATYP_IPV6, socks.ATYP_NAME):
            return 0  # refused already
        return socks.socks5_message_size(buf) - len(buf)

    def _advance(self) -> None:
        if self._step == "greeting":
            found = socks.decode_socks5_greeting(self._in)
            if found is None:
                return
            self._in.clear()
            self._choose(found[0])
        elif self._step == "login":
            login = socks.decode_socks5_userpass(self._in)
            if login is None:
                return
            self._in.clear()
            username, password = login[0]
            assert self.users is not None
            if not check_password(self.users, username, password):
                raise self._refuse(
                    socks.encode_socks5_userpass_status(False),
                    ProxyAuthError(
                        f"SOCKS5 login refused for user {username!r}: wrong user name or password",
                        code=1,
                        meaning="username/password rejected",
                    ),
                )
            self.username = username
            self._out += socks.encode_socks5_userpass_status(True)
            self._step = "request"
        else:
            self._request()

    def _choose(self, methods: tuple[int, ...]) -> None:
        wanted = socks.USERPASS if self.users else socks.NO_AUTH
        if wanted not in methods:
            why = "username/password" if self.users else "no authentication"
            raise self._refuse(
                socks.encode_socks5_method(socks.NO_ACCEPTABLE),
                ProxyAuthError(
                    f"SOCKS5 client offers no acceptable method (this proxy wants {why})",
                    code=socks.NO_ACCEPTABLE,
                    meaning="no acceptable authentication method",
                ),
            )
        self._out += socks.encode_socks5_method(wanted)
        self._step = "login" if self.users else "request"

    def _request(self) -> None:
        buf = self._in
        if len(buf) >= 1 and buf[0] != 5:
            raise ProxyError(f"not a SOCKS5 request (version {buf[0]})")
        if len(buf) >= 4 and buf[3] not in (socks.ATYP_IPV4, socks.ATYP_IPV6, socks.ATYP_NAME):
            raise self._refuse(
                _socks5_reply(ADDRESS_TYPE_NOT_SUPPORTED),
                ProxyRefused(
                    f"SOCKS5 address type {buf[3]} not supported",
                    code=ADDRESS_TYPE_NOT_SUPPORTED,
                    meaning=socks.SOCKS5_REPLIES[ADDRESS_TYPE_NOT_SUPPORTED],
                ),
            )
        found = socks.decode_socks5_message(buf)
        if found is None:
            return
        message, _ = found
        if message.code != socks.CONNECT:
            what = {2: "BIND", 3: "UDP ASSOCIATE"}.get(message.code, f"command {message.code}")
            raise self._refuse(
                _socks5_reply(COMMAND_NOT_SUPPORTED),
                ProxyRefused(
                    f"SOCKS5 {what} not supported (CONNECT only)",
                    code=COMMAND_NOT_SUPPORTED,
                    meaning=socks.SOCKS5_REPLIES[COMMAND_NOT_SUPPORTED],
                ),
            )
        if not message.host or message.port == 0:
            raise self._refuse(
                _socks5_reply(HOST_UNREACHABLE),
                ProxyRefused(
                    f"SOCKS5 request for {message.host!r} port {message.port}: no such target",
                    code=HOST_UNREACHABLE,
                    meaning=socks.SOCKS5_REPLIES[HOST_UNREACHABLE],
                ),
            )
        self.request = (message.host, message.port)

    def reply(self, code: int, host: str = "0.0.0.0", port: int = 0) -> None:
        """Answer the request: ``SUCCEEDED`` with the bound address, or a failure code."""
        if self.request is None or self._over:
            raise ProxyError("nothing to reply to")
        self._out += _socks5_reply(code, host, port)
        self._over = True


def _socks5_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    return socks.encode_socks5_message(socks.Socks5Message(code, host, port))


class HttpProxyHandshake(_ServerHandshake):
    """An HTTP proxy that serves CONNECT only (RFC 9110 §9.3.6), Basic login with ``users``.

    A known method other than CONNECT is answered ``405`` (with ``Allow:
    CONNECT``), an unknown one ``501``, a head that does not parse ``400``,
    missing or wrong credentials ``407`` with ``Proxy-Authenticate``.
    """

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.users = dict(users) if users else None
        self._reader = http.HeadReader()
        #: The request line's version, echoed in the answers.
        self.version = "HTTP/1.1"

    def wanted(self) -> int:
        if self._taking_no_more():
            return 0
        return self._reader.wanted()

    def _advance(self) -> None:
        data = bytes(self._in)
        self._in.clear()
        try:
            head = self._reader.feed(data)
        except ProxyError as exc:
            raise self._refuse(_http_answer(400, "Bad Request"), _refused(400, str(exc))) from None
        if head is None:
            return
        first = head.split(b"\r\n", 1)[0].decode("iso-8859-1")
        method, _, rest = first.partition(" ")
        version = rest.rpartition(" ")[2]
        if version in ("HTTP/1.0", "HTTP/1.1"):
            self.version = version
        if method != "CONNECT":
            shown = http._printable(method)
            if method in HTTP_METHODS:
                raise self._refuse(
                    self._answer(405, "Method Not Allowed", ("Allow", "CONNECT")),
                    _refused(405, f"HTTP {shown} refused: this proxy serves CONNECT only"),
                )
            raise self._refuse(
                self._answer(501, "Not Implemented"),
                _refused(501, f"HTTP method {shown!r} not implemented: CONNECT only"),
            )
        try:
            request = http.parse_connect_request(head)
        except ProxyError as exc:
            raise self._refuse(self._answer(400, "Bad Request"), _refused(400, str(exc))) from None
        if self.users is not None:
            self._login(request.credentials, head)
        self.request = (request.host, request.port)

    def _login(self, credentials: tuple[str, str] | None, head: bytes) -> None:
        assert self.users is not None
        if credentials is not None and check_password(self.users, *credentials):
            self.username = credentials[0]
            return
        why = "no credentials" if credentials is None else f"wrong password for {credentials[0]!r}"
        raise self._refuse(
            self._answer(
                407,
                "Proxy Authentication Required",
                ("Proxy-Authenticate", f'Basic realm="{REALM}"'),
            ),
            ProxyAuthError(f"HTTP proxy login refused: {why}", code=407, meaning=why),
        )

    def _answer(self, status: int, reason: str, *headers: tuple[str, str]) -> bytes:
        return _http_answer(status, reason, *headers, version=self.version)

    def reply(self, status: int, reason: str) -> None:
        """Answer the request: 200 opens the tunnel; any other status closes it."""
        if self.request is None or self._over:
            raise ProxyError("nothing to reply to")
        if 200 <= status < 300:
            self._out += http.encode_response(http.Response(status, reason, self.version))
        else:
            self._out += self._answer(status, reason)
        self._over = True


def _http_answer(
    status: int, reason: str, *headers: tuple[str, str], version: str = "HTTP/1.1"
) -> bytes:
    """A refusal: no body, and the connection closes after it."""
    fields = (*headers, ("Content-Length", "0"), ("Connection", "close"))
    return http.encode_response(http.Response(status, reason, version, fields))


def _refused(status: int, message: str) -> ProxyRefused:
    return ProxyRefused(message, code=status, meaning=message)
