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
from typing import Final, cast

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
        if (
            self.client.sock is not None
            and self.upstream.sock is not None
            and (self.client.tls or self.upstream.tls)
        ):
            try:
                self._run_polled(self.client.sock, self.upstream.sock)
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

    def _run_polled(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both ways in one thread: an SSL object must not be read and written at once.

        Non-blocking sockets, one buffer per direction (bounded: a full buffer
        stops reading the other side), TLS records drained with ``pending()``.
        """
        import selectors
        import ssl

        would_block = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
        client.setblocking(False)
        upstream.setblocking(False)
        other = {client: upstream, upstream: client}
        outbox = {client: bytearray(), upstream: bytearray()}  # bytes waiting to go to it
        reading = {client: True, upstream: True}
        ending = {client: False, upstream: False}  # half-close it once its outbox is empty
        side_of = {client: self.client, upstream: self.upstream}
        counters = {upstream: self._counter(True), client: self._counter(False)}
        try:
            with selectors.DefaultSelector() as selector:
                for sock in (client, upstream):
                    selector.register(sock, selectors.EVENT_READ)
                while reading[client] or reading[upstream] or outbox[client] or outbox[upstream]:
                    if self.aborted:
                        return
                    for sock in (client, upstream):
                        mask = 0
                        if reading[sock] and len(outbox[other[sock]]) < BUFFER_SIZE:
                            mask |= selectors.EVENT_READ
                        if outbox[sock]:
                            mask |= selectors.EVENT_WRITE
                        if mask:
                            selector.modify(sock, mask)
                        else:
                            selector.modify(sock, selectors.EVENT_READ)
                    for key, events in selector.select(1.0):
                        sock = cast(socket.socket, key.fileobj)
                        if events & selectors.EVENT_WRITE and outbox[sock]:
                            with contextlib.suppress(*would_block):
                                sent = sock.send(outbox[sock])
                                del outbox[sock][:sent]
                                counters[sock](sent)
                            if not outbox[sock] and ending[sock]:
                                ending[sock] = False
                                side_of[sock].end_writing()
                        if events & selectors.EVENT_READ and reading[sock]:
                            try:
                                data = sock.recv(BUFFER_SIZE)
                                while data and getattr(sock, "pending", lambda: 0)():
                                    data += sock.recv(BUFFER_SIZE)
                            except would_block:
                                continue
                            if data:
                                outbox[other[sock]] += data
                                self.last_activity = time.monotonic()
                            else:
                                reading[sock] = False
                                if outbox[other[sock]]:
                                    ending[other[sock]] = True
                                else:
                                    side_of[other[sock]].end_writing()
                    if not reading[client] and not reading[upstream]:
                        break_when_flushed = not outbox[client] and not outbox[upstream]
                        if break_when_flushed:
                            return
        except OSError as exc:
            if not self.aborted:
                self.error = self.error or error_for(exc, "relay", self.upstream.name, None)
                self.abort()
