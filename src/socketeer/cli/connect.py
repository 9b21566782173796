"""``socketeer connect ADDRESS``: a client, stdin to the socket and the socket to stdout."""

from __future__ import annotations

import argparse

from ..address import Address
from ..connection import connect
from ._datagram import datagram_client
from ._options import IdleOptions, OutputOptions, StreamOptions, TLSClientOptions
from ._pump import StreamPump
from ._report import Reporter
from ._tls import client_tls


def run(args: argparse.Namespace) -> int:
    address = Address.parse(args.address)
    stream = StreamOptions.from_args(args)
    idle = IdleOptions.from_args(args)
    report = Reporter.from_output(OutputOptions.from_args(args))
    try:
        tls = client_tls(address, TLSClientOptions.from_args(args), report)
        if address.is_datagram:
            return datagram_client(address, report, idle_timeout=idle.seconds, crlf=stream.crlf)
        conn = connect(address, timeout=args.timeout, tls=tls)
        report.info(f"connected to {conn.peer or address}")
        pump = StreamPump(
            report, half_close=stream.half_close, crlf=stream.crlf, idle_timeout=idle.seconds
        )
        pump.add(conn)
        pump.run()
        return 0
    finally:
        report.close()
