"""Pseudo-terminals: open one, size it, run a program on it as its controlling terminal.

The one place for the pty mechanics that ``serve … exec --pty``, ``connect
--exec … --pty``, the relay's ``pty:`` endpoint and ``exec:… --pty`` share.
A program gets the slave as stdin, stdout and stderr in a new session whose
controlling terminal it is (so ``tty``, job control and ``/dev/tty`` work, and
closing the master hangs it up); the caller copies bytes through the master.

Started without ``preexec_fn`` (unsafe with threads): on Linux ``posix_spawn``
calls ``setsid`` before its file actions, and a session leader that opens a
terminal acquires it; elsewhere a small Python step calls ``setsid`` and
``TIOCSCTTY`` before it execs the program. ``termios`` and ``fcntl`` are
imported only when a pty is made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Final

from .errors import NetworkError, UsageError

__all__ = ["DEFAULT_SIZE", "PtyProcess", "open_pty", "parse_size", "set_size"]

#: Columns and rows, a terminal's classic 80x24.
DEFAULT_SIZE: Final = (80, 24)

#: Seconds a program on a pty may go on after the connection's EOF (its ^D)
#: before the terminal hangs up: a raw stream cannot tell "no more input"
#: from "the client is gone", and a server must not keep programs forever.
HANGUP_AFTER_EOF: Final = 5.0

_LINUX: Final = sys.platform.startswith("linux")
_LARGEST = 0xFFFF  # struct winsize holds unsigned shorts
_REAP_GRACE: Final = 2.0  # seconds a hung-up program gets before SIGTERM, then SIGKILL

# Off Linux: become a session leader, take the terminal on stdin, become the program.
_CTTY_STEP = (
    "import fcntl, os, sys, termios\n"
    "os.setsid()\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def parse_size(text: str) -> tuple[int, int]:
    """``COLSxROWS`` (``132x43``) as (columns, rows).

    Raises:
        UsageError: not two positive numbers joined by ``x``.
    """
    cols, sep, rows = text.lower().partition("x")
    if sep and cols.isdigit() and rows.isdigit():
        size = int(cols), int(rows)
        if all(0 < n <= _LARGEST for n in size):
            return size
    raise UsageError(f"not COLSxROWS (e.g. 80x24): {text!r}")


def set_size(fd: int, size: tuple[int, int]) -> None:
    """Set the window size of the terminal on ``fd`` (TIOCSWINSZ)."""
    import fcntl
    import termios

    cols, rows = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def open_pty(size: tuple[int, int] | None = DEFAULT_SIZE, *, raw: bool = False) -> tuple[int, int]:
    """A new pseudo-terminal: (master, slave), both non-inheritable.

    ``raw``: no echo, no line editing, no newline translation — a serial line
    rather than a terminal (the relay's ``pty:`` endpoint).

    Raises:
        NetworkError: no pty could be made (none left, EMFILE).
    """
    try:
        master, slave = os.openpty()
    except OSError as exc:
        raise NetworkError(f"cannot open a pseudo-terminal: {exc.strerror}") from None
    try:
        if size is not None:
            set_size(slave, size)
        if raw:
            import tty

            tty.setraw(slave)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


class PtyProcess:
    """A program on a new pseudo-terminal: ``master`` is the caller's end.

    ``close()`` hangs the terminal up (closing the master sends SIGHUP to the
    program's session) and reaps the program, SIGTERM and SIGKILL following
    if it lingers.

    Raises:
        NetworkError: no pty, or the program could not be started.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        size: tuple[int, int] = DEFAULT_SIZE,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.master, slave = open_pty(size)
        self.returncode: int | None = None
        try:
            self.tty_name = os.ttyname(slave)
            self.pid = _spawn(self.argv, slave, self.tty_name, env)
        except OSError as exc:
            os.close(self.master)
            raise NetworkError(f"exec: cannot run {self.argv[0]}: {exc.strerror}") from None
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)  # the program has its own: a read on the master ends with it
        self._master_open = True

    def poll(self) -> int | None:
        """The exit status if the program has ended (reaping it), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: nothing left to wait for
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = _exit_status(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the program to end; None if it is still running after ``timeout``."""
        if timeout is None:
            if self.returncode is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = _exit_status(status)
                except ChildProcessError:
                    self.returncode = -1
            return self.returncode
        end = time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            left = end - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return self.returncode

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the program's session (its process group)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def hangup(self) -> None:
        """Close the master: the terminal hangs up, the session gets SIGHUP."""
        if self._master_open:
            self._master_open = False
            os.close(self.master)

    def carry(self, sock: socket.socket, linger: float | None = HANGUP_AFTER_EOF) -> int:
        """Copy ``sock`` to the terminal and back until the program ends; its exit status.

        The socket's EOF becomes the terminal's end-of-file character (VEOF,
        ^D), as a user typing it: a shell or ``cat`` ends, and its last
        output is still copied; a program still running ``linger`` seconds
        later is hung up (None: never). The socket gone, it is hung up at once.
        """
        from ._bridge import carry

        os.set_blocking(self.master, False)
        eof = _eof_character(self.master)

        def at_eof() -> bool:
            with contextlib.suppress(OSError):
                os.write(self.master, eof)
            return True

        try:
            carry(sock, self.master, self.master, at_eof=at_eof, source_ends=True, linger=linger)
        finally:
            status = self.close()
        return status

    def close(self, grace: float = _REAP_GRACE) -> int:
        """Hang up and reap; the exit status (128 + N for signal N)."""
        self.hangup()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if self.wait(grace) is not None:
                break
            self.signal(signum)
        status = self.wait()
        assert status is not None
        return status


def _eof_character(fd: int) -> bytes:
    import termios

    try:
        eof = termios.tcgetattr(fd)[6][termios.VEOF]
    except (OSError, termios.error):
        return b"\x04"
    return eof if isinstance(eof, bytes) and eof != b"\x00" else b"\x04"


def _exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _spawn(argv: list[str], slave: int, tty_name: str, env: Mapping[str, str] | None) -> int:
    environment = dict(os.environ if env is None else env)
    environment.setdefault("TERM", "xterm")
    resets = (signal.SIGPIPE, getattr(signal, "SIGXFSZ", signal.SIGPIPE))  # Python ignores them
    if _LINUX:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, tty_name, os.O_RDWR, 0),  # the session takes it here
            (os.POSIX_SPAWN_DUP2, 0, 1),
            (os.POSIX_SPAWN_DUP2, 0, 2),
        ]
        return os.posix_spawnp(
            argv[0], argv, environment, file_actions=actions, setsid=True, setsigdef=resets
        )
    actions = [(os.POSIX_SPAWN_DUP2, slave, n) for n in (0, 1, 2)]
    step = [sys.executable, "-c", _CTTY_STEP, *argv]
    return os.posix_spawn(sys.executable, step, environment, file_actions=actions, setsigdef=resets)
