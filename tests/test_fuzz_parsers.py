"""Every sans-IO parser under hypothesis: what the per-module tests leave out.

tests/test_address.py, test_framing.py and test_proxyproto.py already fuzz
garbage input and the main round trips. Here: cut-short and garbled valid
input, every split of it, the receive buffer against a plain model of it, and
the chat/broker routing (``socketeer.chat``) under any order of joins, messages
and departures. Random or truncated input never raises anything but the
module's typed errors; valid input round-trips.
"""

from __future__ import annotations

import contextlib
import struct
from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from socketeer import AddressError, ConnectionClosed, FrameTooLarge
from socketeer._buffer import ReceiveBuffer
from socketeer.address import Address
from socketeer.chat import ChatRoom
from socketeer.framing import FrameDecoder, LineDecoder, encode_frame, encode_line
from socketeer.proxyproto import (
    ProxyHeader,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    parse_proxy_header,
)

from .test_address import addresses


@st.composite
def garbled(draw: st.DrawFn, valid: bytes | str) -> bytes | str:
    """``valid`` with one to four positions overwritten, deleted or repeated."""
    items: list[Any] = list(valid)
    for _ in range(draw(st.integers(1, 4))):
        if not items:
            break
        i = draw(st.integers(0, len(items) - 1))
        how = draw(st.sampled_from(["overwrite", "delete", "repeat"]))
        if how == "delete":
            del items[i]
        elif how == "repeat":
            items.insert(i, items[i])
        elif isinstance(valid, str):
            items[i] = draw(st.characters())
        else:
            items[i] = draw(st.integers(0, 255))
    return "".join(items) if isinstance(valid, str) else bytes(items)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [p for p in pieces if p]  # b"" would be EOF


# -- addresses ----------------------------------------------------------------------------------


@given(addresses(), st.data())
def test_address_prefixes_and_garbles_raise_only_address_error(
    address: Address, data: st.DataObject
) -> None:
    text = str(address)
    candidates = [text[: data.draw(st.integers(0, len(text)))], data.draw(garbled(text))]
    for candidate in candidates:
        assert isinstance(candidate, str)
        try:
            parsed = Address.parse(candidate)
        except AddressError:
            continue
        assert Address.parse(str(parsed)) == parsed


@given(
    st.sampled_from(["tcp", "tcp4", "tcp6", "udp", "tls", "unix", "unix-dgram", "fd", "nope"]),
    st.text(max_size=20),
    st.integers(-5, 70000),
    st.text(max_size=120),
    st.booleans(),
)
def test_address_fields_raise_only_address_error(
    scheme: str, host: str, port: int, path: str, abstract: bool
) -> None:
    """Built from fields (as the library's callers do), not parsed from text."""
    with contextlib.suppress(AddressError):
        address = Address(scheme, host=host, port=port, path=path, abstract=abstract)
        assert Address.parse(str(address)) == address


# -- framing --------------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=200), max_size=12), st.integers(0, 2000), st.data())
def test_frames_cut_short_give_the_whole_ones_then_closed_with_the_rest(
    payloads: list[bytes], cut: int, data: st.DataObject
) -> None:
    wire = b"".join(encode_frame(p) for p in payloads)
    cut %= len(wire) + 1
    decoder = FrameDecoder(max_size=200)
    for piece in splits(wire[:cut], data.draw(st.lists(st.integers(0, 5000), max_size=6))):
        decoder.feed(piece)
    decoder.feed(b"")
    out: list[bytes] = []
    closed: ConnectionClosed | None = None
    try:
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    except ConnectionClosed as exc:
        closed = exc
    whole = b"".join(encode_frame(p) for p in out)
    assert out == payloads[: len(out)]
    if closed is None:
        assert decoder.at_eof
        assert whole == wire[:cut]
    else:
        assert closed.partial == wire[len(whole) : cut]


@given(st.integers(1, 1000), st.integers(0, 2**32 - 1), st.binary(max_size=20))
def test_a_frame_announcing_too_much_is_refused_before_it_arrives(
    limit: int, size: int, rest: bytes
) -> None:
    decoder = FrameDecoder(max_size=limit)
    decoder.feed(struct.pack("!I", size) + rest)
    if size <= limit:
        assert decoder.next_frame() in (None, rest[:size] if len(rest) >= size else None)
        return
    try:
        decoder.next_frame()
    except FrameTooLarge:
        return
    raise AssertionError("a frame over the limit was not refused")


