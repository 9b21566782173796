"""From the TLS options of the command line to a ``TLSConfig`` (or None: no TLS asked for)."""

from __future__ import annotations

import argparse

from ..address import Address
from ..errors import UsageError
from ._report import Reporter


def tls_config(
    args: argparse.Namespace, address: Address, report: Reporter, *, server: bool
) -> object | None:
    given = any(
        getattr(args, name, None)
        for name in ("cert", "key", "ca", "insecure", "server_name", "pin", "alpn", "self_signed")
    )
    if not address.is_tls:
        if given:
            raise UsageError(f"TLS options need a tls:// address, not {address}")
        return None
    from ..tls import TLSConfig, self_signed

    cert, key = args.cert, args.key
    if server and getattr(args, "self_signed", False):
        if cert or key:
            raise UsageError("--self-signed makes its own certificate: drop --cert/--key")
        cert, key, print_ = self_signed()
        report.notice(f"certificate SHA-256 fingerprint: {print_}")
    if getattr(args, "insecure", False):
        report.warn("--insecure: the server's certificate is not verified")
    alpn = tuple(p for p in (args.alpn or "").split(",") if p)
    return TLSConfig(
        ca=args.ca,
        cert=cert,
        key=key,
        insecure=getattr(args, "insecure", False),
        server_name=getattr(args, "server_name", None),
        alpn=alpn,
        pin=getattr(args, "pin", None),
    )
