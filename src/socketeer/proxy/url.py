"""Proxy URLs (SPEC §1, §9): ``SCHEME://[USER:PASSWORD@]HOST:PORT``.

Pure: parsing and printing only. The password never appears in ``str()`` or
``repr()``, so a URL can go into an error message or a log line as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote

from ..address import Address
from ..errors import AddressError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

__all__ = ["PROXY_FORMS", "PROXY_SCHEMES", "ProxyURL"]

PROXY_SCHEMES: Final = ("socks4", "socks4a", "socks5", "socks5h", "http")
PROXY_FORMS: Final = (
    "socks4://HOST:PORT, socks4a://HOST:PORT, socks5://HOST:PORT, socks5h://HOST:PORT, "
    "http://HOST:PORT, each with an optional USER:PASSWORD@ before the host; "
    "or 'env' for $ALL_PROXY"
)
ENVIRONMENT_VARIABLES: Final = ("ALL_PROXY", "all_proxy")
# Only socks4 carries a bare user id; SOCKS5 (RFC 1929) limits each field to 255 bytes.
_FIELD_MAX: Final = 255


def _bad(text: str, reason: str) -> AddressError:
    return AddressError(f"bad proxy URL {text!r}: {reason} (accepted forms: {PROXY_FORMS})")


@dataclass(frozen=True)
class ProxyURL:
    """Where a proxy is and how to talk to it.

    ``socks4`` and ``socks5`` resolve the target's name here and send the
    proxy an address; ``socks4a`` and ``socks5h`` send the name and let the
    proxy resolve it; ``http`` asks with ``CONNECT host:port``.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in PROXY_SCHEMES:
            raise _bad(f"{self.scheme}://", f"unknown proxy scheme {self.scheme!r}")
        Address("tcp", host=self.host, port=self.port)  # the same host and port rules
        if self.scheme in ("socks4", "socks4a") and self.password is not None:
            raise _bad(str(self), "SOCKS4 has a user id but no password")
        if self.password is not None and self.username is None:
            raise _bad(str(self), "a password needs a user name")
        for value in (self.username or "", self.password or ""):
            if any(c in value for c in "\0\r\n"):  # they would end a SOCKS4 field or an HTTP line
                raise _bad(str(self), "a user name or password cannot hold NUL, CR or LF")
        if self.scheme in ("socks5", "socks5h"):
            if self.username is not None and not 0 < len(self.username.encode()) <= _FIELD_MAX:
                raise _bad(str(self), "a SOCKS5 user name is 1 to 255 bytes")
            if self.password is not None and len(self.password.encode()) > _FIELD_MAX:
                raise _bad(str(self), "a SOCKS5 password is at most 255 bytes")

    @classmethod
    def parse(cls, text: str | ProxyURL) -> ProxyURL:
        """Parse a proxy URL; ``"env"`` reads it from ``ALL_PROXY`` (see ``from_environment``).

        User name and password may be percent-encoded (``%40`` for ``@``).

        Raises:
            AddressError: not a proxy URL; the message lists the accepted forms.
        """
        if isinstance(text, ProxyURL):
            return text
        if not isinstance(text, str):
            raise _bad(repr(text), "a proxy URL must be a string")
        if text == "env":
            return cls.from_environment()
        head, sep, rest = text.partition("://")
        scheme = head.lower()
        if not sep:
            raise _bad(text, "missing SCHEME://")
        if scheme not in PROXY_SCHEMES:
            raise _bad(text, f"unknown proxy scheme {head!r}")
        rest = rest.removesuffix("/")  # "http://proxy:3128/" is how the environment writes it
        if "/" in rest or "?" in rest or "#" in rest:
            raise _bad(text, "a proxy URL has no path")
        userinfo, at, hostport = rest.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user)
            password = unquote(secret) if colon else None
            if not username:
                raise _bad(_masked(text), "empty user name before '@'")
        try:
            where = Address.parse(f"tcp://{hostport}")
        except AddressError as exc:
            reason = getattr(exc, "reason", None) or str(exc).split(": ", 1)[-1].split(" (")[0]
            raise _bad(_masked(text), reason) from None
        if where.host == "" or where.port == 0:
            raise _bad(_masked(text), "a proxy needs a host and a port other than 0")
        return cls(scheme, where.host, where.port, username, password)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ProxyURL:
        """The proxy named by ``ALL_PROXY`` (or ``all_proxy``), read only when asked for.

        Raises:
            AddressError: neither variable is set, or its value is not a proxy URL.
        """
        env = os.environ if environ is None else environ
        for name in ENVIRONMENT_VARIABLES:
            value = env.get(name)
            if value:
                if value.strip() == "env":
                    raise AddressError(f"${name} says 'env': it must name a proxy URL")
                try:
                    return cls.parse(value.strip())
                except AddressError as exc:
                    raise AddressError(f"${name}: {exc}") from None
        raise AddressError(
            "proxy 'env': neither $ALL_PROXY nor $all_proxy is set "
            "(set one to a proxy URL, such as socks5h://HOST:PORT)"
        )

    @property
    def address(self) -> Address:
        """Where to connect: the proxy itself, ``tcp://HOST:PORT``."""
        return Address("tcp", host=self.host, port=self.port)

    @property
    def resolves_remotely(self) -> bool:
        """Whether the proxy, not this host, looks up the target's name."""
        return self.scheme in ("socks4a", "socks5h", "http")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = ""
        if self.username is not None:
            user = self.username + (":***" if self.password is not None else "") + "@"
        return f"{self.scheme}://{user}{host}:{self.port}"

    def __repr__(self) -> str:
        return f"ProxyURL.parse({str(self)!r})"


def _masked(text: str) -> str:
    """The URL text with any password replaced, for an error message."""
    head, sep, rest = text.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    return f"{head}{sep}{userinfo.partition(':')[0]}:***@{hostport}"
