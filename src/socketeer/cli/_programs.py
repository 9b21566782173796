"""Programs on a connection: ``connect``/``listen --exec``, ``serve … exec --pty``, ``--pty``.

ncat's ``-e`` on either side: the program gets the connected socket itself
as stdin and stdout (no copying through socketeer), on a pseudo-terminal with
``--pty`` (copied through its master), through a polled pair over TLS. The
command's exit status is the program's (128 + N when signal N ended it).
"""

from __future__ import annotations

import argparse

from ..errors import NetworkError, UsageError

# Imported when used: connect and listen load this module, and a plain
# client must not pay for subprocess, shlex or the relay (tests/test_layers).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..connection import Connection
    from ..relay.endpoints import Endpoint

__all__ = ["check_exec", "relay_endpoints", "run_program", "serve_handler"]


def _size(args: argparse.Namespace) -> tuple[int, int]:
    from .._pty import DEFAULT_SIZE

    size: tuple[int, int] | None = args.pty_size
    return DEFAULT_SIZE if size is None else size


def _check_pty_flags(args: argparse.Namespace, has_program: bool, what: str) -> None:
    if args.pty and not has_program:
        raise UsageError(f"--pty needs {what}")
    if args.pty_size is not None and not args.pty:
        raise UsageError("--pty-size needs --pty")


def check_exec(args: argparse.Namespace, *, datagram: bool) -> list[str] | None:
    """``--exec COMMAND`` split into argv (None without it), checked before connecting.

    Raises:
        UsageError: an empty or unbalanced command, a program not installed,
            ``--pty`` without ``--exec``, ``--exec`` on a datagram address.
    """
    command: str | None = args.exec_command
    _check_pty_flags(args, command is not None, "--exec COMMAND")
    if command is None:
        return None
    import shlex
    import shutil

    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--exec {command!r}: {exc}") from None
    if not argv:
        raise UsageError("--exec needs a command: --exec 'PROG ARGS'")
    if shutil.which(argv[0]) is None:
        raise UsageError(f"exec: program not found: {argv[0]}")
    if datagram:
        raise UsageError("--exec needs a stream address (a program reads a stream)")
    _check_unused(args)
    return argv


def _check_unused(args: argparse.Namespace) -> None:
    """Options about copying standard I/O mean nothing once a program has the connection."""
    from ._options import SessionOptions

    unused = SessionOptions.from_args(args).given
    flags = {
        "--hexdump": args.hexdump,
        "--crlf": args.crlf,
        "--no-shutdown": args.no_shutdown,
        "--idle-timeout": args.idle_timeout,
    }
    unused += [name for name, value in flags.items() if value]
    if unused:
        raise UsageError(f"--exec hands the connection to the program: drop {', '.join(unused)}")


def run_program(conn: Connection, argv: list[str], args: argparse.Namespace) -> int:
    """Run ``argv`` on ``conn`` until it exits; its exit status. Closes ``conn``."""
    import subprocess

    from .._pty import PtyProcess

    tls = conn.is_tls
    if args.pty:
        if tls:
            conn.close()
            raise UsageError("--exec --pty is for plain connections, not TLS")
        sock, _ = conn.detach()
        try:
            proc = PtyProcess(argv, size=_size(args))
            return proc.carry(sock)
        finally:
            sock.close()
    if tls:
        return _over_tls(conn, argv)
    try:
        proc_pipes = subprocess.Popen(argv, stdin=conn.fileno(), stdout=conn.fileno())
    except OSError as exc:
        raise NetworkError(f"exec: cannot run {argv[0]}: {exc.strerror}") from None
    finally:
        conn.close()  # the program holds the socket now
    try:
        return _status(proc_pipes.wait())
    finally:
        if proc_pipes.poll() is None:  # interrupted: the program goes too
            proc_pipes.terminate()
            proc_pipes.wait()


def _over_tls(conn: Connection, argv: list[str]) -> int:
    """TLS cannot be handed to a program: its pipes are copied to the session."""
    import subprocess

    from ..relay.stream import Pair, Side

    sock, _ = conn.detach()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except OSError as exc:
        sock.close()
        raise NetworkError(f"exec: cannot run {argv[0]}: {exc.strerror}") from None
    pair = Pair(Side.of_socket(sock, "server"), Side.of_program(proc, argv[0]), zero_copy=False)
    pair.run()  # closes both sides: the program is waited for
    return _status(proc.wait())


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def serve_handler(args: argparse.Namespace, handler: Any) -> Any:
    """``serve``'s HANDLER (``handler`` as resolved so far), with ``--pty`` for exec.

    Raises:
        UsageError: ``--pty`` with a handler other than exec.
    """
    _check_pty_flags(args, args.handler == "exec", "the exec handler")
    if not args.pty:
        return handler
    from ..handlers.exec import Exec

    argv = list(args.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    return Exec(argv, pty=True, pty_size=_size(args))


def relay_endpoints(
    args: argparse.Namespace, source: Endpoint, target: Endpoint
) -> tuple[Endpoint, Endpoint]:
    """FROM and TO with ``--pty`` (and ``--pty-size``) and ``--append`` applied.

    Raises:
        UsageError: ``--pty`` with no ``exec:`` endpoint, ``--append`` with no ``file:`` TO.
    """
    import dataclasses

    from ..relay.endpoints import File, Program

    programs = [end for end in (source, target) if isinstance(end, Program)]
    if args.pty and not programs:
        raise UsageError("--pty needs an exec: endpoint")
    if args.pty_size is not None and not (args.pty or any(end.pty for end in programs)):
        raise UsageError("--pty-size needs --pty or a pty-exec: endpoint")
    if args.append and not isinstance(target, File):
        raise UsageError("--append needs a file: TO")

    def applied(end: Endpoint, at_to: bool) -> Endpoint:
        if isinstance(end, Program) and (args.pty or end.pty):
            return dataclasses.replace(end, pty=True, pty_size=_size(args))
        if isinstance(end, File) and at_to and args.append:
            return dataclasses.replace(end, append=True)
        return end

    return applied(source, False), applied(target, True)
