"""Relay pairs on an event loop: every pair of a worker copied by one loop, on callbacks.

No thread and no task per pair: each socket has a reader callback for the
direction that reads it and, only while that direction is held up, a writer
callback for the direction that writes it. A direction copies until its
source is at EOF, then half-closes its destination (``SHUT_WR``; close_notify
on a TLS side, which goes on being read); the pair ends when both directions
are done, or on an error, an idle timeout or a forced shutdown (``abort``).

Zero-copy on Linux: bytes go socket → pipe → socket with non-blocking
``splice`` (``SPLICE_F_NONBLOCK`` on the pipe, ``O_NONBLOCK`` on the
sockets) and never become Python objects. A pipe is taken from a small pool
while bytes are in flight and given back once drained, so an idle pair holds
its two sockets and nothing else.

Buffered elsewhere, for TLS sides and for ``--hexdump``: ``recv_into`` one
buffer the loop shares, then ``send``; only the bytes a destination did not
take are copied out and kept.

Flow control is the same in both: a direction whose destination does not take
its bytes stops reading its source until they are out, so memory stays flat
whatever the peers do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .._flow import tls_closed, would_block
from .._sockio import error_for
from ..errors import SocketeerError

__all__ = ["LoopPair", "PipePool", "loop_resources"]

PIPE_SIZE: Final = 1 << 20
BUFFER_SIZE: Final = 256 * 1024
ROUNDS: Final = 8  # chunks per wake-up before other pairs get their turn
POOL_KEEP: Final = 64  # spare pipes kept open for the next burst
TRIM_AFTER: Final = 1.0  # seconds without a pipe in use before the spares are closed
_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ: Final = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_FATAL_SPLICE: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


class PipePool:
    """Pipes for splicing, lent while bytes are in flight (one pool per loop).

    Spare pipes are kept for the next burst while any pipe is in use; once
    none has been lent for ``TRIM_AFTER`` seconds they are closed too, so an
    idle relay holds its sockets and nothing else.
    """

    def __init__(self, loop: Any = None, keep: int = POOL_KEEP) -> None:
        self._spare: list[tuple[int, int]] = []
        self._keep = keep
        self._loop = loop
        self._trim: Any = None
        self.lent = 0
        self.capacity = PIPE_SIZE  # the smallest pipe made: a read this long may not be all

    def take(self) -> tuple[int, int]:
        """A pipe (read end, write end); raises OSError (EMFILE, ...) when none can be made."""
        if self._spare:
            self.lent += 1
            return self._spare.pop()
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # a smaller pipe still works, in smaller steps
            size = fcntl.fcntl(write_end, _F_GETPIPE_SZ)
            self.capacity = min(self.capacity, size)
        self.lent += 1
        return read_end, write_end

    def give(self, pipe: tuple[int, int], *, empty: bool = True) -> None:
        """Take a pipe back; one that still holds bytes (an aborted pair) is closed."""
        self.lent -= 1
        if empty and len(self._spare) < self._keep:
            self._spare.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])
        if not self.lent and self._spare and self._trim is None and self._loop is not None:
            self._trim = self._loop.call_later(TRIM_AFTER, self._trim_if_quiet)

    def _trim_if_quiet(self) -> None:
        self._trim = None
        if not self.lent:
            self.close()
        elif self._spare:  # busy again: look later
            self._trim = self._loop.call_later(TRIM_AFTER, self._trim_if_quiet)

    def close(self) -> None:
        for read_end, write_end in self._spare:
            os.close(read_end)
            os.close(write_end)
        self._spare.clear()


_per_thread = threading.local()


def loop_resources(loop: Any) -> tuple[PipePool, memoryview]:
    """The pipe pool and the read buffer every pair on this thread's loop shares."""
    found: tuple[PipePool, memoryview] | None = getattr(_per_thread, "resources", None)
    if found is None:
        found = _per_thread.resources = (PipePool(loop), memoryview(bytearray(BUFFER_SIZE)))
    return found


def close_loop_resources() -> None:
    """Close this thread's spare pipes (the loop is done)."""
    found = getattr(_per_thread, "resources", None)
    if found is not None:
        found[0].close()
        _per_thread.resources = None


