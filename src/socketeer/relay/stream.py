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
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

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

    @classmethod
    def of_socket(cls, sock: socket.socket, name: str) -> Side:
        sock.setblocking(True)
        tls = hasattr(sock, "getpeercert")  # an ssl.SSLSocket

        def end_writing() -> None:
            if tls:
                return  # no half-close over TLS (see Connection.shutdown_write)
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
        """Cut both sides now (an error, an idle timeout, a forced shutdown)."""
        self.aborted = True
        self.client.abort()
        self.upstream.abort()

    def run(self) -> None:
        """Copy both ways; returns when both directions have ended. Closes both sides."""
        if self.client.tls or self.upstream.tls:
            try:
                self._run_polled()
            finally:
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

        Socket sides are non-blocking, with a bounded outbox each (a full one
        stops reading the other side) and TLS records drained with
        ``pending()``; standard I/O and programs are read when ready and
        written directly.
        """
        import selectors
        import ssl

        would_block = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
        sides = (self.client, self.upstream)
        other = {self.client: self.upstream, self.upstream: self.client}
        outbox = {side: bytearray() for side in sides}  # waiting to be written to that side
        reading = {side: True for side in sides}
        ending = {side: False for side in sides}  # end writing once its outbox is empty
        count = {self.upstream: self._counter(True), self.client: self._counter(False)}
        for side in sides:
            if side.sock is not None:
                side.sock.setblocking(False)

        def receive(side: Side) -> bytes:
            if side.sock is None:
                return os.read(side.read_fd, BUFFER_SIZE)
            data = side.sock.recv(BUFFER_SIZE)
            while data and getattr(side.sock, "pending", lambda: 0)():
                data += side.sock.recv(BUFFER_SIZE)
            return data

        def deliver(side: Side, data: bytes) -> None:
            if side.sock is None:
                view = memoryview(data)
                while view:
                    view = view[os.write(side.write_fd, view) :]
                count[side](len(data))
            else:
                outbox[side] += data

        def flush(side: Side) -> None:
            assert side.sock is not None
            with contextlib.suppress(*would_block):
                sent = side.sock.send(outbox[side])
                del outbox[side][:sent]
                count[side](sent)
            if not outbox[side] and ending[side]:
                ending[side] = False
                side.end_writing()

        try:
            with selectors.DefaultSelector() as selector:
                registered: dict[int, int] = {}
                while any(reading.values()) or any(outbox.values()):
                    if self.aborted:
                        return
                    wanted: dict[int, tuple[int, Side]] = {}
                    for side in sides:
                        mask = 0
                        if reading[side] and len(outbox[other[side]]) < BUFFER_SIZE:
                            mask |= selectors.EVENT_READ
                        if side.sock is not None and outbox[side]:
                            mask |= selectors.EVENT_WRITE
                        if mask:
                            wanted[side.read_fd] = (mask, side)
                    for fd in list(registered):
                        if fd not in wanted:
                            selector.unregister(fd)
                            del registered[fd]
                    for fd, (mask, side) in wanted.items():
                        if fd not in registered:
                            selector.register(fd, mask, side)
                        elif registered[fd] != mask:
                            selector.modify(fd, mask, side)
                        registered[fd] = mask
                    for key, events in selector.select(1.0):
                        side = key.data
                        if events & selectors.EVENT_WRITE and outbox[side]:
                            flush(side)
                        if not (events & selectors.EVENT_READ and reading[side]):
                            continue
                        try:
                            data = receive(side)
                        except would_block:
                            continue
                        target = other[side]
                        if data:
                            deliver(target, data)
                            self.last_activity = time.monotonic()
                            continue
                        reading[side] = False  # EOF: pass it on once the outbox is out
                        if outbox[target]:
                            ending[target] = True
                        else:
                            target.end_writing()
        except OSError as exc:
            if not self.aborted:
                self.error = self.error or error_for(exc, "relay", self.upstream.name, None)
                self.abort()
