"""``socketeer serve ADDRESS HANDLER [ARGS...]``: a concurrent server (SPEC §4, §5)."""

from __future__ import annotations

import argparse

from ..address import Address
from ..server import Server
from ..server._log import configure
from ._report import Reporter
from ._tls import tls_config


def _networks(values: list[str] | None) -> list[str]:
    """``--allow A --allow B`` and ``--allow A,B`` alike."""
    return [part for value in values or [] for part in value.split(",") if part]


def run(args: argparse.Namespace) -> int:
    configure(args.log_format, args.verbose, args.quiet)
    report = Reporter(args.verbose, args.quiet)
    tls = tls_config(args, Address.parse(args.address), report, server=True)
    server = Server(
        args.address,
        args.handler,
        handler_args=args.args,
        model=args.model,
        workers=args.workers,
        max_connections=args.max_conns,
        idle_timeout=args.idle_timeout,
        allow=_networks(args.allow),
        deny=_networks(args.deny),
        grace=args.grace,
        tls=tls,
    )
    with server:
        report.notice(f"listening on {server.address}")
        server.serve_forever()
    return 0
