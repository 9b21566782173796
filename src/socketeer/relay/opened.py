"""Relay endpoints that are not sockets: files, ptys, programs on a pty, inherited descriptors.

Each is opened as a socket: one end of a socketpair goes to the pair (so the
thread and event-loop copiers, half-close and the idle timer treat it as any
other side), the other is carried to the descriptor by a thread
(``_bridge.carry``) that ends the way that kind of descriptor ends. An
inherited socket (``fd:N`` of a connected socket) needs no carrying: it is
the side itself.

Opening fails with one line: a file that cannot be read or written, a pty
that cannot be made, a descriptor that is not open.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Callable

from .._bridge import carry
from ..address import Address
from ..errors import NetworkError, UsageError
from .endpoints import Endpoint, File, Program, Pty
from .stream import Side

__all__ = [
    "Carried",
    "carried_side",
    "check_descriptor",
    "check_file",
    "is_carried",
    "is_listening_fd",
    "open_carried",
]


def is_carried(end: Endpoint) -> bool:
    """Opened here (not dialled, not standard I/O, not a program on pipes)."""
    if isinstance(end, Program):
        return end.pty
    if isinstance(end, Address):
        return end.scheme == "fd"
    return isinstance(end, (File, Pty))


def is_listening_fd(fd: int) -> bool:
    """``fd:N`` names a listening socket (served), not a stream (carried)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return True  # let the server's adoption say what is wrong with it
    if not stat.S_ISSOCK(mode):
        return False
    with socket.socket(fileno=os.dup(fd)) as sock:
        if sock.type != socket.SOCK_STREAM:
            return True  # a datagram socket is served as one
        try:
            return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        except OSError:
            return False


def check_descriptor(number: int) -> None:
    """Fail at start on an ``fd:N`` TO that is not open.

    Raises:
        NetworkError: descriptor N is not open.
    """
    try:
        os.fstat(number)
    except OSError as exc:
        raise NetworkError(f"fd:{number} is not open: {exc.strerror}") from None


def check_file(end: File, *, writing: bool) -> None:
    """Fail at start, not per client, on a file that cannot be opened as asked.

    Raises:
        NetworkError: FROM does not exist or cannot be read; TO cannot be written.
    """
    path = end.path
    if not writing:
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            _file_error(path, "read", _why(path))
        return
    if os.path.isdir(path):
        _file_error(path, "write", "is a directory")
    if os.path.exists(path):
        ok = os.access(path, os.W_OK)
    else:
        ok = os.access(os.path.dirname(os.path.abspath(path)), os.W_OK | os.X_OK)
    if not ok:
        _file_error(path, "write", _why(path))


def _why(path: str) -> str:
    if not os.path.lexists(path) and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return "no such directory"
    return "no such file" if not os.path.lexists(path) else "permission denied"


def _file_error(path: str, verb: str, why: str) -> None:
    raise NetworkError(f"file:{path}: cannot {verb}: {why}")


