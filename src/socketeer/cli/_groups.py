"""The option groups the commands share, each declared once (SPEC §5).

Declarations only: this module is on the ``socketeer --help`` path, so it
imports nothing but argparse. The typed values a group parses into are in
``_options`` (one frozen dataclass per group, built by its ``from_args``);
every destination a dataclass reads exists on every parser that has the
group, so no command looks an option up with a default of its own.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The longest wait any option may ask for: poll() takes a C int of milliseconds
# (24.8 days) and settimeout() a time_t, so a larger value would overflow deep
# in an event loop instead of here. Nobody needs a longer timeout than this;
# no timeout at all is said by leaving the option out.
MAX_SECONDS = 24 * 86400


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{what} must be a positive number: {text!r}")
    return value


def seconds(text: str) -> float:
    """A positive number of seconds, at most ``MAX_SECONDS`` (24 days)."""
    value = _positive(text, "seconds")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_SECONDS} seconds (24 days; leave the option out for no limit): {text!r}"
        )
    return value


def pause(text: str) -> float:
    """0 or more seconds, at most ``MAX_SECONDS`` (``--delay 0``: no pause)."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # seconds() words the error
    return seconds(text)


def per_second(text: str) -> float:
    """A positive, finite rate (``bench --rate``)."""
    return _positive(text, "requests per second")


def whole(text: str) -> int:
    """0 or more (``--workers 0``: one per CPU)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def count(text: str) -> int:
    """1 or more (a limit of 0 would refuse everyone)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def protocols(text: str) -> str:
    """``--alpn``: comma-separated protocol names, each 1 to 255 ASCII characters (RFC 7301)."""
    for name in (part.strip() for part in text.split(",")):
        if not name.isascii() or len(name) > 255:
            raise argparse.ArgumentTypeError(
                f"an ALPN protocol is 1 to 255 ASCII characters: {name!r}"
            )
    return text