_LINES = st.lists(st.binary(max_size=60).filter(lambda b: b"\n" not in b and not b.endswith(b"\r")))


@given(_LINES, st.lists(st.integers(0, 5000), max_size=8), st.booleans())
def test_lines_survive_any_split(lines: list[bytes], cuts: list[int], crlf: bool) -> None:
    wire = b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines)
    decoder = LineDecoder(max_bytes=64)
    out: list[bytes] = []
    for piece in [*splits(wire, cuts), b""]:
        decoder.feed(piece)
        while (line := decoder.next_line()) is not None:
            out.append(line)
    assert out == lines
    assert decoder.at_eof
    assert b"".join(encode_line(x) for x in lines) == b"".join(x + b"\n" for x in lines)


@given(st.binary(max_size=500), st.lists(st.integers(0, 5000), max_size=8), st.integers(1, 80))
def test_line_garbage_raises_only_our_errors(data: bytes, cuts: list[int], limit: int) -> None:
    decoder = LineDecoder(max_bytes=limit)
    closed: ConnectionClosed | None = None
    with contextlib.suppress(FrameTooLarge):
        for piece in [*splits(data, cuts), b""]:
            decoder.feed(piece)
            try:
                while decoder.next_line() is not None:
                    pass
            except ConnectionClosed as exc:
                closed = exc
                break
    if closed is not None:  # EOF inside a line keeps what came of it
        assert closed.partial
        assert b"\n" not in closed.partial
        assert data.endswith(closed.partial)


# -- the receive buffer against a model -------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.binary(max_size=40)),
        st.tuples(
            st.just("until"), st.sampled_from([b"\n", b"\r\n", b"ab", b"\x00"]), st.integers(1, 80)
        ),
        st.tuples(st.just("exactly"), st.integers(0, 60)),
        st.tuples(st.just("some"), st.integers(0, 60)),
        st.tuples(st.just("peek"), st.integers(0, 60)),
        st.tuples(st.just("discard"), st.integers(0, 60)),
    ),
    max_size=40,
)


@given(_OPS)
def test_receive_buffer_matches_a_plain_model(ops: list[tuple[Any, ...]]) -> None:
    """Resuming delimiter searches never changes what ``take_until`` finds."""
    buf, model = ReceiveBuffer(), b""
    for op, *args in ops:
        if op == "feed":
            buf.feed(args[0])
            model += args[0]
        elif op == "until":
            delimiter, limit = args
            found = model.find(delimiter)
            end = found + len(delimiter)
            too_large = (found < 0 and len(model) >= limit) or (found >= 0 and end > limit)
            try:
                got = buf.take_until(delimiter, limit)
            except FrameTooLarge:
                assert too_large
                continue
            assert not too_large
            if found < 0:
                assert got is None
            else:
                assert got == model[:end]
                model = model[end:]
        elif op == "exactly":
            got = buf.take_exactly(args[0])
            assert got == (model[: args[0]] if len(model) >= args[0] else None)
            if got is not None:
                model = model[args[0] :]
        elif op == "some":
            assert buf.take_some(args[0]) == model[: args[0]]
            model = model[args[0] :]
        elif op == "peek":
            assert buf.peek(args[0]) == (model[: args[0]] if len(model) >= args[0] else None)
        else:
            buf.discard(args[0])
            model = model[args[0] :]
        assert len(buf) == len(model)
    assert buf.take_all() == model


# -- PROXY v1 and v2 ----------------------------------------------------------------------------

