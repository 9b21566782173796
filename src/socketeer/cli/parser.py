"""The command line's grammar: every command and option, declared once (argparse).

Imported only when a command line must be parsed: ``socketeer --version``
answers without it. The options the commands share are declared once, in
``_groups``; the typed values they parse into are in ``_options``.
"""

from __future__ import annotations

import argparse

from .. import __version__
from ..errors import UsageError
from ._groups import (
    ATTACHED_ONLY,
    add_access,
    add_idle_timeout,
    add_joining,
    add_max_conns,
    add_output,
    add_programs,
    add_proxy_server,
    add_server,
    add_session,
    add_socket,
    add_stream,
    add_timeout,
    add_tls,
    count,
    per_second,
    seconds,
    whole,
)

TYPE_CHECKING = False  # not typing's: --help should not pay for importing it
if TYPE_CHECKING:
    from typing import Any, NoReturn, TypeAlias


class _Formatter(argparse.HelpFormatter):
    """argparse's, with the width read without importing ``shutil`` (and its
    compression modules) only to print a help page."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("width") is None and len(args) < 3:
            import os

            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    columns = os.get_terminal_size().columns
                except OSError:
                    columns = 80
            kwargs["width"] = max(columns - 2, 20)
        super().__init__(prog, *args, **kwargs)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 like every other error.

    Abbreviations are off: ``relay --proxy URL`` must not quietly become
    ``--proxy-protocol URL``, and a new option must never change what an old
    command line means.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """``--keepalive`` alone is ``--keepalive=on``: the word after a bare flag is
        never taken as its value (``connect --keepalive HOST:PORT``)."""
        if args is not None:
            args = list(args)
            end = args.index("--") if "--" in args else len(args)
            args[:end] = [ATTACHED_ONLY.get(word, word) for word in args[:end]]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras[:1] == ["--"] and getattr(parsed, "handler", None) and not parsed.args:
            parsed.args, extras = extras[1:], []  # serve ADDRESS exec --pty -- PROG ARGS
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"
_STREAM_IDLE = (
    "give up after S seconds without traffic (datagram: wait "
    "for replies this long after stdin ends; default 1)"
)


def _connect(commands: _Commands, full: bool = True) -> None:
    parser = commands.add_parser(
        "connect",
        help="connect to ADDRESS: stdin to the socket, the socket to stdout",
        description="Connect to ADDRESS and copy stdin to the socket and the socket to "
        "stdout, byte for byte (like nc HOST PORT).",
    )
    if not full:
        return  # listed in the top-level help; its options are not needed
    parser.add_argument(
        "address", metavar="ADDRESS", nargs="+", help="where to connect (several with -z)"
    )
    add_timeout(parser, "give up connecting after S seconds (with --wait: each attempt)")
    add_idle_timeout(parser, _STREAM_IDLE)
    readiness = parser.add_argument_group("readiness")
    readiness.add_argument(
        "-z",
        "--check",
        action="store_true",
        help="only check that every ADDRESS accepts a connection (tls: handshake and "
        "certificate too), send nothing; exit 1 naming each that does not (nc -z)",
    )
    readiness.add_argument(
        "--wait",
        type=seconds,
        metavar="S",
        help="retry for up to S seconds until the addresses are up (with -z), or "
        "until the connect succeeds",
    )
    add_stream(parser)
    add_session(parser)
    add_socket(parser, keepalive_default=False, connects=True)
    add_tls(parser, client=True)
    add_programs(parser, "connect")
    add_output(parser)


def _listen(commands: _Commands, full: bool = True) -> None:
    parser = commands.add_parser(
        "listen",
        help="accept a client on ADDRESS (many with -k), then as connect",
        description="Listen on ADDRESS, accept one client (or many with -k) and copy "
        "stdin to it and it to stdout (like nc -l).",
    )
    if not full:
        return  # listed in the top-level help; its options are not needed
    parser.add_argument("address", metavar="ADDRESS")
    parser.add_argument(
        "-k",
        "--keep-open",
        action="store_true",
        help="accept many clients: stdin goes to all, all go to stdout",
    )
    add_max_conns(parser, "with -k: close clients beyond N at once")
    add_timeout(parser, "give up waiting for the first client after S seconds")
    add_idle_timeout(parser, _STREAM_IDLE)
    add_stream(parser)
    add_session(parser)
    add_socket(parser, keepalive_default=False, listens=True)
    add_access(parser, "accept")
    add_tls(parser, server=True)
    add_programs(parser, "listen")
    add_output(parser)


def _serve(commands: _Commands, full: bool = True) -> None:
    parser = commands.add_parser(
        "serve",
        help="a concurrent server on ADDRESS running HANDLER",
        description="Serve many clients at once with a handler: echo, discard, ack, "
        "exec -- PROG ARGS, broker, chat, socks5, http-proxy, or MODULE:FUNCTION.",
    )
    if not full:
        return  # listed in the top-level help; its options are not needed
    parser.add_argument("address", metavar="ADDRESS")
    parser.add_argument("handler", metavar="HANDLER")
    parser.add_argument(
        "args",
        nargs="*",
        metavar="ARGS",
        help="for exec: -- PROG [ARGS...] (after --, nothing is an option)",
    )
    add_idle_timeout(parser, "close a connection with no traffic for S seconds")
    add_server(parser, each="connection", where="the address", default_model="thread")
    parser.add_argument(
        "--accept-proxy-protocol",
        action="store_true",
        help="each client starts with a PROXY v1/v2 header (HAProxy send-proxy, nginx "
        "proxy_protocol): the handler and the log see the client it names",
    )
    add_access(parser, "serve")
    add_proxy_server(parser)
    add_socket(parser, keepalive_default=True, listens=True)
    add_tls(parser, server=True)
    add_programs(parser, "serve")
    add_output(parser, hexdump=False)


def _relay(commands: _Commands, full: bool = True) -> None:
    parser = commands.add_parser(
        "relay",
        help="for each client on FROM, open TO and copy both ways",
        description="Relay FROM to TO: FROM is listened on (or - for stdin/stdout), TO is "
        "connected to for every client (or exec:COMMAND LINE, or -). Datagram "
        "addresses on both sides make a datagram relay with a session per sender.",
    )
    if not full:
        return  # listed in the top-level help; its options are not needed
    parser.add_argument("source", metavar="FROM")
    parser.add_argument("target", metavar="TO")
    parser.add_argument("--once", action="store_true", help="relay one connection, then exit")
    add_idle_timeout(parser, "end a pair (or a datagram session) idle for S seconds")
    add_timeout(parser, "give up connecting to TO after S seconds (default 10)", default=10.0)
    parser.add_argument(
        "--max-sessions",
        type=count,
        metavar="N",
        help="datagram relays: at most N sessions (default 1024; the "
        "least recently used is evicted)",
    )
    parser.add_argument(
        "--proxy-protocol",
        choices=("v1", "v2"),
        help="send a HAProxy PROXY header to TO with the real client",
    )
    parser.add_argument(
        "--accept-proxy-protocol",
        action="store_true",
        help="read and check a PROXY header from each client on FROM",
    )
    parser.add_argument(
        "--no-splice",
        action="store_true",
        help="copy through buffers instead of splice (zero-copy)",
    )
    add_server(
        parser,
        each="pair",
        where="FROM",
        default_model=None,
        default_note="async; thread when TO is -",
    )
    add_access(parser, "relay")
    add_socket(
        parser, keepalive_default=True, connects=True, listens=True, datagrams=False, to="TO"
    )
    add_tls(parser, server=True, client=True)
    add_programs(parser, "relay")
    add_joining(parser)
    add_output(parser)


def _bench(commands: _Commands, full: bool = True) -> None:
    parser = commands.add_parser(
        "bench",
        help="load ADDRESS (any echo or discard server) and report rate and latency",
        description="Drive any echo or discard server over any address: round trips per "
        "second and latency percentiles (rr), bytes per second (stream), connections per "
        "second and handshake time (connect). Closed loop unless --rate.",
    )
    if not full:
        return  # listed in the top-level help; its options are not needed
    parser.add_argument("address", metavar="ADDRESS")
    parser.add_argument(
        "--mode",
        choices=("rr", "stream", "connect"),
        default="rr",
        help="rr: request, exact reply, repeat (default); stream: bulk; connect: "
        "connect, one round trip, close",
    )
    parser.add_argument(
        "-c", "--connections", type=count, default=1, metavar="N", help="connections (default 1)"
    )
    parser.add_argument(
        "--size", type=count, default=64, metavar="BYTES", help="request size (default 64)"
    )
    span = parser.add_mutually_exclusive_group()
    span.add_argument(
        "--duration", type=seconds, metavar="S", help="measure for S seconds (default 10)"
    )
    span.add_argument("--requests", type=count, metavar="N", help="stop after N requests")
    parser.add_argument(
        "--warmup", type=seconds, metavar="S", help="run S seconds first, not measured"
    )
    parser.add_argument(
        "--rate",
        type=per_second,
        metavar="R",
        help="open loop: R requests per second over all connections, latency from the "
        "intended send time",
    )
    parser.add_argument(
        "--pipeline", type=count, default=1, metavar="D", help="requests in flight per connection"
    )
    parser.add_argument(
        "--workers",
        type=whole,
        default=1,
        metavar="N",
        help="N processes share the connections (0 = one per CPU)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=1.0,
        metavar="S",
        help="datagrams: a reply not back within S seconds is lost (default 1)",
    )
    parser.add_argument(
        "--direction",
        choices=("send", "receive", "both"),
        default="send",
        help="stream mode: which way the bulk goes (default send)",
    )
    parser.add_argument(
        "--max-errors",
        type=whole,
        default=0,
        metavar="N",
        help="exit 1 when more than N errors (default 0)",
    )
    parser.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the latency distribution")
    add_tls(parser, client=True)
    add_output(parser, hexdump=False)


def _completion(commands: _Commands, full: bool = True) -> None:
    parser = commands.add_parser(
        "completion",
        help="print the shell completion script for bash or zsh",
        description="Print a completion script for SHELL: commands, options, handler "
        'names and address schemes. Load it with: eval "$(socketeer completion bash)" '
        "(in ~/.bashrc), or save the zsh one as _socketeer in a directory on $fpath.",
    )
    if not full:
        return  # listed in the top-level help; its options are not needed
    parser.add_argument("shell", metavar="SHELL", choices=("bash", "zsh"), help="bash or zsh")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole grammar; with ``only``, that command's options alone (the others are
    listed, not built: ``socketeer bench --help`` need not declare relay's 40 options)."""
    parser = _Parser(
        prog="socketeer",
        description="Sockets from the command line: clients, servers and relays over "
        "TCP, UDP and Unix sockets.",
        epilog="Addresses: tcp://HOST:PORT (tcp4://, tcp6://), udp://HOST:PORT (udp4://, "
        "udp6://), tls://HOST:PORT, unix:PATH, unix:@NAME, unix-dgram:PATH, "
        "unix-dgram:@NAME, HOST:PORT, [IPV6]:PORT, :PORT, fd:N, systemd:; relay also "
        "takes -, stdio: and exec:COMMAND LINE (see docs/addresses.md).",
    )
    parser.add_argument("--version", action="version", version=f"socketeer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name, declare in COMMANDS.items():
        declare(commands, full=only is None or only == name)
    return parser


COMMANDS = {
    "connect": _connect,
    "listen": _listen,
    "serve": _serve,
    "relay": _relay,
    "bench": _bench,
    "completion": _completion,
}
