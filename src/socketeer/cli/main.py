"""``socketeer COMMAND ...``: argument parsing, dispatch, and the one place errors are reported.

Each command lives in its own module, imported only when it runs, so
``socketeer --help`` does not pay for code it does not use. Every failure ends
here as one line, ``socketeer: error: WHAT: DETAIL``, and the error's exit
code (SPEC §5); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import SocketeerError, UsageError

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks clean up."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output")
    out.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="report connections (-vv: more detail) on stderr",
    )
    out.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing but errors on stderr"
    )
    out.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    out.add_argument(
        "--hexdump", metavar="FILE|-", help="hex dump of both directions to FILE ('-' = stderr)"
    )


def _tls_options(parser: argparse.ArgumentParser, *, server: bool) -> None:
    tls = parser.add_argument_group("TLS (tls://HOST:PORT)")
    tls.add_argument("--cert", metavar="FILE", help="certificate (chain) in PEM")
    tls.add_argument("--key", metavar="FILE", help="its private key in PEM")
    if server:
        tls.add_argument(
            "--ca", metavar="FILE", help="require a client certificate signed by this CA"
        )
        tls.add_argument(
            "--self-signed",
            action="store_true",
            help="make a temporary certificate and print its SHA-256 fingerprint",
        )
    else:
        tls.add_argument("--ca", metavar="FILE", help="trust this CA instead of the system's")
        tls.add_argument(
            "--insecure",
            action="store_true",
            help="do not verify the server's certificate (prints a warning)",
        )
        tls.add_argument(
            "--server-name",
            metavar="NAME",
            help="the name to send (SNI) and verify, instead of HOST",
        )
        tls.add_argument(
            "--pin",
            metavar="SHA256",
            help="accept only the certificate with this SHA-256 fingerprint",
        )
    tls.add_argument("--alpn", metavar="PROTOS", help="ALPN protocols, comma-separated")


def _stream_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--idle-timeout",
        type=_seconds,
        metavar="S",
        help="give up after S seconds without traffic (datagram: wait "
        "for replies this long after stdin ends; default 1)",
    )
    parser.add_argument(
        "--no-shutdown",
        action="store_true",
        help="at stdin EOF keep the socket open for writing (no half-close)",
    )
    parser.add_argument("--crlf", action="store_true", help="send line ends from stdin as CRLF")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be a positive number: {text!r}")
    return value


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="socketeer",
        description="Sockets from the command line: clients, servers and relays over "
        "TCP, UDP and Unix sockets.",
        epilog="Addresses: tcp://HOST:PORT, udp://HOST:PORT, unix:PATH, unix:@NAME, "
        "unix-dgram:PATH, HOST:PORT, :PORT (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"socketeer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    connect = commands.add_parser(
        "connect",
        help="connect to ADDRESS: stdin to the socket, the socket to stdout",
        description="Connect to ADDRESS and copy stdin to the socket and the socket to "
        "stdout, byte for byte (like nc HOST PORT).",
    )
    connect.add_argument("address", metavar="ADDRESS")
    connect.add_argument(
        "-t", "--timeout", type=_seconds, metavar="S", help="give up connecting after S seconds"
    )
    _stream_options(connect)
    _tls_options(connect, server=False)
    _common(connect)

    listen = commands.add_parser(
        "listen",
        help="accept a client on ADDRESS (many with -k), then as connect",
        description="Listen on ADDRESS, accept one client (or many with -k) and copy "
        "stdin to it and it to stdout (like nc -l).",
    )
    listen.add_argument("address", metavar="ADDRESS")
    listen.add_argument(
        "-k",
        "--keep-open",
        action="store_true",
        help="accept many clients: stdin goes to all, all go to stdout",
    )
    listen.add_argument(
        "--max-conns", type=_count, metavar="N", help="with -k: close clients beyond N at once"
    )
    listen.add_argument(
        "-t",
        "--timeout",
        type=_seconds,
        metavar="S",
        help="give up waiting for the first client after S seconds",
    )
    _stream_options(listen)
    _tls_options(listen, server=True)
    _common(listen)

    serve = commands.add_parser(
        "serve",
        help="a concurrent server on ADDRESS running HANDLER",
        description="Serve many clients at once with a handler: echo, discard, ack, "
        "exec -- PROG ARGS, broker, chat, or MODULE:FUNCTION.",
    )
    serve.add_argument("address", metavar="ADDRESS")
    serve.add_argument("handler", metavar="HANDLER")
    serve.add_argument(
        "args",
        nargs="*",
        metavar="ARGS",
        help="for exec: -- PROG [ARGS...] (after --, nothing is an option)",
    )
    serve.add_argument(
        "--model",
        choices=("thread", "fork", "async"),
        default="thread",
        help="a thread per connection (default), a process per connection, or one event loop",
    )
    serve.add_argument(
        "--workers",
        type=_whole,
        default=1,
        metavar="N",
        help="N processes share the address (0 = one per CPU)",
    )
    serve.add_argument(
        "--max-conns",
        type=_count,
        metavar="N",
        help="close clients beyond N open connections at once",
    )
    serve.add_argument(
        "-i",
        "--idle-timeout",
        type=_seconds,
        metavar="S",
        help="close a connection with no traffic for S seconds",
    )
    serve.add_argument(
        "--allow",
        action="append",
        metavar="NET",
        help="serve only clients in these addresses/CIDR networks",
    )
    serve.add_argument(
        "--deny",
        action="append",
        metavar="NET",
        help="refuse clients in these addresses/CIDR networks",
    )
    serve.add_argument(
        "--grace",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="on SIGTERM/SIGINT, let connections finish for S seconds (default 5)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="the connection log on stderr",
    )
    _tls_options(serve, server=True)
    _common(serve)

    relay = commands.add_parser(
        "relay",
        help="for each client on FROM, open TO and copy both ways",
        description="Relay FROM to TO: FROM is listened on (or - for stdin/stdout), TO is "
        "connected to for every client (or exec:COMMAND LINE, or -). Datagram "
        "addresses on both sides make a datagram relay with a session per sender.",
    )
    relay.add_argument("source", metavar="FROM")
    relay.add_argument("target", metavar="TO")
    relay.add_argument("--once", action="store_true", help="relay one connection, then exit")
    relay.add_argument(
        "-i",
        "--idle-timeout",
        type=_seconds,
        metavar="S",
        help="end a pair (or a datagram session) idle for S seconds",
    )
    relay.add_argument(
        "-t",
        "--timeout",
        type=_seconds,
        metavar="S",
        help="give up connecting to TO after S seconds (default 10)",
    )
    relay.add_argument(
        "--max-conns", type=_count, metavar="N", help="close clients beyond N open pairs at once"
    )
    relay.add_argument(
        "--max-sessions",
        type=_count,
        metavar="N",
        help="datagram relays: at most N sessions (default 1024; the "
        "least recently used is evicted)",
    )
    relay.add_argument(
        "--allow",
        action="append",
        metavar="NET",
        help="relay only clients in these addresses/CIDR networks",
    )
    relay.add_argument(
        "--deny",
        action="append",
        metavar="NET",
        help="refuse clients in these addresses/CIDR networks",
    )
    relay.add_argument(
        "--proxy-protocol",
        choices=("v1", "v2"),
        help="send a HAProxy PROXY header to TO with the real client",
    )
    relay.add_argument(
        "--accept-proxy-protocol",
        action="store_true",
        help="read and check a PROXY header from each client on FROM",
    )
    relay.add_argument(
        "--no-splice",
        action="store_true",
        help="copy through buffers instead of splice (zero-copy)",
    )
    tls = relay.add_argument_group("TLS: FROM tls:// terminates, TO tls:// originates")
    tls.add_argument("--cert", metavar="FILE", help="FROM: the certificate (chain) in PEM")
    tls.add_argument("--key", metavar="FILE", help="FROM: its private key")
    tls.add_argument(
        "--self-signed",
        action="store_true",
        help="FROM: a temporary certificate; prints its SHA-256 fingerprint",
    )
    tls.add_argument(
        "--client-ca", metavar="FILE", help="FROM: require client certificates signed by this CA"
    )
    tls.add_argument("--ca", metavar="FILE", help="TO: trust this CA instead of the system's")
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="TO: do not verify the certificate (prints a warning)",
    )
    tls.add_argument("--server-name", metavar="NAME", help="TO: the name to send and verify")
    tls.add_argument("--pin", metavar="SHA256", help="TO: accept only this certificate")
    tls.add_argument("--alpn", metavar="PROTOS", help="ALPN protocols, comma-separated")
    relay.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="the log on stderr"
    )
    _common(relay)
    return parser


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failure, 2 usage, 130 SIGINT)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(args_list)
        if args.command == "connect":
            from .connect import run
        elif args.command == "listen":
            from .listen import run
        elif args.command == "serve":
            from .serve import run
        else:
            from .relay import run
        return run(args)
    except SocketeerError as exc:
        if debug:
            traceback.print_exc()
        print(f"socketeer: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED
    except BrokenPipeError:
        # stdout went away (`socketeer connect ... | head`): nothing left to do.
        _silence_stdout()
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass
