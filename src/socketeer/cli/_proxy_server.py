"""serve's ``--user``/``--target-allow``/``--target-deny``: into a socks5 or http-proxy handler."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from ._options import _split

PROXY_HANDLERS = ("socks5", "http-proxy")


def proxy_handler(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The handler and its arguments for ``Server``: a proxy object built from the options.

    Raises:
        UsageError: the options with another handler, or arguments after a proxy handler.
    """
    given = [
        flag
        for flag, values in (
            ("--user", args.user),
            ("--target-allow", args.target_allow),
            ("--target-deny", args.target_deny),
        )
        if values
    ]
    if args.handler not in PROXY_HANDLERS:
        if given:
            raise UsageError(f"{', '.join(given)}: for the socks5 and http-proxy handlers only")
        return args.handler, list(args.args)
    if args.args:
        raise UsageError(f"handler {args.handler} takes no arguments, got {' '.join(args.args)}")
    from ..handlers.proxy import HttpProxy, Socks5Proxy

    kind = Socks5Proxy if args.handler == "socks5" else HttpProxy
    return kind(
        users=args.user,
        target_allow=_split(args.target_allow),
        target_deny=_split(args.target_deny),
    ), []
