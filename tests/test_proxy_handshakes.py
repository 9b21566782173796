"""The proxy client's pure parts: URLs, SOCKS4/4a/5 and HTTP CONNECT messages and handshakes.

No sockets: each handshake is driven against bytes, whole, a byte at a time
and with the target's first bytes behind the reply (which it must leave
alone), and fuzzed with hypothesis for the invariant that garbage raises
only ``ProxyError``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import socketeer
from socketeer import (
    AddressError,
    ConnectError,
    ProxyAuthError,
    ProxyError,
    ProxyRefused,
    ProxyTargetUnreachable,
)
from socketeer.address import Address
from socketeer.proxy import ProxyURL
from socketeer.proxy import http as h
from socketeer.proxy import socks as s
from socketeer.proxy.dial import handshake_for

from .conftest import free_port
from .test_layers import IO_MODULES, imported_modules

# This file drives the handshakes without sockets: the URLs below are text to
# parse and to name in messages, never an address anything binds or connects to
# (the tests that talk to real proxies are in test_proxy_peers.py). Even so,
# their port is one the kernel handed out for port 0, as everywhere in the tests.
P = free_port()
BEYOND = 1 << 16  # one past the last port: a malformed address by definition
TARGET_DATA = b"SSH-2.0-target speaks first\r\n"
PROXY = f"socks5://127.0.0.1:{P}"
TARGET = "tcp://example.com:443"


def test_the_protocol_modules_import_no_io() -> None:
    src = Path(socketeer.__file__).parent / "proxy"
    for name in ("url.py", "socks.py", "http.py"):
        assert not imported_modules(src / name) & IO_MODULES, name


def test_the_errors_are_a_hierarchy_under_connect_error() -> None:
    for kind in (ProxyRefused, ProxyAuthError, ProxyTargetUnreachable, socketeer.ProxyUnreachable):
        assert issubclass(kind, ProxyError)
    assert issubclass(ProxyError, ConnectError)
    assert issubclass(ProxyError, ConnectionError)
    assert ProxyError("x").exit_code == 1


# -- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (f"socks4://127.0.0.1:{P}", f"socks4://127.0.0.1:{P}"),
        (f"SOCKS4A://me@proxy:{P}", f"socks4a://me@proxy:{P}"),
        (f"socks5://[::1]:{P}", f"socks5://[::1]:{P}"),
        (f"socks5h://Proxy.Example:{P}", f"socks5h://proxy.example:{P}"),
        (f"http://proxy:{P}/", f"http://proxy:{P}"),
        (f"http://u:p@proxy:{P}", f"http://u:***@proxy:{P}"),
    ],
)
def test_url_canonical_form(text: str, canonical: str) -> None:
    url = ProxyURL.parse(text)
    assert str(url) == canonical
    if url.password is None:
        assert ProxyURL.parse(str(url)) == url
    assert ProxyURL.parse(url) is url


def test_url_fields_and_percent_encoded_credentials() -> None:
    url = ProxyURL.parse(f"socks5h://al%40ice:p%3Ass@proxy:{P}")
    assert (url.scheme, url.host, url.port) == ("socks5h", "proxy", P)
    assert (url.username, url.password) == ("al@ice", "p:ss")
    assert url.address == Address.parse(f"tcp://proxy:{P}")
    assert url.resolves_remotely
    assert not ProxyURL.parse(f"socks5://p:{P}").resolves_remotely


def test_url_never_shows_the_password() -> None:
    url = ProxyURL.parse(f"http://alice:hunter2@proxy:{P}")
    assert "hunter2" not in str(url) + repr(url)
    with pytest.raises(AddressError) as caught:
        ProxyURL.parse(f"http://alice:hunter2@proxy:{BEYOND}")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"proxy:{P}", "missing SCHEME://"),
        (f"ftp://proxy:{P}", "unknown proxy scheme 'ftp'"),
        ("socks5://proxy", "missing a port"),
        ("socks5://proxy:0", "port other than 0"),
        (f"socks5://proxy:{BEYOND}", "above 65535"),
        (f"socks5://proxy:{P}/path", "no path"),
        (f"socks5://:pw@proxy:{P}", "empty user name"),
        (f"socks4://me:pw@proxy:{P}", "no password"),
        ("socks5://" + "u" * 256 + f":p@proxy:{P}", "1 to 255 bytes"),
        ("socks5h://u:" + "p" * 256 + f"@proxy:{P}", "at most 255 bytes"),
        (f"http://[::1:{P}", "unbalanced brackets"),
        (f"http://u:a%0D%0AX:%20y@proxy:{P}", "cannot hold NUL, CR or LF"),
        (f"socks4a://a%00b@proxy:{P}", "cannot hold NUL, CR or LF"),
    ],
)
def test_url_errors_name_the_reason_and_the_forms(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        ProxyURL.parse(text)
    message = str(caught.value)
    assert reason in message
    assert "socks5h://HOST:PORT" in message and "http://HOST:PORT" in message


def test_url_from_the_environment_only_when_asked() -> None:
    env = {"ALL_PROXY": f"socks5h://proxy:{P}", "all_proxy": f"http://other:{P}"}
    assert str(ProxyURL.from_environment(env)) == f"socks5h://proxy:{P}"
    assert str(ProxyURL.from_environment({"all_proxy": f"http://other:{P}"})) == (
        f"http://other:{P}"
    )
    with pytest.raises(AddressError, match=r"neither \$ALL_PROXY nor \$all_proxy"):
        ProxyURL.from_environment({})
    with pytest.raises(AddressError, match=r"^\$ALL_PROXY: bad proxy URL"):
        ProxyURL.from_environment({"ALL_PROXY": "nonsense"})


def test_url_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("all_proxy", raising=False)
    monkeypatch.setenv("ALL_PROXY", f"socks4a://proxy:{P}")
    assert ProxyURL.parse("env") == ProxyURL("socks4a", "proxy", P)
    monkeypatch.delenv("ALL_PROXY")
    with pytest.raises(AddressError):
        ProxyURL.parse("env")


@given(st.text(max_size=80))
def test_url_garbage_raises_only_address_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        url = ProxyURL.parse(text)
        assert ProxyURL.parse(str(url).replace(":***@", ":x@")).host == url.host


# -- driving a handshake against bytes ------------------------------------------------------


def drive(hs: object, replies: bytes, *, bytewise: bool = False) -> tuple[bytes, bytes]:
    """Run ``hs`` against a proxy whose replies are ``replies``: (what it sent, what is left)."""
    sent = bytearray()
    pending = memoryview(replies)
    while True:
        sent += hs.data_to_send()  # type: ignore[attr-defined]
        wanted = hs.wanted()  # type: ignore[attr-defined]
        if wanted == 0:
            return bytes(sent), bytes(pending)
        take = 1 if bytewise else wanted
        chunk, pending = bytes(pending[:take]), pending[take:]
        hs.receive_data(chunk)  # type: ignore[attr-defined]


def socks5(host: str = "example.com", port: int = 443, **kw: str | None) -> s.Socks5Handshake:
    return s.Socks5Handshake(host, port, proxy=PROXY, target=TARGET, **kw)


def socks5_reply(code: int = 0, host: str = "0.0.0.0", port: int = 0) -> bytes:
    return s.encode_socks5_message(s.Socks5Message(code, host, port))


SPLITS = [False, True]


@pytest.mark.parametrize("bytewise", SPLITS)
@pytest.mark.parametrize("bound", ["10.0.0.1", "2001:db8::1", "proxy.internal"])
def test_socks5_no_auth_leaves_the_target_bytes(bytewise: bool, bound: str) -> None:
    replies = b"\x05\x00" + socks5_reply(0, bound, 4321) + TARGET_DATA
    sent, left = drive(socks5(), replies, bytewise=bytewise)
    assert sent == b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    assert left == TARGET_DATA


@pytest.mark.parametrize("bytewise", SPLITS)
def test_socks5_login(bytewise: bool) -> None:
    hs = socks5("192.0.2.7", 80, username="alice", password="s3cret")
    sent, left = drive(hs, b"\x05\x02" + b"\x01\x00" + socks5_reply() + TARGET_DATA)
    assert sent == (
        b"\x05\x02\x00\x02"
        + b"\x01\x05alice\x06s3cret"
        + b"\x05\x01\x00\x01\xc0\x00\x02\x07\x00\x50"
    )
    assert left == TARGET_DATA
    assert hs.done


def test_socks5_sends_nothing_before_each_answer() -> None:
    hs = socks5(username="a", password="b")
    assert hs.data_to_send() == b"\x05\x02\x00\x02"
    assert hs.data_to_send() == b""
    assert hs.wanted() == 2
    hs.receive_data(b"\x05")
    assert hs.data_to_send() == b""
    assert hs.wanted() == 1


@pytest.mark.parametrize(
    ("code", "kind", "meaning"),
    [
        (1, ProxyRefused, "general SOCKS server failure"),
        (2, ProxyRefused, "connection not allowed by ruleset"),
        (3, ProxyTargetUnreachable, "network unreachable"),
        (4, ProxyTargetUnreachable, "host unreachable"),
        (5, ProxyTargetUnreachable, "connection refused"),
        (6, ProxyTargetUnreachable, "TTL expired"),
        (7, ProxyRefused, "command not supported"),
        (8, ProxyRefused, "address type not supported"),
        (0x42, ProxyRefused, "unknown reply code"),
    ],
)
def test_socks5_reply_codes(code: int, kind: type[ProxyRefused], meaning: str) -> None:
    with pytest.raises(kind) as caught:
        drive(socks5(), b"\x05\x00" + socks5_reply(code) + TARGET_DATA)
    error = caught.value
    assert type(error) is kind
    assert (error.code, error.meaning) == (code, meaning)
    for needle in (meaning, PROXY, TARGET, f"SOCKS5 reply {code}"):
        assert needle in str(error)


@pytest.mark.parametrize(
    ("credentials", "reply", "needle"),
    [
        ({}, b"\x05\xff", "wants a user name and password"),
        ({"username": "a", "password": "b"}, b"\x05\xff", "accepts neither"),
        ({}, b"\x05\x02", "not offered"),
        ({"username": "a", "password": "b"}, b"\x05\x02\x01\x01", "rejected the user name"),
    ],
)
def test_socks5_authentication_failures(
    credentials: dict[str, str], reply: bytes, needle: str
) -> None:
    with pytest.raises(ProxyAuthError) as caught:
        drive(socks5(**credentials), reply)
    assert needle in str(caught.value)
    assert str(caught.value).startswith(f"proxy authentication failed: {PROXY}")


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", "not a SOCKS5 proxy"),
        (b"\x05\x00\x04\x00\x00\x00\x00\x00\x00\x00", "not a SOCKS5 reply"),
        (b"\x05\x00\x05\x00\x00\x09", "address type 9"),
        (b"\x05\x00", "closed the connection during the handshake"),
    ],
)
def test_socks5_broken_proxies(reply: bytes, needle: str) -> None:
    with pytest.raises(ProxyError) as caught:
        drive(socks5(), reply)
    assert type(caught.value) is ProxyError
    assert needle in str(caught.value) and PROXY in str(caught.value)


@pytest.mark.parametrize("bytewise", SPLITS)
def test_socks4_and_4a_requests(bytewise: bool) -> None:
    reply = s.encode_socks4_reply(s.Socks4Reply(0x5A))
    hs = s.Socks4Handshake("127.0.0.1", 80, proxy=PROXY, target=TARGET)
    assert drive(hs, reply + TARGET_DATA, bytewise=bytewise) == (
        b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",
        TARGET_DATA,
    )
    hs = s.Socks4Handshake("example.com", 80, user_id="me", proxy=PROXY, target=TARGET)
    assert drive(hs, reply + TARGET_DATA, bytewise=bytewise) == (
        b"\x04\x01\x00\x50\x00\x00\x00\x01me\x00example.com\x00",
        TARGET_DATA,
    )


@pytest.mark.parametrize("code", [0x5B, 0x5C, 0x5D])
def test_socks4_refusals(code: int) -> None:
    hs = s.Socks4Handshake("127.0.0.1", 80, proxy=PROXY, target=TARGET)
    with pytest.raises(ProxyRefused) as caught:
        drive(hs, bytes([0, code]) + b"\0" * 6)
    assert caught.value.code == code
    assert caught.value.meaning == s.SOCKS4_REPLIES[code]
    assert f"SOCKS4 reply {code:#04x}" in str(caught.value)


def test_socks4_reply_that_is_not_one() -> None:
    hs = s.Socks4Handshake("127.0.0.1", 80, proxy=PROXY, target=TARGET)
    with pytest.raises(ProxyError, match="not a SOCKS4 reply"):
        drive(hs, b"HTTP/1.0 400 Bad\r\n")


def http_connect(**kw: str | None) -> h.HttpConnectHandshake:
    return h.HttpConnectHandshake("example.com", 443, proxy=PROXY, target=TARGET, **kw)


@pytest.mark.parametrize("bytewise", SPLITS)
def test_http_connect(bytewise: bool) -> None:
    reply = b"HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\n"
    sent, left = drive(http_connect(), reply + TARGET_DATA, bytewise=bytewise)
    assert sent == b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    assert left == TARGET_DATA


def test_http_connect_basic_credentials_and_ipv6() -> None:
    hs = h.HttpConnectHandshake(
        "2001:db8::1", 22, username="Aladdin", password="open sesame", proxy=PROXY, target=TARGET
    )
    sent, _ = drive(hs, b"HTTP/1.0 200 OK\r\n\r\n")
    assert sent == (
        b"CONNECT [2001:db8::1]:22 HTTP/1.1\r\nHost: [2001:db8::1]:22\r\n"
        b"Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"  # RFC 7617 §2
    )


def test_http_interim_response_is_skipped() -> None:
    replies = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n" + TARGET_DATA
    assert drive(http_connect(), replies)[1] == TARGET_DATA


@pytest.mark.parametrize(
    ("status_line", "kind"),
    [
        (b"HTTP/1.1 407 Proxy Authentication Required", ProxyAuthError),
        (b"HTTP/1.0 401 Unauthorized", ProxyAuthError),  # tinyproxy, wrong password
        (b"HTTP/1.0 403 Access violation", ProxyRefused),
        (b"HTTP/1.1 502 Bad Gateway", ProxyTargetUnreachable),
        (b"HTTP/1.1 503 Service Unavailable", ProxyTargetUnreachable),
        (b"HTTP/1.1 504 Gateway Timeout", ProxyTargetUnreachable),
        (b"HTTP/1.0 500 Unable to connect", ProxyTargetUnreachable),  # tinyproxy
        (b"HTTP/1.1 500 Internal Server Error", ProxyRefused),
        (b"HTTP/1.1 405 Method Not Allowed", ProxyRefused),
    ],
)
def test_http_statuses(status_line: bytes, kind: type[ProxyRefused]) -> None:
    reply = status_line + b"\r\nContent-Length: 5\r\n\r\nbody!"
    with pytest.raises(kind) as caught:
        drive(http_connect(), reply)
    error = caught.value
    assert type(error) is kind
    status, reason = status_line.decode().split(" ", 2)[1:]
    assert (error.code, error.meaning) == (int(status), reason)
    assert f"HTTP {status}" in str(error) and reason in str(error)
    assert PROXY in str(error) and TARGET in str(error)


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000,
    ],
)
def test_http_broken_proxies(reply: bytes) -> None:
    with pytest.raises(ProxyError) as caught:
        drive(http_connect(), reply)
    assert type(caught.value) is ProxyError


def test_http_reason_from_the_network_is_made_printable() -> None:
    with pytest.raises(ProxyRefused) as caught:
        drive(http_connect(), b"HTTP/1.1 403 No\x1b[31m\xff" + b"x" * 500 + b"\r\n\r\n")
    message = str(caught.value)
    assert "\x1b" not in message and "\xff" not in message and len(message) < 400


def test_fields_that_cannot_be_sent() -> None:
    with pytest.raises(ProxyError):
        http_connect(username="a\r\nX-Evil: 1", password="b")
    with pytest.raises(ProxyError):
        s.Socks4Handshake("a\0b", 1, proxy=PROXY, target=TARGET)
    with pytest.raises(ProxyError):
        socks5("x" * 256)


def test_handshake_for_each_scheme() -> None:
    target = Address.parse("tcp://example.com:443")
    assert isinstance(handshake_for(ProxyURL.parse(f"socks4a://p:{P}"), target), s.Socks4Handshake)
    hs = handshake_for(ProxyURL.parse(f"socks5://u:pw@p:{P}"), target, "192.0.2.1")
    assert isinstance(hs, s.Socks5Handshake)
    sent, _ = drive(hs, b"\x05\x00" + socks5_reply())
    assert sent.endswith(b"\x01\xc0\x00\x02\x01\x01\xbb")  # the address resolved here
    hs = handshake_for(ProxyURL.parse(f"http://p:{P}"), target)
    assert isinstance(hs, h.HttpConnectHandshake)


# -- round trips and fuzz ------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){0,3}", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(st.one_of(names, ipv4, ipv6), ports, st.integers(0, 255), st.binary(max_size=8))
def test_socks5_message_round_trip(host: str, port: int, code: int, tail: bytes) -> None:
    message = s.Socks5Message(code, host, port)
    wire = s.encode_socks5_message(message)
    assert s.decode_socks5_message(wire + tail) == (message, len(wire))
    for i in range(len(wire)):
        assert s.decode_socks5_message(wire[:i]) is None
        assert s.socks5_message_size(wire[:i]) <= len(wire)
    assert s.socks5_message_size(wire) == len(wire)


@given(st.lists(st.integers(0, 255), min_size=1, max_size=255))
def test_socks5_greeting_round_trip(methods: list[int]) -> None:
    wire = s.encode_socks5_greeting(methods)
    assert s.decode_socks5_greeting(wire + b"x") == (tuple(methods), len(wire))
    assert s.decode_socks5_greeting(wire[:-1]) is None


@given(st.text(min_size=1, max_size=60), st.text(max_size=60))
def test_socks5_login_round_trip(user: str, password: str) -> None:
    wire = s.encode_socks5_userpass(user, password)
    assert s.decode_socks5_userpass(wire) == ((user, password), len(wire))
    assert s.decode_socks5_userpass(wire[:-1]) is None
    for ok in (True, False):
        assert s.decode_socks5_userpass_status(s.encode_socks5_userpass_status(ok)) == (ok, 2)


def _not_socks4a_marker(host: str) -> bool:
    return not (host.startswith("0.0.0.") and host != "0.0.0.0")


def test_a_socks4a_marker_is_no_socks4_target() -> None:
    with pytest.raises(ProxyError, match="SOCKS4a's marker"):
        s.encode_socks4_request(s.Socks4Request("0.0.0.1", 80, ""))


@given(
    st.one_of(names, ipv4.filter(_not_socks4a_marker)),
    ports,
    st.from_regex(r"[a-z]{0,10}", fullmatch=True),
)
def test_socks4_request_round_trip(host: str, port: int, user: str) -> None:
    request = s.Socks4Request(host, port, user)
    wire = s.encode_socks4_request(request)
    assert s.decode_socks4_request(wire + b"\0tail") == (request, len(wire))
    for i in range(len(wire)):
        assert s.decode_socks4_request(wire[:i]) is None


@given(st.sampled_from(sorted(s.SOCKS4_REPLIES)), ipv4, ports)
def test_socks4_reply_round_trip(code: int, host: str, port: int) -> None:
    reply = s.Socks4Reply(code, host, port)
    assert s.decode_socks4_reply(s.encode_socks4_reply(reply)) == (reply, 8)


@given(st.one_of(names, ipv4, ipv6), st.integers(1, 65535))
def test_http_request_round_trip(host: str, port: int) -> None:
    wire = h.encode_connect_request(host, port, username="u", password="p:w")
    assert h.parse_connect_request(wire) == h.ConnectRequest(host, port, ("u", "p:w"))


@given(st.integers(100, 599), st.from_regex(r"[A-Za-z ]{0,30}", fullmatch=True))
def test_http_response_round_trip(status: int, reason: str) -> None:
    response = h.Response(status, reason.strip(), "HTTP/1.1", (("Via", "1.1 p"),))
    assert h.parse_response(h.encode_response(response)) == response


@given(st.binary(max_size=300), st.binary(max_size=40))
def test_head_reader_stops_exactly_at_the_blank_line(head: bytes, tail: bytes) -> None:
    head = head.replace(b"\r\n\r\n", b"") + b"\r\n\r\n"
    reader = h.HeadReader()
    stream = memoryview(head + tail)
    got = None
    while got is None:
        wanted = reader.wanted()
        chunk, stream = bytes(stream[:wanted]), stream[wanted:]
        got = reader.feed(chunk)
    # The first blank line ends it, wherever the terminator first completes.
    assert got == head[: head.find(b"\r\n\r\n") + 4]
    assert reader.wanted() == 0


KINDS = {
    "socks4": lambda: s.Socks4Handshake("example.com", 1, proxy=PROXY, target=TARGET),
    "socks5": socks5,
    "socks5-login": lambda: socks5(username="u", password="p"),
    "http": http_connect,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(
    replies=st.binary(max_size=120),
    splits=st.lists(st.integers(1, 8), max_size=40),
)
def test_garbage_replies_raise_only_proxy_errors(
    kind: str, replies: bytes, splits: list[int]
) -> None:
    hs = KINDS[kind]()
    pending = memoryview(replies)
    sizes = iter(splits)
    with contextlib.suppress(ProxyError):
        while (wanted := hs.wanted()) > 0:
            hs.data_to_send()
            take = min(wanted, next(sizes, wanted))
            chunk, pending = bytes(pending[:take]), pending[take:]
            hs.receive_data(chunk)  # b"" once the replies run out: the proxy closed
        assert hs.done


@pytest.mark.parametrize(
    "decode",
    [
        s.decode_socks4_request,
        s.decode_socks4_reply,
        s.decode_socks5_greeting,
        s.decode_socks5_method,
        s.decode_socks5_userpass,
        s.decode_socks5_userpass_status,
        s.decode_socks5_message,
    ],
)
@given(data=st.binary(max_size=300))
def test_garbage_messages_raise_only_proxy_errors(decode: object, data: bytes) -> None:
    with contextlib.suppress(ProxyError):
        result = decode(data)  # type: ignore[operator]
        if result is not None:
            assert 0 < result[1] <= len(data)


@given(st.binary(max_size=300))
def test_garbage_http_heads_raise_only_proxy_errors(data: bytes) -> None:
    for parse in (h.parse_response, h.parse_connect_request):
        with contextlib.suppress(ProxyError):
            parse(data + b"\r\n\r\n")
