"""``socketeer listen ADDRESS``: accept one client (or many with ``-k``), then as connect."""

from __future__ import annotations

import argparse

from ..address import Address
from ..listener import listen
from ._datagram import datagram_server
from ._pump import StreamPump
from ._report import Reporter
from ._tls import tls_config


def run(args: argparse.Namespace) -> int:
    address = Address.parse(args.address)
    report = Reporter(args.verbose, args.quiet, args.hexdump)
    try:
        if address.is_datagram:
            return datagram_server(address, args, report)
        tls = tls_config(args, address, report, server=True)
        pump = StreamPump(
            report,
            half_close=not args.no_shutdown,
            crlf=args.crlf,
            idle_timeout=args.idle_timeout,
        )
        with listen(address, tls=tls) as listener:
            report.notice(f"listening on {listener.address}")
            if args.keep_open:
                pump.run(listener, max_conns=args.max_conns)
                return 0
            conn = listener.accept(timeout=args.timeout)
        # Like nc -l: one client, and the listening socket (and its file) is gone.
        report.info(f"connection from {conn.peer or 'local client'}")
        pump.add(conn)
        pump.run()
        return 0
    finally:
        report.close()