class _Direction:
    """One way of a pair: read ``src``, write ``dst``."""

    __slots__ = (
        "done",
        "dst",
        "dst_fd",
        "eof",
        "held",
        "notify",
        "pair",
        "pending",
        "pipe",
        "queued",
        "reading",
        "splice",
        "src",
        "src_fd",
        "up",
    )

    def __init__(self, pair: LoopPair, src: socket.socket, dst: socket.socket, up: bool) -> None:
        self.pair = pair
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.up = up
        self.splice = pair.zero_copy
        self.pipe: tuple[int, int] | None = None
        self.queued = 0  # bytes in the pipe
        self.pending: bytes = b""  # buffered mode: bytes dst did not take yet
        self.notify: bytes = b""  # a TLS dst's close_notify, not all written yet
        self.eof = False
        self.held = False  # waiting for dst to take bytes: dst's writer callback is on
        self.reading = False  # src's reader callback is on
        self.done = False

    # -- readiness ----------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            if self.splice:
                self._splice_in()
            else:
                self._copy_in()
        except OSError as exc:
            if self.splice and exc.errno in _FATAL_SPLICE and not self.queued:
                self._release_pipe()
                self.splice = False  # not spliceable after all: buffer this way
                self.pair.loop.call_soon(self.on_readable)
                return
            self.pair.fail(exc, self)

    def on_writable(self) -> None:
        if self.notify:
            self._send_notify()
            return
        try:
            flushed = self._splice_out() if self.splice else self._flush()
        except OSError as exc:
            self.pair.fail(exc, self)
            return
        if not flushed:
            return
        self.pair.loop.remove_writer(self.dst_fd)
        self.held = False
        if self.eof:
            self._finish()
        else:
            self._release_pipe()
            self.read()
            if self._tls_pending():
                self.pair.loop.call_soon(self.on_readable)

    # -- zero-copy ------------------------------------------------------------------

    def _splice_in(self) -> None:
        if self.pipe is None:
            self.pipe = self.pair.pool.take()
        write_end = self.pipe[1]
        for _ in range(ROUNDS):
            try:
                moved = os.splice(self.src_fd, write_end, PIPE_SIZE, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                break
            if moved == 0:
                self.eof = True
                break
            self.queued += moved
            if not self._splice_out():
                return  # held: dst's writer callback takes over
            if moved < self.pair.pool.capacity:
                break  # src is drained for now: the loop says when more comes
        if self.eof:
            self._finish()
        elif not self.queued:
            self._release_pipe()

    def _splice_out(self) -> bool:
        """Move the pipe's bytes to dst; False (and held) if dst is full."""
        assert self.pipe is not None or not self.queued
        while self.queued:
            assert self.pipe is not None
            try:
                sent = os.splice(self.pipe[0], self.dst_fd, self.queued, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                self._hold()
                return False
            self.queued -= sent
            self.pair.moved(sent, self.up)
        return True

    def _release_pipe(self) -> None:
        if self.pipe is not None:
            self.pair.pool.give(self.pipe, empty=not self.queued)
            self.pipe = None
            self.queued = 0

    # -- buffered -----------------------------------------------------------------

    def _copy_in(self) -> None:
        if self.held:
            return  # bytes wait for dst (the other direction's half-close may add some)
        buffer = self.pair.buffer
        blocked = would_block()
        for _ in range(ROUNDS):
            try:
                received = self.src.recv_into(buffer)
            except blocked:
                return
            except tls_closed():  # the peer's close_notify after ours: its EOF
                received = 0
            if received == 0:
                self.eof = True
                self._finish()
                return
            chunk = buffer[:received]
            if self.pair.observe is not None:
                self.pair.observe(bytes(chunk), ">" if self.up else "<")
            try:
                sent = self.dst.send(chunk)
            except blocked:
                sent = 0
            if sent:
                self.pair.moved(sent, self.up)
            if sent < received:
                self.pending = bytes(chunk[sent:])
                self._hold()
                return
            if received < len(buffer):
                break  # src is drained for now (TLS: what it decrypted is checked below)
        if self._tls_pending():  # decrypted bytes poll() cannot see: come back for them
            self.pair.loop.call_soon(self.on_readable)

    def _flush(self) -> bool:
        try:
            sent = self.dst.send(self.pending)
        except would_block():
            return False
        self.pair.moved(sent, self.up)
        self.pending = self.pending[sent:]
        return not self.pending

    def _tls_pending(self) -> bool:
        pending = getattr(self.src, "pending", None)
        return bool(pending is not None and pending())

    # -- state ----------------------------------------------------------------------

    def read(self) -> None:
        """Have the loop call ``on_readable`` when src has bytes (or EOF)."""
        self.reading = True
        self.pair.loop.add_reader(self.src_fd, self.on_readable)

    def _unread(self) -> None:
        if self.reading:
            self.reading = False
            self.pair.loop.remove_reader(self.src_fd)

    def _hold(self) -> None:
        """dst is full: stop reading src until it drains (flow control)."""
        if not self.held:
            self.held = True
            self._unread()
            self.pair.loop.add_writer(self.dst_fd, self.on_writable)

    def _finish(self) -> None:
        """src is at EOF and everything read is out: half-close dst."""
        if self.queued or self.pending:
            return  # the writer callback finishes once they are out
        self._release_pipe()
        self._unread()
        if hasattr(self.dst, "pending"):  # TLS
            self._close_notify()
            return
        self.done = True
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)
        self.pair.direction_done()

    def _close_notify(self) -> None:
        """TLS's half-close of dst: close_notify, written raw; dst goes on being read.

        What dst decrypted and the other direction has not read yet would be
        lost to the close (``tls.close_notify``): it is taken out first and
        handed to the other direction as bytes waiting for its dst.
        """
        from ..tls import close_notify, read_decrypted

        other = self.pair.down if self.up else self.pair.up
        try:
            early = read_decrypted(self.dst)  # type: ignore[arg-type]
            if early:
                if other.pair.observe is not None:
                    other.pair.observe(early, ">" if other.up else "<")
                other.pending += early
                other._hold()
            self.notify = close_notify(self.dst)  # type: ignore[arg-type]
        except OSError:
            self.notify = b""  # no socket pair (EMFILE): no half-close, as a gone peer
        self._send_notify()

    def _send_notify(self) -> None:
        try:
            sent = os.write(self.dst_fd, self.notify)
        except would_block():
            sent = 0
        except OSError:  # a peer that is gone: its reader says how
            sent = len(self.notify)
        self.notify = self.notify[sent:]
        if self.notify:
            if not self.held:
                self.held = True
                self.pair.loop.add_writer(self.dst_fd, self.on_writable)
            return
        if self.held:
            self.held = False
            self.pair.loop.remove_writer(self.dst_fd)
        self.done = True
        self.pair.direction_done()

    def stop(self) -> None:
        self._unread()
        if self.held:
            self.held = False
            self.pair.loop.remove_writer(self.dst_fd)
        self._release_pipe()


class LoopPair:
    """A client socket and its upstream socket, copied both ways on ``loop``.

    ``on_end(pair)`` is called once, when the pair is over and both sockets are
    closed; ``error`` says why if it failed. ``last_activity`` (monotonic) is
    when a byte last moved, for the idle timer.
    """

    __slots__ = (
        "buffer",
        "bytes_down",
        "bytes_up",
        "client",
        "down",
        "ended",
        "error",
        "last_activity",
        "loop",
        "observe",
        "on_end",
        "pool",
        "up",
        "upstream",
        "upstream_name",
        "zero_copy",
    )

    def __init__(
        self,
        loop: Any,
        client: socket.socket,
        upstream: socket.socket,
        *,
        pool: PipePool,
        buffer: memoryview,
        on_end: Callable[[LoopPair], None],
        upstream_name: str,
        zero_copy: bool = True,
        observe: Callable[[bytes, str], None] | None = None,
    ) -> None:
        self.loop = loop
        self.client, self.upstream = client, upstream
        self.pool, self.buffer = pool, buffer
        self.on_end = on_end
        self.upstream_name = upstream_name
        tls = hasattr(client, "pending") or hasattr(upstream, "pending")
        self.zero_copy = zero_copy and observe is None and not tls
        self.observe = observe
        self.bytes_up = 0  # client -> upstream
        self.bytes_down = 0  # upstream -> client
        self.last_activity = time.monotonic()
        self.error: SocketeerError | None = None
        self.ended = False  # both sockets come non-blocking (loop_client makes them so)
        self.up = _Direction(self, client, upstream, True)
        self.down = _Direction(self, upstream, client, False)

    def start(self) -> None:
        """Begin copying (on the loop's thread)."""
        self.up.read()
        self.down.read()
        for direction in (self.up, self.down):  # TLS bytes decrypted with the handshake
            if direction._tls_pending():
                self.loop.call_soon(direction.on_readable)

    @property
    def finished(self) -> bool:
        return self.ended

    def moved(self, count: int, up: bool) -> None:
        if up:
            self.bytes_up += count
        else:
            self.bytes_down += count
        self.last_activity = time.monotonic()

    def direction_done(self) -> None:
        if self.up.done and self.down.done:
            self._end()

    def fail(self, exc: OSError, direction: _Direction) -> None:
        if self.ended:
            return
        # A reset comes from the side being read; anything else from the side written.
        reading_client = direction.up == (exc.errno == errno.ECONNRESET)
        self.error = error_for(
            exc, "relay", "client" if reading_client else self.upstream_name, None
        )
        self._end()

    def abort(self, reason: SocketeerError | None = None) -> None:
        """Cut both sides now (an idle timeout, a forced shutdown)."""
        if not self.ended:
            self.error = self.error or reason
            self._end()

    def _end(self) -> None:
        self.ended = True
        self.up.stop()
        self.down.stop()
        self.client.close()
        self.upstream.close()
        self.on_end(self)
