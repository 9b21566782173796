"""``socketeer relay FROM TO``: for each client on FROM, open TO and copy both ways (SPEC §6)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import UsageError
from ..hexdump import HexDumper
from ..relay import relay
from ..server._log import JSONFormatter
from ._report import Reporter
from .serve import _networks


def _configure_log(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JSONFormatter()
        if args.log_format == "json"
        else logging.Formatter("socketeer: %(message)s")
    )
    level = logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING
    for name in ("socketeer.relay", "socketeer.server"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(level)


def _tls_settings(args: argparse.Namespace) -> dict[str, object]:
    """FROM's server side and TO's client side, from one set of options."""
    from ..relay.endpoints import parse_endpoint

    source, target = parse_endpoint(args.source), parse_endpoint(args.target)
    from_tls = getattr(source, "is_tls", False)
    to_tls = getattr(target, "is_tls", False)
    server_opts = args.cert or args.key or args.self_signed or args.client_ca
    client_opts = args.ca or args.insecure or args.server_name or args.pin
    if server_opts and not from_tls:
        raise UsageError("--cert, --key, --self-signed and --client-ca need a tls:// FROM")
    if client_opts and not to_tls:
        raise UsageError("--ca, --insecure, --server-name and --pin need a tls:// TO")
    if not (from_tls or to_tls):
        return {}
    from ..tls import TLSConfig, self_signed

    report = Reporter(args.verbose, args.quiet)
    alpn = tuple(p for p in (args.alpn or "").split(",") if p)
    settings: dict[str, object] = {}
    if from_tls:
        cert, key = args.cert, args.key
        if args.self_signed:
            cert, key, print_ = self_signed()
            report.notice(f"certificate SHA-256 fingerprint: {print_}")
        settings["tls_server"] = TLSConfig(cert=cert, key=key, ca=args.client_ca, alpn=alpn)
    if to_tls:
        if args.insecure:
            report.warn("--insecure: the certificate of TO is not verified")
        settings["tls_client"] = TLSConfig(
            ca=args.ca,
            insecure=args.insecure,
            server_name=args.server_name,
            pin=args.pin,
            alpn=alpn,
        )
    return settings


def run(args: argparse.Namespace) -> int:
    _configure_log(args)
    dump_file = None
    options: dict[str, object] = {"idle_timeout": args.idle_timeout}
    if args.max_sessions is not None:
        options["max_sessions"] = args.max_sessions
    stream_only = {
        "once": args.once,
        "max_connections": args.max_conns,
        "allow": _networks(args.allow),
        "deny": _networks(args.deny),
        "zero_copy": not args.no_splice,
        "proxy_protocol": args.proxy_protocol,
        "accept_proxy_protocol": args.accept_proxy_protocol,
    }
    if args.timeout is not None:
        stream_only["connect_timeout"] = args.timeout
    if args.hexdump:
        dump_file = sys.stderr if args.hexdump == "-" else open(args.hexdump, "w")  # noqa: SIM115
        stream_only["hexdump"] = HexDumper()
        stream_only["hexdump_write"] = lambda text: (dump_file.write(text), dump_file.flush())
    options.update(stream_only)
    options.update(_tls_settings(args))
    try:
        server = relay(args.source, args.target, **options)
        if not args.quiet and server.address is not None:
            print(f"socketeer: listening on {server.address}", file=sys.stderr, flush=True)
        server.serve_forever()
    finally:
        if dump_file is not None and dump_file is not sys.stderr:
            dump_file.close()
    return 0
