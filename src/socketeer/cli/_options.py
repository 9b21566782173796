"""The option groups of ``_groups`` as typed values: one frozen dataclass per group.

A command builds the groups it has from the parsed arguments, each with its
group's ``from_args``, and passes those on: no ``Namespace`` travels past the
top of a command. Pure (no sockets, no ssl); kept apart from ``_groups``
because dataclasses would slow ``socketeer --help`` down.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _split(values: list[str]) -> tuple[str, ...]:
    """``--allow A --allow B`` and ``--allow A,B`` alike."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class OutputOptions:
    """-v/-vv, -q, --debug, --hexdump."""

    verbose: int = 0
    quiet: bool = False
    debug: bool = False
    hexdump: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OutputOptions:
        return cls(args.verbose, args.quiet, args.debug, args.hexdump)


@dataclass(frozen=True)
class AccessOptions:
    """--allow/--deny, as lists of address or network texts (parsed by ``AccessList``)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AccessOptions:
        return cls(_split(args.allow), _split(args.deny))

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)


@dataclass(frozen=True)
class IdleOptions:
    """-i/--idle-timeout: None means no limit (or the command's own default)."""

    seconds: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> IdleOptions:
        return cls(args.idle_timeout)


@dataclass(frozen=True)
class StreamOptions:
    """connect and listen: --no-shutdown, --crlf."""

    half_close: bool = True
    crlf: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StreamOptions:
        return cls(not args.no_shutdown, args.crlf)


@dataclass(frozen=True)
class SessionOptions:
    """connect and listen: --send-only, --recv-only, -o, --output-in/-out, --delay."""

    send: bool = True
    receive: bool = True
    output: str | None = None
    output_in: str | None = None
    output_out: str | None = None
    delay: float = 0.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SessionOptions:
        return cls(
            not args.recv_only,
            not args.send_only,
            args.output,
            args.output_in,
            args.output_out,
            args.delay,
        )

    @property
    def given(self) -> list[str]:
        """The options given, by name (for "-z sends nothing: drop ...")."""
        names = {
            "--send-only": not self.receive,
            "--recv-only": not self.send,
            "--output": self.output,
            "--output-in": self.output_in,
            "--output-out": self.output_out,
            "--delay": self.delay,
        }
        return [name for name, value in names.items() if value]


@dataclass(frozen=True)
class SocketArgs:
    """The socket options group: --source, --proxy, --keepalive, --bind-device, the
    buffers, --ttl, --hop-limit, --ipv6-only and the datagram ones, parsed.

    ``keepalive`` is None when neither --keepalive nor --no-keepalive was
    given: the command's default (``keepalive_default``) then applies.
    """

    source: Any = None
    proxy: Any = None
    keepalive: Any = None
    keepalive_default: bool = False
    bind_device: str | None = None
    rcvbuf: int | None = None
    sndbuf: int | None = None
    ttl: int | None = None
    hop_limit: int | None = None
    ipv6_only: bool | None = None
    broadcast: bool = False
    join: tuple[Any, ...] = ()
    multicast_ttl: int | None = None
    multicast_loop: bool | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SocketArgs:
        return cls(
            args.local_source,
            args.proxy,
            args.keepalive,
            args.keepalive_default,
            args.bind_device,
            args.rcvbuf,
            args.sndbuf,
            args.ttl,
            args.hop_limit,
            args.ipv6_only,
            args.broadcast,
            tuple(args.join),
            args.multicast_ttl,
            args.multicast_loop,
        )

    def _refuse(self, names: dict[str, object], where: str) -> None:
        given = [flag for flag, value in names.items() if value not in (None, False, ())]
        if given:
            from ..errors import UsageError

            raise UsageError(f"{', '.join(given)}: not for {where}")

    def _keepalive(self) -> Any:
        return self.keepalive_default if self.keepalive is None else self.keepalive

    def _common(self) -> dict[str, Any]:
        return {
            "bind_device": self.bind_device,
            "rcvbuf": self.rcvbuf,
            "sndbuf": self.sndbuf,
            "ttl": self.ttl,
            "hop_limit": self.hop_limit,
        }

    def _datagram_only(self) -> dict[str, object]:
        return {
            "--broadcast": self.broadcast,
            "--join": self.join,
            "--multicast-ttl": self.multicast_ttl,
            "--multicast-loop/--no-multicast-loop": self.multicast_loop,
        }

    def for_connect(self, where: object) -> dict[str, Any]:
        """``connect(...)``'s keyword arguments (a stream client)."""
        self._refuse(self._datagram_only(), f"a stream connection ({where})")
        return {
            **self._common(),
            "source": self.source,
            "keepalive": self._keepalive(),
            "proxy": self.proxy,
        }

    def for_listen(self, where: object) -> dict[str, Any]:
        """``listen(...)``'s keyword arguments (a stream listener)."""
        self._refuse(self._datagram_only(), f"a stream listener ({where})")
        return {**self._common(), "keepalive": self._keepalive(), "ipv6_only": self.ipv6_only}

    def for_datagram(self, where: object) -> dict[str, Any]:
        """``open_datagram(...)``'s keyword arguments (keepalive has no meaning there)."""
        self._refuse({"--proxy": self.proxy}, f"datagrams ({where})")
        return {
            **self._common(),
            "ipv6_only": self.ipv6_only,
            "broadcast": self.broadcast,
            "join": self.join,
            "multicast_ttl": self.multicast_ttl,
            "multicast_loop": self.multicast_loop,
        }

    def for_server(self) -> dict[str, Any]:
        """``Server(...)``'s keyword arguments (it checks them against its address)."""
        return {
            **self._common(),
            "keepalive": self._keepalive(),
            "ipv6_only": self.ipv6_only,
            "broadcast": self.broadcast,
            "join": self.join,
            "multicast_ttl": self.multicast_ttl,
            "multicast_loop": self.multicast_loop,
        }

    def for_relay(self) -> dict[str, Any]:
        """``relay(...)``'s keyword arguments: --source and --proxy are TO's."""
        return {
            **self._common(),
            "keepalive": self._keepalive(),
            "ipv6_only": self.ipv6_only,
            "to_source": self.source,
            "proxy": self.proxy,
        }


@dataclass(frozen=True)
class ServerOptions:
    """--model, --workers, --grace, --max-conns, --log-format (serve and relay)."""

    model: str | None = None  # None: the relay picks
    workers: int = 1
    grace: float = 5.0
    max_connections: int | None = None
    log_format: str = "text"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerOptions:
        return cls(args.model, args.workers, args.grace, args.max_conns, args.log_format)


def _alpn(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


@dataclass(frozen=True)
class TLSServerOptions:
    """The side that accepts TLS: --cert, --key, --ca (relay: --client-ca), --self-signed."""

    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    self_signed: bool = False
    alpn: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TLSServerOptions:
        return cls(
            args.server_cert, args.server_key, args.client_ca, args.self_signed, _alpn(args.alpn)
        )

    @property
    def given(self) -> bool:
        """Whether any option of this side was given (--alpn is shared: not counted)."""
        return bool(self.cert or self.key or self.client_ca or self.self_signed)


@dataclass(frozen=True)
class TLSClientOptions:
    """The side that connects with TLS: --ca, --insecure, --server-name, --pin, and
    a client certificate (--cert, --key) where the command has one."""

    ca: str | None = None
    insecure: bool = False
    server_name: str | None = None
    pin: str | None = None
    cert: str | None = None
    key: str | None = None
    alpn: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TLSClientOptions:
        return cls(
            args.ca,
            args.insecure,
            args.server_name,
            args.pin,
            args.client_cert,
            args.client_key,
            _alpn(args.alpn),
        )

    @property
    def given(self) -> bool:
        """Whether any option of this side was given (--alpn is shared: not counted)."""
        return bool(
            self.ca or self.insecure or self.server_name or self.pin or self.cert or self.key
        )
