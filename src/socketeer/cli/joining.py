"""relay's tunnels and joins: ``--frame``, ``--connect-both``, ``--listen-both``, ``--retry``.

``frame_args`` turns the options into ``relay()``'s keywords for a
``--frame`` relay; ``run_joined`` runs the two relays that have no FROM and
TO in the usual sense (both sides connected, or both listened on).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..address import Address
from ..errors import UsageError
from ..relay.joined import ConnectBoth, ListenBoth
from ..relay.retry import DEFAULT_MAX_DELAY, DEFAULT_RETRY_DELAY, RetryPolicy
from ._options import OutputOptions, SocketArgs, TLSClientOptions, TLSServerOptions
from ._report import Reporter
from ._tls import client_config, server_config

__all__ = ["frame_args", "joins", "run_joined"]

_RETRY_NEEDS = "--retry and --retry-delay need a side that connects"


def joins(args: argparse.Namespace) -> bool:
    """Whether the command line is a joined relay (``run_joined`` runs it)."""
    return bool(args.connect_both or args.listen_both)


def _retry_policy(args: argparse.Namespace, *, forever: bool) -> RetryPolicy | None:
    if args.retry is None and args.retry_delay is None:
        return None
    delay = DEFAULT_RETRY_DELAY if args.retry_delay is None else args.retry_delay
    if args.retry is None:  # --retry-delay alone
        retries = None if forever else 0
    else:
        retries = None if args.retry == "forever" else args.retry
    return RetryPolicy(retries=retries, delay=delay, max_delay=max(DEFAULT_MAX_DELAY, delay))


def frame_args(args: argparse.Namespace) -> dict[str, Any]:
    """``relay()``'s ``frame``, ``max_frame`` and ``retry`` (none of them when not given)."""
    if not args.frame:
        if args.max_frame is not None:
            raise UsageError("--max-frame needs --frame")
        retry = _retry_policy(args, forever=False)
        return {} if retry is None else {"retry": retry}  # TO, connected per client
    return {
        "frame": True,
        "max_frame": args.max_frame,
        "retry": _retry_policy(args, forever=False),
    }


def _refuse_others(args: argparse.Namespace, mode: str) -> None:
    """The options of a relay with a FROM and a TO have no meaning here: never ignored."""
    given = {
        "--frame": args.frame,
        "--max-frame": args.max_frame is not None,
        "--model": args.model is not None,
        "--workers": args.workers != 1,
        "--max-conns": args.max_conns is not None,
        "--allow/--deny": bool(args.allow or args.deny),
        "--proxy-protocol": args.proxy_protocol is not None,
        "--accept-proxy-protocol": args.accept_proxy_protocol,
        "--hexdump": args.hexdump is not None,
        "--max-sessions": args.max_sessions is not None,
        "-i/--idle-timeout": args.idle_timeout is not None,
    }
    refused = [name for name, value in given.items() if value]
    if refused:
        raise UsageError(f"{', '.join(refused)}: not for {mode}")


def _stream(text: str, mode: str) -> Address:
    address = Address.parse(text)
    if not address.is_stream:
        raise UsageError(f"{mode} joins stream addresses, not {address}")
    return address


def run_joined(args: argparse.Namespace, output: OutputOptions) -> int:
    """``relay --connect-both A B`` or ``relay --listen-both A B``, until stopped."""
    mode = "--connect-both" if args.connect_both else "--listen-both"
    _refuse_others(args, mode)
    ends = (_stream(args.source, mode), _stream(args.target, mode))
    tls = any(end.is_tls for end in ends)
    tls_server_options = TLSServerOptions.from_args(args)
    tls_client_options = TLSClientOptions.from_args(args)
    sockets = SocketArgs.from_args(args)
    report = Reporter.from_output(output)
    joined: ConnectBoth | ListenBoth
    try:
        if args.connect_both:
            if tls_server_options.given:
                raise UsageError(
                    "--cert, --key, --self-signed and --client-ca: --connect-both accepts "
                    "no TLS (--ca, --insecure, --server-name and --pin check the sides)"
                )
            if tls_client_options.given and not tls:
                raise UsageError("--ca, --insecure, --server-name and --pin need a tls:// side")
            joined = ConnectBoth(
                *ends,
                retry=_retry_policy(args, forever=True),
                connect_timeout=args.timeout,
                tls_client=client_config(tls_client_options, report, "a side's certificate")
                if tls
                else None,
                options=sockets.for_connect(mode),
                once=args.once,
                zero_copy=not args.no_splice,
            )
        else:
            if args.retry is not None or args.retry_delay is not None:
                raise UsageError(f"{_RETRY_NEEDS} (--listen-both only listens)")
            if tls_client_options.given:
                raise UsageError(
                    "--ca, --insecure, --server-name and --pin: --listen-both connects to nothing"
                )
            if tls_server_options.given and not tls:
                raise UsageError("--cert, --key, --self-signed and --client-ca need a tls:// side")
            joined = ListenBoth(
                *ends,
                tls_server=server_config(tls_server_options, report) if tls else None,
                once=args.once,
                zero_copy=not args.no_splice,
                options=sockets.for_listen(mode),
            )
            for address in joined.addresses:
                report.notice(f"listening on {address}")
        with joined:
            joined.serve_forever()
    finally:
        report.close()
    return 0
