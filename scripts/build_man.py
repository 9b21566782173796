"""Write socketeer's manual pages, generated from the command line's parser.

    python scripts/build_man.py [DIR]        (default: man/)

socketeer(1) lists the commands and describes the address grammar, the exit
status and the environment; socketeer-COMMAND(1) gives each command's options
as the parser declares them (argparse-manpage). The pages in man/ are
committed and installed with the package; a test regenerates them and fails
when they differ, so the parser and the pages cannot disagree. Nothing here
depends on the terminal, the date or the machine: the same parser gives the
same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ["COLUMNS"] = "80"  # argparse wraps usage lines to the terminal's width

from argparse_manpage.manpage import Manpage  # noqa: E402

from socketeer import __version__  # noqa: E402
from socketeer.cli.parser import build_parser  # noqa: E402

MANUAL = "socketeer manual"

ADDRESSES = r"""
One grammar for every command (and for the library's \fBAddress.parse\fR):
.TP
\fBtcp://\fIHOST\fB:\fIPORT\fR
TCP over IPv4 or IPv6, whichever \fIHOST\fR resolves to; a client tries each
address in turn.
.TP
\fBtcp4://\fIHOST\fB:\fIPORT\fR, \fBtcp6://\fIHOST\fB:\fIPORT\fR
TCP forced to one family.
.TP
\fBudp://\fIHOST\fB:\fIPORT\fR, \fBudp4://\fR..., \fBudp6://\fR...
UDP.
.TP
\fBtls://\fIHOST\fB:\fIPORT\fR
TLS over TCP.
.TP
\fBunix:\fIPATH\fR, \fBunix://\fIPATH\fR
Unix-domain stream socket at a filesystem path.
.TP
\fBunix\-dgram:\fIPATH\fR
Unix-domain datagram socket.
.TP
\fBunix:@\fINAME\fR, \fBunix\-dgram:@\fINAME\fR
Linux abstract namespace (no file).
.TP
\fIHOST\fB:\fIPORT\fR, \fB[\fIIPV6\fB]:\fIPORT\fR
Shorthand for \fBtcp://\fR; IPv6 literals always in brackets.
.TP
\fB:\fIPORT\fR, \fIPORT\fR
TCP on all interfaces (for listening). Port 0 means any free port; servers
print the real one in \fBlistening on\fR \fIADDRESS\fR on stderr.
.TP
\fBfd:\fIN\fR
An inherited descriptor.
.TP
\fBsystemd:\fR
Socket activation: the sockets systemd passed (listening addresses).
.PP
\fBrelay\fR also takes, on either side: \fB\-\fR or \fBstdio:\fR (standard
input and output), \fBexec:\fICOMMAND LINE\fR (a program, split as a shell
would split it but never run through one), \fBfile:\fIPATH\fR, \fBpty:\fR or
\fBpty:\fILINK\fR. Proxy URLs: \fBsocks4://\fR, \fBsocks4a://\fR,
\fBsocks5://\fR, \fBsocks5h://\fR, \fBhttp://\fR, each
[\fIUSER\fB:\fIPASSWORD\fB@\fR]\fIHOST\fB:\fIPORT\fR.
"""

EXIT_STATUS = r"""
.TP
.B 0
Success: the peer closed, or a datagram wait for replies ended.
.TP
.B 1
A runtime or network failure: refused, unreachable, reset, timeout (including
a stream idle timeout), TLS failure, DNS failure, address in use.
.TP
.B 2
A usage error: unknown option, bad address, missing argument.
.TP
.B 130
Interrupted by SIGINT.
.PP
A failure is one line on stderr, \fBsocketeer: error:\fR \fIWHAT\fB:\fR
\fIDETAIL\fR; \fB\-\-debug\fR adds the traceback.
"""

ENVIRONMENT = r"""
.TP
.B LISTEN_FDS\fR, \fBLISTEN_PID\fR, \fBLISTEN_FDNAMES
Socket activation (\fBsystemd:\fR and \fBfd:\fIN\fR): the inherited sockets
start at descriptor 3; a \fBLISTEN_PID\fR naming another process is refused.
socketeer removes them from its environment, so its children do not see them.
.TP
.B PROTO\fR, \fBTCPREMOTEIP\fR, \fBTCPREMOTEPORT\fR, \fBTCPLOCALIP\fR, \fBTCPLOCALPORT
Set for the programs that \fBserve ... exec\fR and \fBrelay ... exec:\fR start
(UCSPI), describing the connection.
.TP
.B TERM
The live progress line of \fBbench\fR is drawn only on a terminal that is not
\fBdumb\fR.
"""


HANDLERS = r"""
.TP
.B echo
Send back every byte (or datagram) the client sends.
.TP
.B discard
Read and drop everything.
.TP
.B ack
The tutorial's server: print each line as \fBHere is the message:\fR
\fILINE\fR on stdout and answer \fBI got your message\fR.
.TP
\fBexec \-\-\fR \fIPROG\fR [\fIARGS\fR...]
Run \fIPROG\fR for each connection with the socket as its stdin and stdout.
.TP
.B broker
One room: what a client sends goes to every other client, raw.
.TP
.B chat
One room with names and notices.
.TP
\fIMODULE\fB:\fIFUNCTION\fR
A handler of your own, imported by name.
"""


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no commands")


def _summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _page(
    parser: argparse.ArgumentParser, name: str, summary: str, sections: dict[str, str]
) -> str:
    page = Manpage(
        parser,
        {
            "project_name": "socketeer",
            "version": __version__,
            "manual_title": MANUAL,
            "description": summary,
        },
    )
    page.prog = name  # the page's title and NAME: socketeer-relay, not "socketeer relay"
    page.date = ""  # reproducible: the version says which release the page describes
    for heading, content in sections.items():
        page.add_section(heading, "=", content.strip())
    return str(page)


def pages() -> dict[str, str]:
    """Every page, by file name."""
    top = build_parser()
    summaries = _summaries(top)
    names = list(_commands(top))
    see_also = ", ".join(rf"\fBsocketeer\-{name}\fR(1)" for name in names)
    result = {}
    for name, command in _commands(build_parser()).items():
        extra = {"handlers": HANDLERS} if name == "serve" else {}
        result[f"socketeer-{name}.1"] = _page(
            command,
            f"socketeer-{name}",
            summaries[name],
            {
                **extra,
                "exit status": EXIT_STATUS,
                "see also": r"\fBsocketeer\fR(1)",
            },
        )
    # socketeer(1) lists the commands, whose options are on their own pages, and
    # describes the addresses in full instead of the --help epilog's one paragraph.
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.choices.clear()
    top._positionals.title = "commands"
    top.epilog = None
    result["socketeer.1"] = _page(
        top,
        "socketeer",
        "sockets from the command line: clients, servers and relays",
        {
            "addresses": ADDRESSES,
            "exit status": EXIT_STATUS,
            "environment": ENVIRONMENT,
            "see also": see_also,
        },
    )
    return result


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "man"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.1"):
        old.unlink()
    written = pages()
    for name, text in sorted(written.items()):
        (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(written)} pages to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
