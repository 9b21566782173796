"""``socketeer connect ADDRESS``: a client, stdin to the socket and the socket to stdout.

``-z ADDRESS...`` only checks that the addresses are up (``readiness``), and
``--wait S`` retries: with ``-z`` until all are up, otherwise the session's
own connect, so the server sees no extra connection.
"""

from __future__ import annotations

import argparse

from ..address import Address
from ..errors import UsageError
from ._capture import Capture
from ._options import (
    IdleOptions,
    OutputOptions,
    SessionOptions,
    SocketArgs,
    StreamOptions,
    TLSClientOptions,
)
from ._programs import check_exec, run_program
from ._report import Reporter
from ._tls import client_config, client_tls


def run(args: argparse.Namespace) -> int:
    addresses = [Address.parse(text) for text in args.address]
    session = SessionOptions.from_args(args)
    if args.check:
        return _check(args, addresses, session)
    if len(addresses) > 1:
        raise UsageError("connect takes one ADDRESS (several only with -z)")
    address = addresses[0]
    program = check_exec(args, datagram=address.is_datagram)
    sockets = SocketArgs.from_args(args)
    stream = StreamOptions.from_args(args)
    idle = IdleOptions.from_args(args)
    capture = Capture(session)  # a bad path fails before anything connects
    try:
        report = Reporter.from_output(OutputOptions.from_args(args))
    except BaseException:
        capture.close()
        raise
    try:
        tls = client_tls(address, TLSClientOptions.from_args(args), report)
        if address.is_datagram:
            from ._datagram import datagram_client

            if args.wait:
                from ..readiness import wait_for

                wait_for([address], timeout=args.wait, connect_timeout=args.timeout)
            return datagram_client(
                address,
                report,
                idle_timeout=idle.seconds,
                crlf=stream.crlf,
                session=session,
                capture=capture,
                bind=_datagram_source(address, sockets.source),
                options=sockets.for_datagram(address),
            )
        from ..connection import Connection, connect
        from ..readiness import retrying
        from ._pump import StreamPump

        options = sockets.for_connect(address)

        def attempt(limit: float | None) -> Connection:
            return connect(address, timeout=limit, tls=tls, **options)

        if args.wait:
            conn = retrying(attempt, timeout=args.wait, connect_timeout=args.timeout)
        else:
            conn = attempt(args.timeout)
        report.info(f"connected to {conn.peer or address}")
        if program is not None:
            return run_program(conn, program, args)
        pump = StreamPump(
            report,
            half_close=stream.half_close,
            crlf=stream.crlf,
            idle_timeout=idle.seconds,
            session=session,
            capture=capture,
        )
        pump.add(conn)
        pump.run()
        return 0
    finally:
        report.close()
        capture.close()


def _check(args: argparse.Namespace, addresses: list[Address], session: SessionOptions) -> int:
    """``-z``: exit 0 when every address is up, 1 naming each that is not (``NotReady``)."""
    unused = [*session.given, *(["--hexdump"] if args.hexdump else [])]
    if args.exec_command is not None:
        unused.append("--exec")
    if args.idle_timeout:
        unused.append("--idle-timeout")
    if unused:
        raise UsageError(f"-z sends and receives nothing: drop {', '.join(unused)}")
    report = Reporter.from_output(OutputOptions.from_args(args))
    options = TLSClientOptions.from_args(args)
    tls = None
    if any(address.is_tls for address in addresses):
        tls = client_config(options, report, "the server's certificate")
    elif options.given or options.alpn:
        raise UsageError("TLS options need a tls:// address")
    from ..readiness import wait_for

    sockets = SocketArgs.from_args(args).for_connect("-z")
    wait_for(addresses, timeout=args.wait or 0, connect_timeout=args.timeout, tls=tls, **sockets)
    for address in addresses:
        report.info(f"{address} is up")
    return 0


def _datagram_source(address: Address, source: Address | None) -> Address | None:
    """``--source`` for a UDP client: the local address to bind, in the target's scheme."""
    if source is None:
        return None
    if not address.is_inet:
        raise UsageError(f"--source: not for {address} (Unix datagram clients are autobound)")
    return Address(address.scheme, host=source.host, port=source.port)
