"""The PROXY protocol parser and writer, against the HAProxy specification's examples and rules."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketeer import Address
from socketeer.proxyproto import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    parse_proxy_header,
)

A = Address.parse


def feed(wire: bytes, split: str) -> tuple[ProxyHeader, int]:
    """Parse the way a server reads: whole, a byte at a time, or with data behind it."""
    if split == "trailing":
        result = parse_proxy_header(wire + b"GET / HTTP/1.0\r\n\r\n")
        assert result is not None
        return result
    if split == "bytewise":
        for i in range(1, len(wire)):
            assert parse_proxy_header(wire[:i]) is None, i  # "need more", never an error
    result = parse_proxy_header(wire)
    assert result is not None
    return result


SPLITS = ["whole", "bytewise", "trailing"]

V1_TCP4 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
V1_TCP6 = (
    b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)


@pytest.mark.parametrize("split", SPLITS)
def test_v1_tcp4(split: str) -> None:
    header, used = feed(V1_TCP4, split)
    assert used == len(V1_TCP4)
    assert header == ProxyHeader(
        1, "PROXY", A("tcp://192.168.0.1:56324"), A("tcp://192.168.0.11:443")
    )


@pytest.mark.parametrize("split", SPLITS)
def test_v1_tcp6_worst_case_is_104_bytes(split: str) -> None:
    assert len(V1_TCP6) == 104
    header, used = feed(V1_TCP6, split)
    assert used == 104
    assert header.source == A("tcp://[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")


@pytest.mark.parametrize(
    "wire", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n"]
)
def test_v1_unknown(wire: bytes) -> None:
    assert parse_proxy_header(wire) == (ProxyHeader(1, "PROXY"), len(wire))


@pytest.mark.parametrize(
    "wire",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF alone
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",  # unknown family
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",  # two spaces
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",  # bad address
        b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  # port range
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",  # leading zero
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n",  # not ASCII
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",  # case matters
        b"PROXY " + b"x" * 120,  # no CRLF within 107 bytes
        b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x0c" + bytes(12),  # bad signature
    ],
)
def test_invalid_headers_are_refused(wire: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(wire)


def test_v1_writer() -> None:
    assert encode_v1(A("tcp://192.168.0.1:56324"), A("tcp://192.168.0.11:443")) == V1_TCP4
    assert encode_v1(A("tcp://[::1]:1"), A("tcp://[::2]:2")) == b"PROXY TCP6 ::1 ::2 1 2\r\n"
    assert encode_v1(A("unix:/a"), A("unix:/b")) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"


V2_TCP4 = (
    V2_SIGNATURE
    + b"\x21\x11\x00\x0c"
    + bytes([127, 0, 0, 1, 10, 0, 0, 2])
    + struct.pack("!HH", 443, 80)
)


@pytest.mark.parametrize("split", SPLITS)
def test_v2_tcp4(split: str) -> None:
    assert encode_v2(A("tcp://127.0.0.1:443"), A("tcp://10.0.0.2:80")) == V2_TCP4
    header, used = feed(V2_TCP4, split)
    assert used == 28
    assert header == ProxyHeader(2, "PROXY", A("tcp://127.0.0.1:443"), A("tcp://10.0.0.2:80"))


@pytest.mark.parametrize("split", SPLITS)
def test_v2_tcp6_and_tlvs_are_skipped(split: str) -> None:
    wire = encode_v2(A("tcp://[2001:db8::1]:53"), A("tcp://[::1]:443"))
    assert wire[12:14] == b"\x21\x21" and len(wire) == 16 + 36
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP with 3 bytes
    with_tlv = wire[:14] + struct.pack("!H", 36 + len(tlv)) + wire[16:] + tlv
    header, used = feed(with_tlv, split)
    assert used == len(with_tlv)
    assert header.source == A("tcp://[2001:db8::1]:53")


def test_v2_unix_and_udp() -> None:
    wire = encode_v2(A("unix:/tmp/client.sock"), A("unix:@server"))
    assert wire[12:16] == b"\x21\x31\x00\xd8" and len(wire) == 16 + 216
    header, _ = parse_proxy_header(wire)  # type: ignore[misc]
    assert header.source == A("unix:/tmp/client.sock")
    assert header.destination == A("unix:@server")
    udp = encode_v2(A("udp://127.0.0.1:1"), A("udp://127.0.0.1:2"))
    assert udp[13] == 0x12
    assert parse_proxy_header(udp)[0].source == A("udp://127.0.0.1:1")  # type: ignore[index]


def test_v2_local() -> None:
    wire = encode_v2(None, None, local=True)
    assert wire == V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse_proxy_header(wire) == (ProxyHeader(2, "LOCAL"), 16)


@pytest.mark.parametrize(
    "wire",
    [
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # INET but too short
        V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12),  # INET6 but too short
        V2_SIGNATURE + b"\x21\x31\x00\x0c" + bytes(12),  # UNIX but too short
        V2_SIGNATURE + b"\x21\x41\x00\x00",  # unknown family
    ],
)
def test_v2_invalid(wire: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(wire)


ips4 = st.ip_addresses(v=4).map(str)
ips6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(
    st.one_of(st.tuples(ips4, ips4), st.tuples(ips6, ips6)), ports, ports, st.sampled_from([1, 2])
)
def test_roundtrip(hosts: tuple[str, str], sport: int, dport: int, version: int) -> None:
    source = Address("tcp", host=hosts[0], port=sport)
    destination = Address("tcp", host=hosts[1], port=dport)
    wire = (encode_v1 if version == 1 else encode_v2)(source, destination)
    assert parse_proxy_header(wire + b"rest") == (
        ProxyHeader(version, "PROXY", source, destination),
        len(wire),
    )


@given(st.binary(max_size=300))
def test_garbage_raises_only_proxy_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProxyProtocolError):  # anything else fails the test
        parse_proxy_header(data)


@given(st.binary(max_size=240))
def test_garbage_after_a_v2_signature(data: bytes) -> None:
    with contextlib.suppress(ProxyProtocolError):
        parse_proxy_header(V2_SIGNATURE + data)
