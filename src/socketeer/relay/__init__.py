"""Relays (SPEC §6): for each client on FROM, open TO and copy both ways.

A stream relay is a ``Server`` whose handler is a ``RelayHandler``: every
model, ``workers``, ``grace``, limits and the connection log are the
server's. Standard I/O as FROM is one pair (``StdioRelay``); datagram
addresses on both sides make a ``DatagramRelay`` with a session per sender.
``relay(FROM, TO, ...)`` builds the right one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._sockopts import SocketOptions
from ..address import Address
from ..errors import UsageError
from .datagram import DatagramRelay as DatagramRelay
from .endpoints import Endpoint, Stdio, parse_endpoint
from .handler import RelayHandler as RelayHandler
from .stream import HAS_SPLICE as HAS_SPLICE

if TYPE_CHECKING:
    from .._sockopts import Keepalive
    from ..proxy.url import ProxyURL
    from ..server.core import Server
    from .core import StdioRelay
    from .framed import DatagramTunnel
    from .retry import RetryPolicy

__all__ = ["DEFAULT_MODEL", "HAS_SPLICE", "DatagramRelay", "RelayHandler", "relay"]

#: Relays front many clients at once (HAProxy's default is as large): the
#: kernel caps it at net.core.somaxconn.
RELAY_BACKLOG = 4096

#: The socket options a relay sets on FROM and on TO alike (docs/relay.md).
_BOTH_SIDES = ("keepalive", "rcvbuf", "sndbuf", "ttl", "hop_limit")

#: The relay's default model: one event loop per worker (docs/performance.md says why).
DEFAULT_MODEL = "async"


def relay(
    source: str | Endpoint,
    target: str | Endpoint,
    *,
    model: str | None = None,
    workers: int = 1,
    grace: float = 5.0,
    once: bool = False,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    allow: Iterable[str] = (),
    deny: Iterable[str] = (),
    connect_timeout: float | None = 10.0,
    zero_copy: bool = HAS_SPLICE,
    proxy_protocol: str | None = None,
    accept_proxy_protocol: bool = False,
    observe: Callable[[bytes, str], None] | None = None,
    tls_server: object = None,
    tls_client: object = None,
    max_sessions: int | None = None,
    keepalive: bool | Keepalive | tuple[int, int, int] = True,
    to_source: str | Address | None = None,
    bind_device: str | None = None,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    ttl: int | None = None,
    hop_limit: int | None = None,
    ipv6_only: bool | None = None,
    proxy: str | ProxyURL | None = None,
    announce: Callable[[str], None] | None = None,
    frame: bool = False,
    max_frame: int | None = None,
    retry: RetryPolicy | None = None,
) -> Server | StdioRelay | DatagramRelay | DatagramTunnel:
    """The relay from FROM to TO; call ``serve_forever()`` on it (and ``close()``).

    ``model=None`` picks ``DEFAULT_MODEL`` (the thread model when TO is
    standard I/O). ``observe(data, marker)`` sees every chunk, ``">"`` from
    the client to TO and ``"<"`` back (``--hexdump``).

    Socket options: ``keepalive`` (on by default, ``DEFAULT_KEEPALIVE``),
    ``rcvbuf``, ``sndbuf``, ``ttl`` and ``hop_limit`` apply to both sides
    (FROM's listening socket, which accepted clients inherit them from, and
    every TO socket); ``to_source`` (``--source``: the local address TO is
    connected from), ``bind_device`` and ``proxy`` (a SOCKS or
    HTTP proxy URL, ``"env"`` for ``ALL_PROXY``) to TO; ``ipv6_only`` to FROM.
    Datagram relays take none of them but keepalive (which they ignore).

    ``frame=True`` carries datagrams over a stream (one side of each kind):
    each datagram is one SPEC §2 frame of at most ``max_frame`` bytes, and a
    datagram FROM keeps a stream to TO per sender (``framed``). ``retry`` (a
    ``RetryPolicy``) connects to a stream TO again after a failure, each
    attempt logged: per session there, per client in the blocking models.

    A FROM with nothing to listen on (``-``, ``exec:``, ``file:``, ``pty:``,
    an ``fd:N`` that is not a listening socket) is one pair; ``announce(line)``
    is told the path of every ``pty:`` made.

    Raises:
        AddressError, UsageError: endpoints that do not parse or do not fit together.
        AddressInUse: FROM is taken.
    """
    src = parse_endpoint(source) if isinstance(source, str) else source
    dst = parse_endpoint(target) if isinstance(target, str) else target
    if frame or max_frame is not None:
        return _framed(src, dst, locals())
    if retry is not None:
        return _retrying(src, dst, locals())
    src_datagram = isinstance(src, Address) and src.is_datagram
    dst_datagram = isinstance(dst, Address) and dst.is_datagram
    if src_datagram and dst_datagram:
        assert isinstance(src, Address) and isinstance(dst, Address)
        stream_only = {
            "once": once,
            "max_connections": max_connections,
            "proxy_protocol": proxy_protocol,
            "accept_proxy_protocol": accept_proxy_protocol,
            "hexdump": observe,
            "tls_server": tls_server,
            "tls_client": tls_client,
            "allow": list(allow),
            "deny": list(deny),
            "model": model,
            "workers": workers != 1,
            "to_source": to_source,
            "bind_device": bind_device,
            "rcvbuf": rcvbuf,
            "sndbuf": sndbuf,
            "ttl": ttl,
            "hop_limit": hop_limit,
            "ipv6_only": ipv6_only,
            "proxy": proxy,
        }
        given = [name for name, value in stream_only.items() if value]
        if given:
            raise UsageError(f"for stream relays only: {', '.join(given)}")
        sessions: dict[str, Any] = {}
        if max_sessions is not None:
            sessions["max_sessions"] = max_sessions
        return DatagramRelay(src, dst, idle_timeout=idle_timeout, **sessions)
    if src_datagram:
        raise UsageError(
            f"{src} is a datagram address: a datagram relay needs datagram addresses on both sides"
        )
    from .core import is_one_pair  # exec:, file:, pty:, a stream fd:N: one pair, no listener

    one_pair = is_one_pair(src)
    both = SocketOptions.of(
        keepalive=keepalive, rcvbuf=rcvbuf, sndbuf=sndbuf, ttl=ttl, hop_limit=hop_limit
    )
    to_options = SocketOptions.of(
        source=to_source, bind_device=bind_device, **both.kwargs(*_BOTH_SIDES)
    )
    handler = RelayHandler(
        dst,
        connect_timeout=connect_timeout,
        zero_copy=zero_copy,
        proxy_protocol=proxy_protocol,
        accept_proxy_protocol=accept_proxy_protocol,
        observe=observe,
        tls_client=tls_client,
        to_options=to_options,
        proxy=proxy,
    )
    handler.announce = announce
    if one_pair:
        from .core import StdioRelay

        return StdioRelay(handler, idle_timeout=idle_timeout, source=src, announce=announce)
    from ..server.core import Server
    from .opened import is_carried

    assert isinstance(src, Address)
    if model is None:
        model = "thread" if isinstance(dst, Stdio) or is_carried(dst) else DEFAULT_MODEL
    return Server(
        src,
        handler,
        model=model,
        workers=workers,
        grace=grace,
        once=once,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        allow=allow,
        deny=deny,
        tls=tls_server,
        backlog=RELAY_BACKLOG,
        ipv6_only=ipv6_only,
        **both.kwargs(*_BOTH_SIDES),
    )


def _framed(src: Endpoint, dst: Endpoint, given: dict[str, Any]) -> Server | DatagramTunnel:
    """``relay(..., frame=True)``: a ``DatagramTunnel``, or a server of ``FramedHandler``."""
    from .framed import FramedHandler, framed_relay

    if not given["frame"]:
        raise UsageError("--max-frame needs --frame")
    if not (isinstance(src, Address) and isinstance(dst, Address)):
        raise UsageError("--frame needs addresses on both sides, not - or exec:")
    options = {name: given[name] for name in _FRAME_CHECKED}
    options["allow"], options["deny"] = list(given["allow"]), list(given["deny"])
    options["workers"] = given["workers"] != 1
    options["hexdump"] = given["observe"]
    both = SocketOptions.of(**{name: given[name] for name in ("keepalive", *_BOTH_SIDES[1:])})
    to_options = SocketOptions.of(
        source=given["to_source"],
        bind_device=given["bind_device"],
        **both.kwargs(*_BOTH_SIDES),
    )
    end = framed_relay(
        src,
        dst,
        given=options,
        max_frame=given["max_frame"],
        retry=given["retry"],
        idle_timeout=given["idle_timeout"],
        max_sessions=given["max_sessions"],
        connect_timeout=given["connect_timeout"],
        tls_client=given["tls_client"],
        to_options=to_options,
    )
    if not isinstance(end, FramedHandler):
        return end
    from ..server.core import Server

    return Server(
        src,
        end,
        model=given["model"] or "thread",
        workers=given["workers"],
        grace=given["grace"],
        once=given["once"],
        max_connections=given["max_connections"],
        idle_timeout=given["idle_timeout"],
        allow=given["allow"],
        deny=given["deny"],
        tls=given["tls_server"],
        backlog=RELAY_BACKLOG,
        ipv6_only=given["ipv6_only"],
        **both.kwargs(*_BOTH_SIDES),
    )


def _retrying(
    src: Endpoint, dst: Endpoint, given: dict[str, Any]
) -> Server | StdioRelay | DatagramRelay | DatagramTunnel:
    """``relay(..., retry=...)``: a stream relay whose TO is connected to again, as told.

    The blocking models only: each client (or the one pair) waits in its own
    thread while TO is retried, and is closed, logged, when the policy gives up.
    """
    if not isinstance(dst, Address) or dst.is_datagram:
        raise UsageError(
            "--retry needs a side that connects again: a stream TO, --connect-both, "
            "or --frame's stream TO"
        )
    if given["model"] == "async":
        raise UsageError("--retry on a relay's TO needs the thread or fork model, not async")
    options = {
        name: value
        for name, value in given.items()
        if name not in ("source", "target", "src", "dst", "retry")
    }
    options["model"] = given["model"] or "thread"
    built = relay(src, dst, **options)
    handler = getattr(built, "handler", None)
    if not isinstance(handler, RelayHandler):  # a datagram FROM: nothing to retry
        built.close()
        raise UsageError("--retry needs a stream FROM (or --frame from datagrams)")
    handler.retry = given["retry"]
    return built


#: The options ``framed_relay`` refuses on the side they do not fit.
_FRAME_CHECKED = (
    "once",
    "max_connections",
    "proxy_protocol",
    "accept_proxy_protocol",
    "tls_server",
    "tls_client",
    "model",
    "proxy",
    "to_source",
    "bind_device",
)
