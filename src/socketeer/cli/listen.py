"""``socketeer listen ADDRESS``: accept one client (or many with ``-k``), then as connect."""

from __future__ import annotations

import argparse

from .._deadline import Deadline
from ..access import AccessList
from ..address import Address
from ..connection import Connection
from ..errors import Timeout, UsageError
from ..listener import Listener, listen
from ._capture import Capture
from ._datagram import datagram_server
from ._options import (
    AccessOptions,
    IdleOptions,
    OutputOptions,
    SessionOptions,
    SocketArgs,
    StreamOptions,
    TLSServerOptions,
)
from ._programs import check_exec, run_program
from ._pump import StreamPump
from ._report import Reporter
from ._tls import server_tls


def run(args: argparse.Namespace) -> int:
    address = Address.parse(args.address)
    program = check_exec(args, datagram=address.is_datagram)
    if program is not None and args.keep_open:
        raise UsageError("--exec serves one client: for many, serve ADDRESS exec -- PROG")
    stream = StreamOptions.from_args(args)
    idle = IdleOptions.from_args(args)
    rules = AccessOptions.from_args(args)
    access = AccessList(rules.allow, rules.deny) if rules else None
    session = SessionOptions.from_args(args)
    sockets = SocketArgs.from_args(args)
    capture = Capture(session)  # a bad path fails before anything listens
    try:
        report = Reporter.from_output(OutputOptions.from_args(args))
    except BaseException:
        capture.close()
        raise
    try:
        tls = server_tls(address, TLSServerOptions.from_args(args), report)
        if address.is_datagram:
            return datagram_server(
                address,
                report,
                idle_timeout=idle.seconds,
                crlf=stream.crlf,
                access=access,
                session=session,
                capture=capture,
                options=sockets.for_datagram(address),
            )
        pump = StreamPump(
            report,
            half_close=stream.half_close,
            crlf=stream.crlf,
            idle_timeout=idle.seconds,
            session=session,
            capture=capture,
        )
        with listen(address, tls=tls, **sockets.for_listen(address)) as listener:
            report.notice(f"listening on {listener.address}")
            if args.keep_open:
                pump.run(listener, max_conns=args.max_conns, access=access)
                return 0
            conn = _first_client(listener, args.timeout, access, report)
        # Like nc -l: one client, and the listening socket (and its file) is gone.
        report.info(f"connection from {conn.peer or 'local client'}")
        if program is not None:
            return run_program(conn, program, args)
        pump.add(conn)
        pump.run()
        return 0
    finally:
        report.close()
        capture.close()


def _first_client(
    listener: Listener, timeout: float | None, access: AccessList | None, report: Reporter
) -> Connection:
    """The first client ``access`` permits; the denied are closed, before any TLS handshake.

    Raises:
        Timeout: no permitted client within ``timeout`` (all of it, denied ones included).
    """
    deadline = Deadline(timeout)
    while True:
        try:
            conn = listener.accept(timeout=deadline.remaining(), handshake=False)
        except Timeout as exc:
            if timeout is None:
                raise
            # One message whether or not denied clients used up part of the wait.
            raise Timeout(f"accept timed out after {timeout:g}s: {listener.address}") from exc
        if access is None or access.permits(conn.peer):
            break
        report.warn(f"connection from {conn.peer} closed: denied by --allow/--deny")
        conn.close()
    if listener.tls_context is not None:
        conn.start_tls(listener.tls_context)
    return conn
