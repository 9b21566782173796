"""Copying a pair of streams both ways: zero-copy with ``splice`` on Linux, buffered elsewhere.

A pair has two directions, each a thread that copies until EOF and then
half-closes the other side (EOF becomes ``SHUT_WR``), so a request-then-EOF
client still gets its whole reply. The pair ends when both directions are
done, or when one fails or idles out (then both sides are cut).

Zero-copy: bytes go socket → pipe → socket inside the kernel with
``os.splice`` and never become Python objects. The pipe is enlarged to 1 MiB
(``F_SETPIPE_SZ``), so each system call moves up to that much. It is also the
only buffer: an upstream that stops reading stops the relay from reading its
client, so memory stays flat whatever the peers do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

from .._flow import Outlet, receive_ready
from .._sockio import error_for
from ..errors import SocketeerError

HAS_SPLICE: Final = sys.platform.startswith("linux") and hasattr(os, "splice")
PIPE_SIZE: Final = 1 << 20
BUFFER_SIZE: Final = 256 * 1024
_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_F_MOVE: Final = getattr(os, "SPLICE_F_MOVE", 1)


class Side:
    """One end of a pair: where to read, where to write, how to end each."""

    sock: socket.socket | None = None  # a socket side: what TLS pairs poll
    tls = False

    def __init__(
        self,
        name: str,
        read_fd: int,
        write_fd: int,
        *,
        end_writing: Callable[[], None],
        abort: Callable[[], None],
        close: Callable[[], None],
    ) -> None:
        self.name = name
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.end_writing = end_writing
        self.abort = abort
        self.close = close
        # What went wrong behind the side, once closed (a carried file that
        # could not be written): the pair itself saw only an EOF.
        self.failure: Callable[[], BaseException | None] = _no_failure

    @classmethod
    def of_socket(cls, sock: socket.socket, name: str) -> Side:
        sock.setblocking(True)
        tls = hasattr(sock, "getpeercert")  # an ssl.SSLSocket

        def end_writing() -> None:
            if tls:
                return  # a TLS pair is polled: its Outlet sends close_notify (_outlet)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

        def abort() -> None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it

        side = cls(
            name,
            sock.fileno(),
            sock.fileno(),
            end_writing=end_writing,
            abort=abort,
            close=sock.close,
        )
        side.sock, side.tls = sock, tls
        return side

    @classmethod
    def of_program(cls, proc: subprocess.Popen[bytes], name: str) -> Side:
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        def end_writing() -> None:
            with contextlib.suppress(OSError):
                stdin.close()  # the program reads EOF

        def abort() -> None:
            if proc.poll() is None:
                proc.terminate()

        def close() -> None:
            end_writing()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stdout.close()

        return cls(
            name, stdout.fileno(), stdin.fileno(), end_writing=end_writing, abort=abort, close=close
        )

    @classmethod
    def of_stdio(cls) -> Side:
        def end_writing() -> None:
            with contextlib.suppress(OSError):
                os.close(1)

        return cls("stdio", 0, 1, end_writing=end_writing, abort=lambda: None, close=lambda: None)


def _no_failure() -> None:
    return None


def _splice_copy(src: int, dst: int, count: Callable[[int], None]) -> None:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a smaller pipe still works, in smaller steps
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        while True:
            moved = os.splice(src, write_end, PIPE_SIZE, flags=_SPLICE_F_MOVE)
            if moved == 0:
                return
            while moved:
                sent = os.splice(read_end, dst, moved, flags=_SPLICE_F_MOVE)
                moved -= sent
                count(sent)
    finally:
        os.close(read_end)
        os.close(write_end)


def _buffered_copy(
    src: int, dst: int, count: Callable[[int], None], observe: Callable[[bytes], None] | None = None
) -> None:
    buffer = bytearray(BUFFER_SIZE)
    view = memoryview(buffer)
    while True:
        received = os.readv(src, [buffer])
        if received == 0:
            return
        if observe is not None:
            observe(bytes(view[:received]))
        chunk = view[:received]
        while chunk:
            sent = os.write(dst, chunk)
            chunk = chunk[sent:]
            count(sent)


class Pair:
    """A client and its upstream, copied both ways until both are done."""

    def __init__(
        self,
        client: Side,
        upstream: Side,
        *,
        zero_copy: bool = HAS_SPLICE,
        observe: Callable[[bytes, str], None] | None = None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.zero_copy = zero_copy and HAS_SPLICE and observe is None
        self.observe = observe
        self.bytes_up = 0  # client -> upstream
        self.bytes_down = 0  # upstream -> client
        self.started = time.monotonic()
        self.last_activity = self.started
        self.error: SocketeerError | None = None
        self.aborted = False
        # A polled pair waits for events with no timeout; abort() wakes it here.
        self._polled = client.tls or upstream.tls
        self._wake_lock = threading.Lock()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        if self._polled:
            self._wake = socket.socketpair()
            for end in self._wake:
                end.setblocking(False)

    def _counter(self, up: bool) -> Callable[[int], None]:
        def count(n: int) -> None:
            if up:
                self.bytes_up += n
            else:
                self.bytes_down += n
            self.last_activity = time.monotonic()

        return count

    def _observer(self, up: bool) -> Callable[[bytes], None] | None:
        observe = self.observe
        if observe is None:
            return None
        marker = ">" if up else "<"

        def see(data: bytes) -> None:
            observe(data, marker)

        return see

    def _direction(self, src: Side, dst: Side, up: bool) -> None:
        count = self._counter(up)
        try:
            if self.zero_copy:
                try:
                    _splice_copy(src.read_fd, dst.write_fd, count)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: not spliceable (a tty): buffer it
                        raise
                    _buffered_copy(src.read_fd, dst.write_fd, count)
            else:
                _buffered_copy(src.read_fd, dst.write_fd, count, self._observer(up))
            dst.end_writing()  # EOF on one side becomes SHUT_WR on the other
        except OSError as exc:
            if not self.aborted:
                where = src.name if exc.errno in (errno.ECONNRESET,) else dst.name
                self.error = self.error or error_for(exc, "relay", where, None)
                self.abort()

    def abort(self) -> None:
        """Cut both sides now (an error, an idle timeout, a forced shutdown).

        Safe from any thread. A polled pair is only woken: its own thread cuts
        the sides, since an SSL object must not be touched by two threads.
        """
        self.aborted = True
        with self._wake_lock:
            if self._wake is not None:
                with contextlib.suppress(OSError):  # already woken (its buffer is full)
                    self._wake[1].send(b"!")
                return
        self._cut()

    def _cut(self) -> None:
        self.client.abort()
        self.upstream.abort()

    def run(self) -> None:
        """Copy both ways; returns when both directions have ended. Closes both sides."""
        if self._polled:
            try:
                self._run_polled()
            finally:
                with self._wake_lock:
                    wake, self._wake = self._wake, None
                for end in wake or ():
                    end.close()
                self.client.close()
                self.upstream.close()
            return
        up = threading.Thread(
            target=self._direction, args=(self.client, self.upstream, True), daemon=True
        )
        up.start()
        try:
            self._direction(self.upstream, self.client, False)
            up.join()
        finally:
            self.client.close()
            self.upstream.close()

    def _run_polled(self) -> None:
        """Both ways in one thread: an SSL object must not be read and written at once.

        One side's EOF ends only its direction (the other side is half-closed
        once its outbox is out: ``SHUT_WR``, or close_notify on TLS); the other
        direction goes on to its own end.
        The loop sleeps until an event, ``abort()`` being one of them.
        """
        assert self._wake is not None
        wake = self._wake[0]
        copy = _PolledCopy(self)
        # poll, not epoll: standard I/O may be a regular file (always ready).
        with selectors.PollSelector() as selector:
            selector.register(wake, selectors.EVENT_READ)
            registered: dict[int, int] = {}
            try:
                while not copy.done and not self.aborted:
                    _update(selector, registered, copy.interest())
                    for key, events in selector.select():
                        if key.fileobj is wake:
                            break
                        copy.on_event(key.fd, events)
            except OSError as exc:
                if not self.aborted:
                    self.error = self.error or error_for(exc, "relay", copy.where, None)
                self.aborted = True
        if self.aborted:
            self._cut()


class _PolledCopy:
    """A polled pair's state: per side, an ``Outlet`` to write it and whether it is read.

    A side is read only while the other side's outbox has room (the high-water
    mark), with ``receive_ready`` for sockets, so TLS records already
    decrypted are not left waiting for an event that never comes.
    """

    def __init__(self, pair: Pair) -> None:
        self.sides = (pair.client, pair.upstream)
        self.other = {pair.client: pair.upstream, pair.upstream: pair.client}
        self.outlets = {side: _outlet(side) for side in self.sides}
        self.reading = {side: True for side in self.sides}
        self.count = {pair.upstream: pair._counter(True), pair.client: pair._counter(False)}
        self.see = {pair.client: pair._observer(True), pair.upstream: pair._observer(False)}
        self.pair = pair
        self.where = pair.upstream.name  # the side of the last operation, for an error

    @property
    def done(self) -> bool:
        return all(outlet.done for outlet in self.outlets.values())

    def interest(self) -> dict[int, int]:
        """The events to wait for, by descriptor."""
        wanted: dict[int, int] = {}
        for side in self.sides:
            if self.reading[side] and self.outlets[self.other[side]].has_room:
                wanted[side.read_fd] = selectors.EVENT_READ
            if self.outlets[side].pending:
                wanted[side.write_fd] = wanted.get(side.write_fd, 0) | selectors.EVENT_WRITE
        return wanted

    def on_event(self, fd: int, events: int) -> None:
        for side in self.sides:
            if events & selectors.EVENT_WRITE and fd == side.write_fd:
                self._flush(side)
            if events & selectors.EVENT_READ and fd == side.read_fd and self.reading[side]:
                self._read(side)

    def _flush(self, side: Side) -> None:
        self.where = side.name
        sent = self.outlets[side].flush()
        if sent:
            self.count[side](sent)

    def _read(self, side: Side) -> None:
        self.where = side.name
        data = _receive(side)
        if data is None:
            return
        target = self.other[side]
        if not data:  # EOF: passed on once the outbox is out
            self.reading[side] = False
            self.outlets[target].finish()
            return
        self.pair.last_activity = time.monotonic()
        observe = self.see[side]
        if observe is not None:
            observe(data)
        self.outlets[target].queue(data)
        self._flush(target)  # most often it takes it all at once


def _outlet(side: Side) -> Outlet:
    """How the polled loop writes ``side``, ending it as the side says."""
    if side.sock is not None:
        side.sock.setblocking(False)
        # A TLS side ends as the Outlet ends TLS: close_notify, and read on.
        end = None if side.tls else side.end_writing
        return Outlet(side.sock, high_water=BUFFER_SIZE, end=end)
    if side.write_fd > 2:
        # A pipe this process made (a program's stdin): written as it drains,
        # so a program that stops reading until its output is read cannot
        # block the loop that would read it. Standard output is shared with
        # whoever started us, so its mode stays theirs (written blocking).
        os.set_blocking(side.write_fd, False)
    return Outlet(side.write_fd, high_water=BUFFER_SIZE, end=side.end_writing)


def _receive(side: Side) -> bytes | None:
    if side.sock is not None:
        return receive_ready(side.sock, BUFFER_SIZE)
    return os.read(side.read_fd, BUFFER_SIZE)


def _update(
    selector: selectors.BaseSelector, registered: dict[int, int], wanted: dict[int, int]
) -> None:
    """Make the selector watch exactly ``wanted`` (fd to events), given what it watches."""
    for fd in list(registered):
        if fd not in wanted:
            selector.unregister(fd)
            del registered[fd]
    for fd, mask in wanted.items():
        if fd not in registered:
            selector.register(fd, mask)
        elif registered[fd] != mask:
            selector.modify(fd, mask)
        registered[fd] = mask
