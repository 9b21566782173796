"""A descriptor that is not a socket, carried on a socket: a pty, a file, an inherited fd.

Everything that copies streams in socketeer (the relay's pairs on threads or
on an event loop, the exec handler) speaks to sockets. A pty master, a file
or an inherited pipe becomes one by a ``carry`` loop: it copies ``source`` to
the socket and the socket to ``sink`` in one thread, with ``poll``, and ends
each direction the way that kind of descriptor ends:

- ``source`` at EOF half-closes the socket (``SHUT_WR``); a pty master's EIO
  (its slave side is gone: the program exited) is its EOF;
- the socket at EOF calls ``at_eof``, which says whether the other direction
  goes on (a program on a pty gets its VEOF character and goes on writing; a
  file is closed; a serial-like pty ends);
- no ``source`` (a file written at TO): the socket is half-closed once the
  sink is done, so the client learns its bytes are down;
- no ``sink`` (a file read at FROM): what comes back is read and dropped.

The loop ends when both directions are done, or at once when the socket is
gone (the other end closed it: POLLHUP, EPIPE, a reset).

``poll`` on Linux; elsewhere ``select``, since macOS's ``poll`` does not
take devices (a pty). ``select`` does not say that a socket whose EOF was
read is now closed too, so there the loop learns it from the next write
(EPIPE) or from ``linger``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Final

__all__ = ["carry"]

CHUNK: Final = 64 * 1024
_GONE: Final = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF})
_HUP: Final = select.POLLHUP | select.POLLERR | select.POLLNVAL
_POLL_TAKES_DEVICES: Final = sys.platform.startswith("linux")


class _Waiter:
    """``poll`` where it takes every descriptor kind; ``select`` with poll's flags elsewhere."""

    def __init__(self) -> None:
        self._poller = select.poll() if _POLL_TAKES_DEVICES else None
        self._registered: set[int] = set()

    def wait(self, wanted: dict[int, int], timeout: float | None) -> dict[int, int]:
        """The events of ``wanted`` (fd to POLLIN/POLLOUT) that happened, by descriptor."""
        if self._poller is not None:
            for fd in self._registered - wanted.keys():
                self._poller.unregister(fd)
            for fd, mask in wanted.items():
                self._poller.register(fd, mask)  # registers or modifies
            self._registered = set(wanted)
            return dict(self._poller.poll(None if timeout is None else timeout * 1000))
        readers = [fd for fd, mask in wanted.items() if mask & select.POLLIN]
        writers = [fd for fd, mask in wanted.items() if mask & select.POLLOUT]
        readable, writable, _ = select.select(readers, writers, [], timeout)
        events: dict[int, int] = {}
        for fd in readable:
            events[fd] = select.POLLIN
        for fd in writable:
            events[fd] = events.get(fd, 0) | select.POLLOUT
        return events


def carry(
    sock: socket.socket,
    source: int | None,
    sink: int | None,
    *,
    at_eof: Callable[[], bool] = lambda: True,
    source_ends: bool = False,
    linger: float | None = None,
) -> None:
    """Copy ``source`` → ``sock`` and ``sock`` → ``sink`` until both are done (see above).

    ``at_eof()`` runs once the socket's EOF and every byte before it are in
    ``sink``; True lets ``source`` go on, False ends the loop. ``source_ends``:
    the loop ends with ``source`` (a program's pty: nothing is left to write
    to once it has exited). ``linger``: the loop ends this many seconds after
    the socket's EOF at the latest. Closes nothing but what the rules above
    say: the caller closes ``sock``, ``source`` and ``sink``. OSError other
    than the socket's peer going away propagates.
    """
    sock.setblocking(False)
    sock_fd = sock.fileno()
    to_sock = b""  # read from source, not yet sent
    to_sink = b""  # received, not yet written
    source_open = source is not None  # still read
    sock_open = True  # still read
    eof_passed = False  # the socket's EOF went on to at_eof
    sock_shut = False
    waiter = _Waiter()
    until: float | None = None  # when lingering after the socket's EOF ends

    def shut_sock() -> None:
        nonlocal sock_shut
        if not sock_shut:
            sock_shut = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    while True:
        if source is not None and not source_open and not to_sock:
            shut_sock()
            if source_ends:
                return
        if not sock_open and not to_sink and not eof_passed:
            eof_passed = True
            if not at_eof():
                return
            if linger is not None:
                until = time.monotonic() + linger
            if source is None:
                shut_sock()
        if sock_shut and eof_passed:
            return  # both directions done
        wanted: dict[int, int] = {sock_fd: 0}  # POLLHUP is reported even with no events asked
        if sock_open and not to_sink:
            wanted[sock_fd] |= select.POLLIN
        if to_sock:
            wanted[sock_fd] |= select.POLLOUT
        if source is not None and source_open and not to_sock:
            wanted[source] = select.POLLIN
        if sink is not None and to_sink:
            wanted[sink] = wanted.get(sink, 0) | select.POLLOUT
        if until is None:
            events = waiter.wait(wanted, None)
        else:
            left = until - time.monotonic()
            if left <= 0:
                return
            events = waiter.wait(wanted, left)
        got = events.get(sock_fd, 0)
        if got & (select.POLLERR | select.POLLNVAL):
            return
        if got & select.POLLHUP and not got & select.POLLIN:
            _last_bytes(sink, to_sink)
            return  # the other end closed the socket: nobody is left to copy for
        if got & select.POLLIN and sock_open and not to_sink:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                data = None
            except OSError as exc:
                if exc.errno in _GONE:
                    return
                raise
            if data == b"":
                sock_open = False
            elif data and sink is not None:
                to_sink = data
        if got & select.POLLOUT and to_sock:
            try:
                to_sock = to_sock[sock.send(to_sock) :]
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno in _GONE:
                    return
                raise
        if (
            source is not None
            and source_open
            and not to_sock
            and events.get(source, 0) & (select.POLLIN | _HUP)
        ):
            try:
                data = os.read(source, CHUNK)
            except BlockingIOError:
                data = None
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: a pty whose other side is gone
                    raise
                data = b""
            if data == b"":
                source_open = False
            elif data:
                to_sock = data
                with contextlib.suppress(BlockingIOError):
                    to_sock = to_sock[sock.send(to_sock) :]
        if sink is not None and to_sink and events.get(sink, 0) & (select.POLLOUT | _HUP):
            try:
                to_sink = to_sink[os.write(sink, to_sink) :]
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EIO, *_GONE):
                    raise
                to_sink = b""  # the sink is gone (a hung-up pty): what it would get is dropped


def _last_bytes(sink: int | None, data: bytes) -> None:
    """What the socket sent before it went, into ``sink`` as far as it takes them now."""
    while sink is not None and data:
        try:
            data = data[os.write(sink, data) :]
        except OSError:
            return
