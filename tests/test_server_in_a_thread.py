"""A library user's Server run in a thread that is not the main one (SPEC §4)."""

from __future__ import annotations

import os
import threading
import time

import pytest

import socketeer
import socketeer.aio
from socketeer.server import Server


def answer_once(conn: socketeer.Connection) -> None:
    """One line back, then the server ends the connection itself: a forked child
    also holds a copy of this process's client socket, so it would never see EOF."""
    conn.send_line(conn.recv_line())


async def answer_once_async(conn: socketeer.aio.Connection) -> None:
    await conn.send_line(await conn.recv_line())


@pytest.mark.parametrize("model", ["thread", "fork", "async"])
def test_shutdown_from_another_thread_is_prompt_and_leaves_no_child(model: str) -> None:
    handler = answer_once_async if model == "async" else answer_once
    server = Server("tcp://127.0.0.1:0", handler, model=model, grace=10.0)
    runner = threading.Thread(target=server.serve_forever)
    runner.start()
    try:
        with socketeer.connect(server.address, timeout=10) as conn:
            conn.send_line("hello")
            assert conn.recv_line() == b"hello"
            assert conn.recv() == b""  # the server closed it: the child is done
        started = time.monotonic()
        server.shutdown()
        runner.join(15)
        assert not runner.is_alive()
        # Nothing was open, so nothing waited out the 10 s grace period: the fork
        # model heard of its child's exit without SIGCHLD (not the main thread).
        assert time.monotonic() - started < 3
    finally:
        server.shutdown(now=True)
        runner.join(15)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no zombie left behind