def _ranged(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be from {low} to {high}: {text!r}")
    return value


def byte_size(text: str) -> int:
    """``--rcvbuf``/``--sndbuf``: 1 to 2**31-1 bytes (setsockopt takes a C int)."""
    return _ranged(text, 1, 2**31 - 1)


def hops(text: str) -> int:
    """``--ttl``/``--hop-limit``: 1 to 255."""
    return _ranged(text, 1, 255)


def multicast_hops(text: str) -> int:
    """``--multicast-ttl``: 0 (this host only) to 255."""
    return _ranged(text, 0, 255)


def _library_type(parse: Any, text: str) -> Any:
    """A library parser as an argparse type: its usage error becomes argparse's."""
    from ..errors import UsageError

    try:
        return parse(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def keepalive_timings(text: str) -> Any:
    """``--keepalive=IDLE,INTERVAL,COUNT`` (``on``: the defaults) as a ``Keepalive``."""
    from .._sockopts import DEFAULT_KEEPALIVE, Keepalive

    return DEFAULT_KEEPALIVE if text == "on" else _library_type(Keepalive.parse, text)


def membership(text: str) -> Any:
    """``--join GROUP[@IFACE]`` as a ``Membership``."""
    from .._sockopts import Membership

    return _library_type(Membership.parse, text)


def source_address(text: str) -> Any:
    """``--source ADDR[:PORT]`` (or a bare PORT) as an ``Address``."""
    from .._sockopts import parse_source

    return _library_type(parse_source, text)


def proxy_url(text: str) -> Any:
    """``--proxy URL`` (or ``env``: ``$ALL_PROXY``) as a ``ProxyURL``."""
    from ..proxy.url import ProxyURL

    return _library_type(ProxyURL.parse, text)


# Options whose value must be attached (``--keepalive=5,1,3``): the bare flag
# means the defaults, and the word after it is never taken as its value.
ATTACHED_ONLY = {"--keepalive": "--keepalive=on"}


# -- one option each, shared with different wording --------------------------------


def add_timeout(parser: argparse.ArgumentParser, help: str, default: float | None = None) -> None:
    """``-t/--timeout``: what it bounds depends on the command (connect, first client, TO)."""
    parser.add_argument("-t", "--timeout", type=seconds, default=default, metavar="S", help=help)


def add_idle_timeout(parser: argparse.ArgumentParser, help: str) -> None:
    """``-i/--idle-timeout`` (read by ``IdleOptions``)."""
    parser.add_argument("-i", "--idle-timeout", type=seconds, metavar="S", help=help)


def add_max_conns(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str) -> None:
    """``--max-conns`` (servers, and ``listen -k``)."""
    parser.add_argument("--max-conns", type=count, metavar="N", help=help)


# -- groups ----------------------------------------------------------------------


def add_stream(parser: argparse.ArgumentParser) -> None:
    """connect and listen: half-close and line ends (``StreamOptions``)."""
    parser.add_argument(
        "--no-shutdown",
        action="store_true",
        help="at stdin EOF keep the socket open for writing (no half-close)",
    )
    parser.add_argument("--crlf", action="store_true", help="send line ends from stdin as CRLF")


def add_session(parser: argparse.ArgumentParser) -> None:
    """connect and listen: which ways data flows, raw captures, pacing (``SessionOptions``)."""
    group = parser.add_argument_group("session")
    way = group.add_mutually_exclusive_group()
    way.add_argument(
        "--send-only",
        action="store_true",
        help="only send stdin: drop what arrives, end once stdin is sent (ncat --send-only)",
    )
    way.add_argument(
        "--recv-only",
        action="store_true",
        help="only receive: never read stdin, never half-close; end when the peer closes",
    )
    group.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="raw copy of both directions to FILE, interleaved as they happen (ncat -o)",
    )
    group.add_argument("--output-in", metavar="FILE", help="raw copy of what was received")
    group.add_argument("--output-out", metavar="FILE", help="raw copy of what was sent")
    group.add_argument(
        "--delay",
        type=pause,
        default=0.0,
        metavar="S",
        help="send stdin a line at a time, S seconds apart (nc -i)",
    )


def add_socket(
    parser: argparse.ArgumentParser,
    *,
    keepalive_default: bool,
    connects: bool = False,
    listens: bool = False,
    datagrams: bool = True,
    to: str = "",
) -> None:
    """Socket options (``SocketArgs``): what a command connects with, listens with, or both.

    ``to`` names the side the connecting options apply to (relay: "TO").
    Every destination exists on every parser that has the group.
    """
    group = parser.add_argument_group("socket options")
    side = f"{to}: " if to else ""
    if connects:
        group.add_argument(
            "--source",
            dest="local_source",  # not "source": relay's FROM is args.source
            type=source_address,
            metavar="ADDR[:PORT]",
            help=f"{side}connect from this local address and/or port (nc -s, -p)",
        )
        group.add_argument(
            "--proxy",
            type=proxy_url,
            metavar="URL",
            help=f"{side}through a proxy: socks4://, socks4a://, socks5://, socks5h:// or "
            "http:// [USER:PASSWORD@]HOST:PORT; 'env' reads ALL_PROXY",
        )
    group.add_argument(
        "--keepalive",
        nargs="?",
        type=keepalive_timings,
        metavar="IDLE,INTERVAL,COUNT",
        help="TCP keepalive ("
        + ("on by default" if keepalive_default else "off by default")
        + "); --keepalive=IDLE,INTERVAL,COUNT sets the timings (default 60,10,6)",
    )
    group.add_argument(
        "--no-keepalive", dest="keepalive", action="store_false", help="no TCP keepalive"
    )
    group.add_argument(
        "--bind-device",
        metavar="IFACE",
        help=f"{side}only use this network interface (SO_BINDTODEVICE; needs privileges)",
    )
    group.add_argument("--rcvbuf", type=byte_size, metavar="N", help="socket receive buffer")
    group.add_argument("--sndbuf", type=byte_size, metavar="N", help="socket send buffer")
    group.add_argument("--ttl", type=hops, metavar="N", help="IP time to live (and IPv6 hops)")
    group.add_argument("--hop-limit", type=hops, metavar="N", help="IPv6 hop limit")
    if listens:
        group.add_argument(
            "--ipv6-only",
            action="store_true",
            default=None,
            help="an IPv6 listener takes no IPv4 clients (IPV6_V6ONLY)",
        )
    if datagrams:
        group.add_argument(
            "--broadcast", action="store_true", help="UDP: allow sending to broadcast addresses"
        )
        if listens:
            group.add_argument(
                "--join",
                action="append",
                type=membership,
                default=[],
                metavar="GROUP[@IFACE]",
                help="UDP: join this multicast group (repeat for more)",
            )
        group.add_argument(
            "--multicast-ttl", type=multicast_hops, metavar="N", help="UDP: multicast hops"
        )
        loop = group.add_mutually_exclusive_group()
        loop.add_argument(
            "--multicast-loop",
            dest="multicast_loop",
            action="store_const",
            const=True,
            help="UDP: receive our own multicast (the system default)",
        )
        loop.add_argument(
            "--no-multicast-loop",
            dest="multicast_loop",
            action="store_const",
            const=False,
            help="UDP: do not receive our own multicast",
        )
    declared = {action.dest for action in parser._actions}
    absent = {k: v for k, v in _SOCKET_DEFAULTS.items() if k not in declared}
    # keepalive=None: neither flag given, the command's default applies.
    parser.set_defaults(keepalive=None, keepalive_default=keepalive_default, **absent)


_SOCKET_DEFAULTS: dict[str, object] = {
    "local_source": None,
    "proxy": None,
    "ipv6_only": None,
    "join": [],
    "broadcast": False,
    "multicast_ttl": None,
    "multicast_loop": None,
}


def add_access(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--allow``/``--deny``, repeated or comma-separated (``AccessOptions``)."""
    group = parser.add_argument_group("access (repeat, or separate with commas)")
    group.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NET",
        help=f"{verb} only clients in these addresses/CIDR networks",
    )
    group.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="NET",
        help="refuse clients in these addresses/CIDR networks",
    )


def pty_size(text: str) -> Any:
    """``--pty-size COLSxROWS`` as (columns, rows)."""
    from .._pty import parse_size

    return _library_type(parse_size, text)


def add_programs(parser: argparse.ArgumentParser, command: str) -> None:
    """A program on the connection, on pipes or a pty; ``command`` says which options."""
    group = parser.add_argument_group("programs")
    if command in ("connect", "listen"):
        group.add_argument(
            "-e",
            "--exec",
            dest="exec_command",
            metavar="COMMAND",
            help="run COMMAND (split as a shell would, never run by one) with the connection "
            "as its stdin and stdout, instead of copying standard I/O; the exit status is its own",
        )
    what = {
        "connect": "--exec's program",
        "listen": "--exec's program",
        "serve": "exec's program",
        "relay": "an exec: program (as pty-exec:)",
    }[command]
    group.add_argument(
        "--pty",
        action="store_true",
        help=f"run {what} on a new pseudo-terminal, its controlling terminal",
    )
    group.add_argument(
        "--pty-size",
        type=pty_size,
        metavar="COLSxROWS",
        help="the window size with --pty (default 80x24)",
    )
    if command == "relay":
        group.add_argument(
            "--append",
            action="store_true",
            help="a file: TO is appended to instead of replaced",
        )


def add_proxy_server(parser: argparse.ArgumentParser) -> None:
    """``--user``, ``--target-allow``/``--target-deny``: the socks5 and http-proxy handlers."""
    group = parser.add_argument_group("proxy handlers (socks5, http-proxy)")
    group.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="accept this login (repeat for more); with none, no login is asked",
    )
    group.add_argument(
        "--target-allow",
        action="append",
        default=[],
        metavar="NET",
        help="clients may connect only to these addresses/CIDR networks (a name is "
        "resolved first and its addresses checked)",
    )
    group.add_argument(
        "--target-deny",
        action="append",
        default=[],
        metavar="NET",
        help="clients may not connect to these addresses/CIDR networks (default: "
        "no target refused)",
    )


def add_server(
    parser: argparse.ArgumentParser,
    *,
    each: str,
    where: str,
    default_model: str | None,
    default_note: str | None = None,
) -> None:
    """How a server runs and logs (``ServerOptions``); ``each`` names what it serves.

    ``default_model=None`` leaves the choice to the library (the relay's
    depends on TO); ``default_note`` then says what it picks.
    """
    group = parser.add_argument_group("server")
    group.add_argument(
        "--model",
        choices=("thread", "fork", "async"),
        default=default_model,
        help=f"a thread per {each}, a process per {each}, or one event loop "
        f"(default {default_note or default_model})",
    )
    group.add_argument(
        "--workers",
        type=whole,
        default=1,
        metavar="N",
        help=f"N processes share {where} (0 = one per CPU)",
    )
    group.add_argument(
        "--grace",
        type=seconds,
        default=5.0,
        metavar="S",
        help=f"on SIGTERM/SIGINT, let {each}s finish for S seconds (default 5)",
    )
    if each == "connection":  # a server weighs its connections' bytes: it can shed
        add_max_conns(
            group,
            "at N open connections, a new client takes the place of the slowest "
            "(2 s old or more, under 1 KiB/s; not --model fork), else it is closed at once",
        )
    else:
        add_max_conns(group, f"close clients beyond N open {each}s at once")
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="the log on stderr",
    )


def add_tls(parser: argparse.ArgumentParser, *, server: bool = False, client: bool = False) -> None:
    """TLS of a server (``TLSServerOptions``), a client (``TLSClientOptions``), or both.

    Both is the relay: FROM terminates TLS, TO originates it. There ``--ca``
    is TO's CA, so the CA that client certificates must be signed by is
    ``--client-ca``, and TO presents no certificate of its own.
    """
    both = server and client
    title = "TLS: FROM tls:// terminates, TO tls:// originates" if both else "TLS (tls://HOST:PORT)"
    group = parser.add_argument_group(title)
    if server:
        _tls_server(group, side="FROM: " if both else "", ca_flag="--client-ca" if both else "--ca")
    if client:
        _tls_client(group, side="TO: " if both else "", certificate=not both)
    if both:
        parser.set_defaults(client_cert=None, client_key=None)
    group.add_argument(
        "--alpn", type=protocols, metavar="PROTOS", help="ALPN protocols, comma-separated"
    )


def _tls_server(group: argparse._ArgumentGroup, *, side: str, ca_flag: str) -> None:
    group.add_argument(
        "--cert", dest="server_cert", metavar="FILE", help=f"{side}certificate (chain) in PEM"
    )
    group.add_argument("--key", dest="server_key", metavar="FILE", help=f"{side}its private key")
    group.add_argument(
        ca_flag,
        dest="client_ca",
        metavar="FILE",
        help=f"{side}require a client certificate signed by this CA",
    )
    group.add_argument(
        "--self-signed",
        action="store_true",
        help=f"{side}make a temporary certificate and print its SHA-256 fingerprint",
    )


def _tls_client(group: argparse._ArgumentGroup, *, side: str, certificate: bool) -> None:
    if certificate:
        group.add_argument(
            "--cert", dest="client_cert", metavar="FILE", help="client certificate (chain) in PEM"
        )
        group.add_argument("--key", dest="client_key", metavar="FILE", help="its private key")
    group.add_argument("--ca", metavar="FILE", help=f"{side}trust this CA instead of the system's")
    group.add_argument(
        "--insecure",
        action="store_true",
        help=f"{side}do not verify the server's certificate (prints a warning)",
    )
    group.add_argument(
        "--server-name",
        metavar="NAME",
        help=f"{side}the name to send (SNI) and verify, instead of HOST",
    )
    group.add_argument(
        "--pin",
        metavar="SHA256",
        help=f"{side}accept only the certificate with this SHA-256 fingerprint",
    )


def add_output(parser: argparse.ArgumentParser, *, hexdump: bool = True) -> None:
    """What goes to stderr (``OutputOptions``); ``serve`` has no traffic to dump."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="report connections (-vv: more detail) on stderr",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing but errors on stderr"
    )
    group.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    if hexdump:
        group.add_argument(
            "--hexdump",
            metavar="FILE|-",
            help="hex dump of both directions to FILE ('-' = stderr)",
        )
    else:
        parser.set_defaults(hexdump=None)


def retries(text: str) -> Any:
    """``--retry N|forever``: N retries after the first attempt, or ``"forever"``
    (not None, which means the option was not given)."""
    from ..relay.retry import parse_retry

    try:
        value = parse_retry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return "forever" if value is None else value


def add_joining(parser: argparse.ArgumentParser) -> None:
    """relay: datagrams over a stream, joining two alike ends, connecting again (SPEC §10)."""
    group = parser.add_argument_group("tunnels and joining")
    group.add_argument(
        "--frame",
        action="store_true",
        help="carry datagrams over a stream, each one 4-byte length-prefixed frame: "
        "one side datagram (a session per sender), the other stream",
    )
    group.add_argument(
        "--max-frame",
        type=whole,
        metavar="BYTES",
        help="with --frame: the largest datagram carried (default 65527); a larger frame "
        "announced closes its session",
    )
    both = group.add_mutually_exclusive_group()
    both.add_argument(
        "--connect-both",
        action="store_true",
        help="connect to FROM and to TO and join them; connect to both again when either "
        "closes (retrying forever unless --retry)",
    )
    both.add_argument(
        "--listen-both",
        action="store_true",
        help="listen on FROM and on TO and join each client of one with the next of the other",
    )
    group.add_argument(
        "--retry",
        type=retries,
        metavar="N|forever",
        help="a side that connects (--connect-both, --frame's stream TO) tries N more times, "
        "with exponential backoff and jitter, each attempt logged; then exit 1",
    )
    group.add_argument(
        "--retry-delay",
        type=pause,
        metavar="S",
        help="the wait before the first retry (default 1), doubled each time up to 30",
    )
