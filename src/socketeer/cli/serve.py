"""``socketeer serve ADDRESS HANDLER [ARGS...]``: a concurrent server (SPEC §4, §5)."""

from __future__ import annotations

import argparse
import logging

from ..address import Address
from ..server import Server
from ._log import configure_log
from ._options import (
    AccessOptions,
    IdleOptions,
    OutputOptions,
    ServerOptions,
    SocketArgs,
    TLSServerOptions,
)
from ._programs import serve_handler
from ._proxy_server import proxy_handler
from ._report import Reporter
from ._tls import server_tls


def run(args: argparse.Namespace) -> int:
    output = OutputOptions.from_args(args)
    options = ServerOptions.from_args(args)
    access = AccessOptions.from_args(args)
    configure_log(options.log_format, output, default=logging.INFO)  # a line per connection
    report = Reporter.from_output(output)
    address = Address.parse(args.address)
    handler, handler_args = proxy_handler(args)  # socks5 / http-proxy take serve's options
    handler = serve_handler(args, handler)  # exec --pty: the handler itself
    server = Server(
        address,
        handler,
        handler_args=handler_args,
        model=options.model or "thread",  # the parser's default: never None here
        workers=options.workers,
        max_connections=options.max_connections,
        idle_timeout=IdleOptions.from_args(args).seconds,
        allow=access.allow,
        deny=access.deny,
        grace=options.grace,
        tls=server_tls(address, TLSServerOptions.from_args(args), report),
        accept_proxy_protocol=args.accept_proxy_protocol,
        **SocketArgs.from_args(args).for_server(),
    )
    with server:
        report.notice(f"listening on {server.address}")
        server.serve_forever()
    return 0
