"""The error hierarchy: every failure a public call can raise.

Each class also subclasses the builtin it refines (``ConnectError`` is a
``ConnectionError``, ``Timeout`` is a ``TimeoutError``, ...), so code written
against the standard library keeps working, and each knows the exit code the
CLI reports for it (SPEC §5: 1 for runtime and network failures, 2 for usage).

Raw ``OSError`` is translated into these at one boundary (``_sockio``); no bare
``OSError`` escapes a public call.
"""

from __future__ import annotations

__all__ = [
    "AddressError",
    "AddressInUse",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionReset",
    "FrameTooLarge",
    "NetworkError",
    "ProxyAuthError",
    "ProxyError",
    "ProxyRefused",
    "ProxyTargetUnreachable",
    "ProxyUnreachable",
    "SocketeerError",
    "TLSError",
    "Timeout",
    "UsageError",
]


class SocketeerError(Exception):
    """Base of every socketeer error; ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


class UsageError(SocketeerError):
    """The caller asked for something that cannot work (a bad option, a wrong argument)."""

    exit_code = 2


class AddressError(UsageError, ValueError):
    """A malformed address; the message shows the accepted forms."""


class NetworkError(SocketeerError, OSError):
    """An operating-system failure on a socket that has no more specific class."""


class ConnectError(NetworkError, ConnectionError):
    """Could not connect: refused, unreachable, no such host or socket file."""


class ProxyError(ConnectError):
    """Could not reach the target through a proxy (the proxy client's side, not PROXY protocol).

    The base of the more specific cases below; raised as itself when the proxy
    breaks the protocol (a reply that is not SOCKS or HTTP, an early close).
    """


class ProxyUnreachable(ProxyError):
    """The proxy itself did not answer: refused, unreachable, no such host."""


class ProxyRefused(ProxyError):
    """The proxy answered the request with a failure.

    ``code`` is the reply's code (the SOCKS reply byte, the HTTP status) and
    ``meaning`` what the protocol says it means.
    """

    def __init__(self, message: str, code: int = 0, meaning: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.meaning = meaning


class ProxyAuthError(ProxyRefused):
    """The proxy wants credentials, or rejected the ones given."""


class ProxyTargetUnreachable(ProxyRefused):
    """The proxy works, but could not connect to the target (refused, no route, no host)."""


class AddressInUse(NetworkError):
    """The local address is taken (a port in use, a Unix path where a server listens)."""


class ConnectionReset(NetworkError, ConnectionResetError):
    """The peer aborted the connection (RST, or EPIPE when writing after it went away)."""


class Timeout(SocketeerError, TimeoutError):
    """An operation did not finish within its deadline."""


class ConnectionClosed(SocketeerError, EOFError):
    """The peer closed the stream in the middle of a line, frame or exact read.

    ``partial`` holds the bytes that had arrived, like asyncio's
    ``IncompleteReadError.partial``.
    """

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class FrameTooLarge(SocketeerError, ValueError):
    """A line, frame or datagram is larger than the limit that applies to it."""


class TLSError(NetworkError):
    """The TLS handshake or a TLS record failed."""