_IPS = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
)
_PATHS = st.text(
    st.characters(codec="utf-8", exclude_characters="\0", exclude_categories=["Cs"]),
    min_size=1,
    max_size=30,
)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A valid header of every kind the encoders write, and what it says."""
    kind = draw(st.sampled_from(["v1", "v1 unknown", "v2 inet", "v2 unix", "v2 local", "v2 udp"]))
    if kind == "v1 unknown":
        return encode_v1(None, None), ProxyHeader(1, "PROXY")
    if kind == "v2 local":
        return encode_v2(None, None, local=True), ProxyHeader(2, "LOCAL")
    if kind == "v2 unix":
        src_abstract, dst_abstract = draw(st.booleans()), draw(st.booleans())
        source = Address(
            "unix", path=("" if src_abstract else "/") + draw(_PATHS), abstract=src_abstract
        )
        destination = Address(
            "unix", path=("" if dst_abstract else "/") + draw(_PATHS), abstract=dst_abstract
        )
        return encode_v2(source, destination), ProxyHeader(2, "PROXY", source, destination)
    hosts, ports = draw(_IPS), st.integers(0, 65535)
    scheme = "udp" if kind == "v2 udp" else "tcp"
    source = Address(scheme, host=str(hosts[0]), port=draw(ports))
    destination = Address(scheme, host=str(hosts[1]), port=draw(ports))
    if kind == "v1":
        return encode_v1(source, destination), ProxyHeader(1, "PROXY", source, destination)
    return encode_v2(source, destination), ProxyHeader(2, "PROXY", source, destination)


@given(headers(), st.binary(max_size=30))
def test_every_header_round_trips_with_what_follows_left_alone(
    header: tuple[bytes, ProxyHeader], rest: bytes
) -> None:
    wire, expected = header
    assert parse_proxy_header(wire + rest) == (expected, len(wire))


@given(headers())
def test_every_prefix_of_a_header_asks_for_more(header: tuple[bytes, ProxyHeader]) -> None:
    """A header arriving a byte at a time is never refused before it is complete."""
    wire, expected = header
    for end in range(len(wire)):
        assert parse_proxy_header(wire[:end]) is None, wire[:end]
    assert parse_proxy_header(wire) == (expected, len(wire))


@given(headers(), st.binary(max_size=40))
def test_v2_tlvs_are_skipped(header: tuple[bytes, ProxyHeader], tlvs: bytes) -> None:
    """Bytes inside the v2 length after the addresses (TLVs) are taken and ignored."""
    wire, expected = header
    if expected.version != 2:
        return
    (length,) = struct.unpack_from("!H", wire, 14)
    longer = wire[:14] + struct.pack("!H", length + len(tlvs)) + wire[16:] + tlvs
    assert parse_proxy_header(longer + b"data") == (expected, len(longer))


@given(headers(), st.data())
def test_garbled_headers_raise_only_proxy_protocol_error(
    header: tuple[bytes, ProxyHeader], data: st.DataObject
) -> None:
    wire = data.draw(garbled(header[0]))
    assert isinstance(wire, bytes)
    try:
        parsed = parse_proxy_header(wire)
    except ProxyProtocolError:
        return
    if parsed is not None:
        result, used = parsed
        assert 0 < used <= len(wire)
        assert result.version in (1, 2)
        assert result.command in ("PROXY", "LOCAL")


# -- chat and broker routing --------------------------------------------------------------------

_MEMBERS = st.integers(0, 5)
_ROOM_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), _MEMBERS),
        st.tuples(st.just("say"), _MEMBERS, st.binary(max_size=20)),
        st.tuples(st.just("leave"), _MEMBERS),
    ),
    max_size=60,
)


@given(_ROOM_OPS, st.booleans())
def test_room_routing_in_any_order(ops: list[tuple[Any, ...]], names: bool) -> None:
    """Deliveries go only to members, never back to the sender; names are never reused."""
    room = ChatRoom(names=names)
    members: dict[int, str] = {}
    seen_names: set[str] = set()
    for op, member, *rest in ops:
        if op == "join":
            if member in members:
                continue  # a server joins each connection once
            out = room.join(member)
            members[member] = room.name_of(member)
            assert members[member] not in seen_names
            seen_names.add(members[member])
            if names:
                assert out[0] == (member, f"* you are {members[member]}\n".encode())
                assert Counter(m for m, _ in out[1:]) == Counter(m for m in members if m != member)
            else:
                assert out == []
        elif op == "say":
            out = room.say(member, rest[0])
            if member not in members:
                assert out == []
                continue
            assert Counter(m for m, _ in out) == Counter(m for m in members if m != member)
            expected = (
                b"<" + members[member].encode() + b"> " + rest[0] + b"\n" if names else rest[0]
            )
            assert all(data == expected for _, data in out)
        else:
            out = room.leave(member)
            name = members.pop(member, None)
            if name is None or not names:
                assert out == []
            else:
                assert Counter(m for m, _ in out) == Counter(members.keys())
                assert all(data == f"* {name} left\n".encode() for _, data in out)
        assert len(room) == len(members)
