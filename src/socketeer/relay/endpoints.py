"""What ``relay`` can connect: any stream address of §1, standard I/O, or a program.

``-`` or ``stdio:`` is standard input and output; ``exec:COMMAND LINE`` is a
program, split as a shell would split it (quotes, backslashes) but never run
through a shell. Pure: parsing only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..address import Address
from ..errors import AddressError

__all__ = ["Endpoint", "Program", "Stdio", "parse_endpoint"]


@dataclass(frozen=True)
class Stdio:
    """This process's standard input (read) and output (write)."""

    def __str__(self) -> str:
        return "-"


@dataclass(frozen=True)
class Program:
    """A program per connection: its stdin and stdout are the stream."""

    argv: tuple[str, ...]

    def __str__(self) -> str:
        return "exec:" + shlex.join(self.argv)


Endpoint = Address | Stdio | Program


def parse_endpoint(text: str) -> Endpoint:
    """An endpoint of a relay.

    Raises:
        AddressError: not an address, or an ``exec:`` without a command.
    """
    if text in ("-", "stdio:"):
        return Stdio()
    if text.startswith("exec:"):
        try:
            argv = shlex.split(text[5:])
        except ValueError as exc:
            raise AddressError(f"bad endpoint {text!r}: {exc} (exec:COMMAND LINE)") from None
        if not argv:
            raise AddressError(f"bad endpoint {text!r}: exec: needs a command (exec:COMMAND LINE)")
        return Program(tuple(argv))
    return Address.parse(text)
