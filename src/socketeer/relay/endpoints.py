"""What ``relay`` can connect: any stream address of §1, standard I/O, a program, a file, a pty.

``-`` or ``stdio:`` is standard input and output; ``exec:COMMAND LINE`` is a
program, split as a shell would split it (quotes, backslashes) but never run
through a shell (``pty-exec:COMMAND LINE``: the same on a pseudo-terminal);
``file:PATH`` a file (read at FROM, written at TO); ``pty:`` a new
pseudo-terminal (``pty:LINK``: with a symlink to it). ``fd:N`` stays an
``Address``: whether it is listened on or carried as a stream is known only
once the descriptor is looked at. Pure: parsing only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..address import Address
from ..errors import AddressError

__all__ = ["FORMS", "Endpoint", "File", "Program", "Pty", "Stdio", "parse_endpoint"]

#: The endpoint forms besides the addresses of §1, as a user types their start.
FORMS = ("-", "stdio:", "exec:", "pty-exec:", "file:", "pty:")


@dataclass(frozen=True)
class Stdio:
    """This process's standard input (read) and output (write)."""

    def __str__(self) -> str:
        return "-"


@dataclass(frozen=True)
class Program:
    """A program per connection: its stdin and stdout are the stream.

    ``pty``: on a pseudo-terminal of ``pty_size`` (columns, rows) instead,
    its controlling terminal and stdin, stdout and stderr.
    """

    argv: tuple[str, ...]
    pty: bool = False
    pty_size: tuple[int, int] = (80, 24)

    def __str__(self) -> str:
        return ("pty-exec:" if self.pty else "exec:") + shlex.join(self.argv)


@dataclass(frozen=True)
class File:
    """A file: read from at FROM; written at TO, replaced or (``append``) added to."""

    path: str
    append: bool = False

    def __str__(self) -> str:
        return "file:" + self.path


@dataclass(frozen=True)
class Pty:
    """A new pseudo-terminal in raw mode, as a serial line; ``link``: a symlink to it."""

    link: str | None = None

    def __str__(self) -> str:
        return "pty:" + (self.link or "")


Endpoint = Address | Stdio | Program | File | Pty


def parse_endpoint(text: str) -> Endpoint:
    """An endpoint of a relay.

    Raises:
        AddressError: not an address, or an ``exec:`` without a command.
    """
    if text in ("-", "stdio:"):
        return Stdio()
    for prefix in ("exec:", "pty-exec:"):
        if text.startswith(prefix):
            try:
                argv = shlex.split(text[len(prefix) :])
            except ValueError as exc:
                raise AddressError(f"bad endpoint {text!r}: {exc} ({prefix}COMMAND LINE)") from None
            if not argv:
                raise AddressError(
                    f"bad endpoint {text!r}: {prefix} needs a command ({prefix}COMMAND LINE)"
                )
            return Program(tuple(argv), pty=prefix == "pty-exec:")
    if text.startswith("file:"):
        if not text[5:] or "\0" in text:
            raise AddressError(f"bad endpoint {text!r}: file: needs a path (file:PATH)")
        return File(text[5:])
    if text.startswith("pty:"):
        if "\0" in text:
            raise AddressError(f"bad endpoint {text!r}: NUL in the link path (pty:LINK)")
        return Pty(text[4:] or None)
    return Address.parse(text)
