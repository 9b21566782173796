"""``socketeer relay FROM TO``: for each client on FROM, open TO and copy both ways (SPEC §6).

FROM and TO are parsed here, once, and handed to the library as endpoints:
the TLS checks need to know what they are, and the library need not parse
them again.
"""

from __future__ import annotations

import argparse
import logging

from ..address import Address
from ..errors import UsageError
from ..relay import relay
from ..relay.endpoints import Endpoint, parse_endpoint
from ._log import configure_log
from ._options import (
    AccessOptions,
    IdleOptions,
    OutputOptions,
    ServerOptions,
    SocketArgs,
    TLSClientOptions,
    TLSServerOptions,
)
from ._programs import relay_endpoints
from ._report import Reporter
from ._tls import client_config, server_config, serves_tls
from .joining import frame_args, joins, run_joined


def _is_tls(end: Endpoint) -> bool:
    return isinstance(end, Address) and end.is_tls


def _serves_tls(end: Endpoint, options: TLSServerOptions) -> bool:
    return isinstance(end, Address) and serves_tls(end, options)


def _check_tls(
    source: Endpoint, target: Endpoint, server: TLSServerOptions, client: TLSClientOptions
) -> None:
    """FROM's options need a tls:// FROM, TO's a tls:// TO: never silently ignored."""
    if server.given and not _serves_tls(source, server):
        raise UsageError("--cert, --key, --self-signed and --client-ca need a tls:// FROM")
    if client.given and not _is_tls(target):
        raise UsageError("--ca, --insecure, --server-name and --pin need a tls:// TO")
    if server.alpn and not (_serves_tls(source, server) or _is_tls(target)):
        raise UsageError("--alpn needs a tls:// FROM or TO")


def run(args: argparse.Namespace) -> int:
    output = OutputOptions.from_args(args)
    options = ServerOptions.from_args(args)
    access = AccessOptions.from_args(args)
    tls_server_options = TLSServerOptions.from_args(args)
    tls_client_options = TLSClientOptions.from_args(args)
    # Quieter than serve: warnings only, until -v asks for a line per ended pair.
    configure_log(options.log_format, output, default=logging.WARNING)
    if joins(args):  # --connect-both, --listen-both
        return run_joined(args, output)
    source, target = parse_endpoint(args.source), parse_endpoint(args.target)
    source, target = relay_endpoints(args, source, target)  # --pty, --pty-size, --append
    _check_tls(source, target, tls_server_options, tls_client_options)
    report = Reporter.from_output(output)
    try:
        tls_server = (
            server_config(tls_server_options, report)
            if _serves_tls(source, tls_server_options)
            else None
        )
        tls_client = (
            client_config(tls_client_options, report, "the certificate of TO")
            if _is_tls(target)
            else None
        )
        with relay(
            source,
            target,
            model=options.model,
            workers=options.workers,
            grace=options.grace,
            once=args.once,
            max_connections=options.max_connections,
            idle_timeout=IdleOptions.from_args(args).seconds,
            allow=access.allow,
            deny=access.deny,
            connect_timeout=args.timeout,
            zero_copy=not args.no_splice,
            proxy_protocol=args.proxy_protocol,
            accept_proxy_protocol=args.accept_proxy_protocol,
            observe=report.dump if report.dumps else None,
            tls_server=tls_server,
            tls_client=tls_client,
            max_sessions=args.max_sessions,
            **frame_args(args),  # --frame, --max-frame, --retry
            announce=report.notice,  # pty: says where its terminal is
            **SocketArgs.from_args(args).for_relay(),
        ) as server:
            if server.address is not None:
                report.notice(f"listening on {server.address}")
            server.serve_forever()
    finally:
        report.close()
    return 0
