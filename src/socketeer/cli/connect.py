"""``socketeer connect ADDRESS``: a client, stdin to the socket and the socket to stdout."""

from __future__ import annotations

import argparse

from ..address import Address
from ..connection import connect
from ._datagram import datagram_client
from ._pump import StreamPump
from ._report import Reporter
from ._tls import tls_config


def run(args: argparse.Namespace) -> int:
    address = Address.parse(args.address)
    report = Reporter(args.verbose, args.quiet, args.hexdump)
    try:
        if address.is_datagram:
            return datagram_client(address, args, report)
        tls = tls_config(args, address, report, server=False)
        conn = connect(address, timeout=args.timeout, tls=tls)
        report.info(f"connected to {conn.peer or address}")
        pump = StreamPump(
            report,
            half_close=not args.no_shutdown,
            crlf=args.crlf,
            idle_timeout=args.idle_timeout,
        )
        pump.add(conn)
        pump.run()
        return 0
    finally:
        report.close()
