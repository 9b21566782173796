"""Framing and the receive buffer, without sockets: whole, byte by byte, with trailing data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketeer import ConnectionClosed, FrameTooLarge
from socketeer._buffer import ReceiveBuffer
from socketeer.framing import (
    FrameDecoder,
    LineDecoder,
    encode_frame,
    encode_line,
    strip_eol,
    take_frame,
    take_line,
)

SPLITS = ["whole", "bytewise", "trailing"]


def chunks(data: bytes, split: str) -> list[bytes]:
    if split == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    if split == "trailing":
        return [data + b"\x00\x00\x00"]
    return [data]


@pytest.mark.parametrize("split", SPLITS)
def test_frame_roundtrip(split: str) -> None:
    wire = encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"x" * 1000)
    decoder = FrameDecoder()
    frames = []
    for piece in chunks(wire, split):
        decoder.feed(piece)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert frames == [b"hello", b"", b"x" * 1000]


def test_frame_header_is_big_endian_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_oversized_frame_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_size=10)
    decoder.feed(b"\x00\x00\x00\x0b")
    with pytest.raises(FrameTooLarge, match="11 bytes exceeds the limit of 10"):
        decoder.next_frame()
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 11, max_size=10)


def test_eof_inside_a_frame_keeps_the_partial_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x05ab")
    assert decoder.next_frame() is None
    decoder.feed(b"")
    with pytest.raises(ConnectionClosed) as info:
        decoder.next_frame()
    assert info.value.partial == b"\x00\x00\x00\x05ab"


def test_clean_eof_is_not_an_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"a"))
    decoder.feed(b"")
    assert decoder.next_frame() == b"a"
    assert decoder.next_frame() is None
    assert decoder.at_eof


@pytest.mark.parametrize("split", SPLITS)
def test_lines_lf_and_crlf(split: str) -> None:
    decoder = LineDecoder()
    lines = []
    for piece in chunks(b"one\ntwo\r\n\nthree\n", split):
        decoder.feed(piece)
        while (line := decoder.next_line()) is not None:
            lines.append(line)
    assert lines == [b"one", b"two", b"", b"three"]


def test_line_limit() -> None:
    decoder = LineDecoder(max_bytes=8)
    decoder.feed(b"12345678")
    with pytest.raises(FrameTooLarge):
        decoder.next_line()
    ok = LineDecoder(max_bytes=8)
    ok.feed(b"1234567\n")
    assert ok.next_line() == b"1234567"


def test_unterminated_last_line_at_eof() -> None:
    decoder = LineDecoder()
    decoder.feed(b"tail")
    decoder.feed(b"")
    with pytest.raises(ConnectionClosed) as info:
        decoder.next_line()
    assert info.value.partial == b"tail"


def test_encode_line_and_strip() -> None:
    assert encode_line("héllo") == "héllo\n".encode()
    assert encode_line(b"x\n") == b"x\n"
    assert strip_eol(b"a\r\n") == b"a"
    assert strip_eol(b"a\n") == b"a"
    assert strip_eol(b"a") == b"a"


def test_buffer_delimiter_split_across_feeds() -> None:
    buf = ReceiveBuffer()
    for piece in (b"ab\r", b"\nrest"):
        buf.feed(piece)
    assert buf.take_until(b"\r\n", 100) == b"ab\r\n"
    assert buf.take_until(b"\r\n", 100) is None
    assert buf.take_all() == b"rest"


def test_buffer_limit_counts_the_delimiter() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"abcd\n")
    with pytest.raises(FrameTooLarge):
        buf.take_until(b"\n", 4)
    buf2 = ReceiveBuffer()
    buf2.feed(b"abcd\n")
    assert buf2.take_until(b"\n", 5) == b"abcd\n"


def test_buffer_exact_and_some() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"0123456789")
    assert buf.take_exactly(11) is None
    assert buf.take_exactly(3) == b"012"
    assert buf.peek(2) == b"34"
    assert buf.take_some(100) == b"3456789"
    assert not buf


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 50))
def test_frames_survive_any_chunking(payloads: list[bytes], step: int) -> None:
    wire = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(wire), step):
        decoder.feed(wire[i : i + step])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == payloads


@given(st.binary(max_size=400))
def test_garbage_frames_raise_only_our_errors(data: bytes) -> None:
    decoder = FrameDecoder(max_size=1000)
    decoder.feed(data)
    decoder.feed(b"")
    try:
        while decoder.next_frame() is not None:
            pass
    except (FrameTooLarge, ConnectionClosed):
        pass


@given(st.binary(max_size=400), st.integers(1, 64))
def test_take_line_matches_split(data: bytes, limit: int) -> None:
    buf = ReceiveBuffer()
    buf.feed(data)
    lines = []
    try:
        while (line := take_line(buf, limit)) is not None:
            lines.append(line)
    except FrameTooLarge:
        return
    expected = [strip_eol(x + b"\n") for x in data.split(b"\n")[:-1]]
    assert lines == expected
    assert take_frame(ReceiveBuffer()) is None