class Carried:
    """An opened endpoint: ``sock`` is the pair's end; ``close()`` undoes everything."""

    def __init__(
        self,
        name: str,
        work: Callable[[socket.socket], None] | None = None,
        cleanup: Callable[[], None] | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        """``work(theirs)`` carries the far end of a new socketpair; or ``sock`` is the side.

        A carrier that fails (a write refused: a full disk, a device's error)
        keeps the error in ``error``, for whoever closes it to report: the
        pair sees only an EOF on its end.
        """
        self.name = name
        self.error: NetworkError | None = None
        self._cleanup = cleanup
        self._thread: threading.Thread | None = None
        if work is None:
            assert sock is not None
            self.sock = sock
        else:
            try:
                ours, theirs = socket.socketpair()
            except OSError as exc:
                if cleanup is not None:
                    cleanup()
                raise NetworkError(f"{name}: {exc.strerror}") from None
            self.sock = ours

            def run() -> None:
                try:
                    work(theirs)
                except OSError as exc:
                    self.error = NetworkError(f"{name}: {exc.strerror or exc}")
                finally:
                    theirs.close()

            self._thread = threading.Thread(target=run, name=f"carry {name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Close the pair's end (the carrier sees it go), wait for the carrier, clean up."""
        self.sock.close()
        if self._thread is not None:
            self._thread.join()
        if self._cleanup is not None:
            cleanup, self._cleanup = self._cleanup, None
            cleanup()


def open_carried(
    end: Endpoint, *, at_from: bool, announce: Callable[[str], None] | None = None
) -> Carried:
    """Open ``end`` (``is_carried``) for one pair; ``announce`` is told a new pty's path.

    Raises:
        NetworkError: it cannot be opened.
    """
    if isinstance(end, Program):
        return _program_on_pty(end)
    if isinstance(end, File):
        return _file(end, at_from)
    if isinstance(end, Pty):
        return _pty(end, announce)
    assert isinstance(end, Address) and end.scheme == "fd"
    return _descriptor(end.fd)


def _program_on_pty(end: Program) -> Carried:
    from .._pty import PtyProcess

    proc = PtyProcess(end.argv, size=end.pty_size)

    def work(theirs: socket.socket) -> None:
        proc.carry(theirs)  # hangs up and reaps at the end

    try:
        return Carried(str(end), work)
    except BaseException:
        proc.close(grace=0)
        raise


def _file(end: File, at_from: bool) -> Carried:
    if at_from:
        flags = os.O_RDONLY
    else:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if end.append else os.O_TRUNC)
    try:
        fd = os.open(end.path, flags | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        verb = "read" if at_from else "write"
        raise NetworkError(f"file:{end.path}: cannot {verb}: {exc.strerror}") from None

    def work(theirs: socket.socket) -> None:
        if at_from:
            carry(theirs, fd, None)  # what comes back is dropped
        else:
            carry(theirs, None, fd)

    return Carried(str(end), work, lambda: os.close(fd))


def _pty(end: Pty, announce: Callable[[str], None] | None) -> Carried:
    from .._pty import open_pty

    master, slave = open_pty(raw=True)  # held open: openers come and go, as on a serial line
    name = os.ttyname(slave)
    try:
        if end.link is not None:
            _replace_link(end.link, name)
    except OSError as exc:
        os.close(master)
        os.close(slave)
        raise NetworkError(f"pty:{end.link}: cannot make the link: {exc.strerror}") from None
    if announce is not None:
        announce(f"pty {name}" + (f" linked from {end.link}" if end.link else ""))
    os.set_blocking(master, False)

    def work(theirs: socket.socket) -> None:
        carry(theirs, master, master, at_eof=lambda: False)  # a line has no half-close

    def cleanup() -> None:
        os.close(master)
        os.close(slave)
        if end.link is not None:
            with contextlib.suppress(OSError):
                if os.readlink(end.link) == name:
                    os.unlink(end.link)

    return Carried(str(end), work, cleanup)


def _replace_link(link: str, name: str) -> None:
    """Point ``link`` at ``name`` in one step (a reader never finds it missing)."""
    staging = f"{link}.{os.getpid()}.{threading.get_ident()}"
    os.symlink(name, staging)
    try:
        os.replace(staging, link)
    except BaseException:
        os.unlink(staging)
        raise


def _descriptor(number: int) -> Carried:
    """``fd:N`` as a stream: a socket is the side itself; anything else is carried."""
    try:
        fd = os.dup(number)
    except OSError as exc:
        raise NetworkError(f"fd:{number} is not open: {exc.strerror}") from None
    os.set_inheritable(fd, False)
    if stat.S_ISSOCK(os.fstat(fd).st_mode):
        sock = socket.socket(fileno=fd)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.close()
            raise UsageError(f"fd:{number} is a listening socket: it can be FROM, not a stream")
        return Carried(f"fd:{number}", sock=sock)
    import fcntl

    access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    source = fd if access in (os.O_RDONLY, os.O_RDWR) else None
    sink = fd if access in (os.O_WRONLY, os.O_RDWR) else None

    def work(theirs: socket.socket) -> None:
        carry(theirs, source, sink)

    return Carried(f"fd:{number}", work, lambda: os.close(fd))


def carried_side(
    end: Endpoint,
    *,
    at_from: bool,
    announce: Callable[[str], None] | None,
    report: bool = True,
) -> Side:
    """``open_carried`` as a pair's ``Side``: closing it closes everything behind it.

    The carrier's failure is the side's ``failure()``; with ``report`` it is
    also logged at close (a server's client: the pair's own log line sees
    only an EOF). A one-pair relay reports it as its result instead.
    """
    carried = open_carried(end, at_from=at_from, announce=announce)
    side = Side.of_socket(carried.sock, carried.name)

    def close() -> None:
        carried.close()
        if report and carried.error is not None:
            from ..server import _log

            _log.log.warning("%s", carried.error)

    side.close = close
    side.failure = lambda: carried.error
    return side
