"""``--delay``'s pacing, without I/O: every byte comes out once, in order, in whole
lines no closer together than the delay (fuzzed over how stdin's reads split)."""

from __future__ import annotations

import argparse
import itertools

from hypothesis import given
from hypothesis import strategies as st

from socketeer.cli._options import SessionOptions, SocketArgs
from socketeer.cli._pacing import LinePacer
from socketeer.cli.parser import build_parser

from .conftest import NOBODY


@given(st.lists(st.binary(max_size=40), max_size=20), st.sampled_from([0.0, 0.5, 2.0]))
def test_lines_come_out_whole_in_order_and_spaced(chunks: list[bytes], delay: float) -> None:
    pacer = LinePacer(delay)
    now, out, times = 100.0, [], []
    for chunk in [*chunks, None]:
        if chunk is None:
            pacer.end()
        else:
            pacer.feed(chunk)
        while pacer.waiting:
            wait = pacer.wait(now)
            assert wait is not None and wait >= 0
            now += wait
            line = pacer.take(now)
            assert line is not None
            out.append(line)
            times.append(now)
    assert b"".join(out) == b"".join(chunks)
    assert all(line.endswith(b"\n") for line in out[:-1])
    assert all(b"\n" not in line[:-1] for line in out)
    assert all(b - a >= delay - 1e-9 for a, b in itertools.pairwise(times))
    assert pacer.wait(now) is None


def test_a_line_is_not_taken_before_it_is_due() -> None:
    pacer = LinePacer(1.0)
    pacer.feed(b"a\nb\n")
    assert pacer.take(10.0) == b"a\n"
    assert pacer.take(10.5) is None
    assert pacer.wait(10.5) == 0.5
    assert pacer.take(11.0) == b"b\n"


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_session_and_socket_groups_default_to_nothing() -> None:
    for argv in (("connect", f"127.0.0.1:{NOBODY}"), ("listen", "127.0.0.1:0")):
        args = _args(*argv)
        assert SessionOptions.from_args(args) == SessionOptions()
        assert SocketArgs.from_args(args) == SocketArgs()
    for argv in (("serve", "127.0.0.1:0", "echo"), ("relay", "127.0.0.1:0", f"127.0.0.1:{NOBODY}")):
        assert SocketArgs.from_args(_args(*argv)) == SocketArgs(keepalive_default=True)


def test_keepalive_defaults_per_command() -> None:
    assert SocketArgs.from_args(_args("connect", "h:1")).for_connect("h:1")["keepalive"] is False
    assert SocketArgs.from_args(_args("serve", ":0", "echo")).for_server()["keepalive"] is True
    relay = SocketArgs.from_args(_args("relay", "--no-keepalive", ":0", "h:1")).for_relay()
    assert relay["keepalive"] is False
    timed = SocketArgs.from_args(_args("connect", "--keepalive=5,2,3", "h:1")).for_connect("h:1")
    assert str(timed["keepalive"]) == "5,2,3"
