"""From the TLS option groups to a ``TLSConfig``, or None when no TLS is asked for.

The checks are here so every command words them alike: TLS options on a
plain address are a usage error, not silently ignored.
"""

from __future__ import annotations

from ..address import Address
from ..errors import UsageError
from ._options import TLSClientOptions, TLSServerOptions
from ._report import Reporter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..tls import TLSConfig


def serves_tls(address: Address, options: TLSServerOptions) -> bool:
    """``tls://``, or an inherited socket (``fd:N``, ``systemd:``) with a certificate given:
    a socket passed in by systemd has no scheme to say it, so the options do."""
    return address.is_tls or (address.scheme == "fd" and options.given)


def server_tls(address: Address, options: TLSServerOptions, report: Reporter) -> TLSConfig | None:
    """The TLS of a server on ``address`` (listen, serve)."""
    if not serves_tls(address, options):
        if options.given or options.alpn:
            raise UsageError(f"TLS options need a tls:// address, not {address}")
        return None
    return server_config(options, report)


def client_tls(address: Address, options: TLSClientOptions, report: Reporter) -> TLSConfig | None:
    """The TLS of a client of ``address`` (connect)."""
    if not address.is_tls:
        if options.given or options.alpn:
            raise UsageError(f"TLS options need a tls:// address, not {address}")
        return None
    return client_config(options, report, "the server's certificate")


def server_config(options: TLSServerOptions, report: Reporter) -> TLSConfig:
    """``--self-signed`` makes the certificate here, and prints its fingerprint."""
    from ..tls import TLSConfig, self_signed

    cert, key = options.cert, options.key
    if options.self_signed:
        if cert or key:
            raise UsageError("--self-signed makes its own certificate: drop --cert/--key")
        cert, key, print_ = self_signed()
        report.notice(f"certificate SHA-256 fingerprint: {print_}")
    return TLSConfig(cert=cert, key=key, ca=options.client_ca, alpn=options.alpn)


def client_config(options: TLSClientOptions, report: Reporter, whose: str) -> TLSConfig:
    """``whose`` names the certificate ``--insecure`` leaves unchecked, in its warning."""
    from ..tls import TLSConfig

    if options.insecure:
        report.warn(f"--insecure: {whose} is not verified")
    return TLSConfig(
        ca=options.ca,
        cert=options.cert,
        key=options.key,
        insecure=options.insecure,
        server_name=options.server_name,
        pin=options.pin,
        alpn=options.alpn,
    )
