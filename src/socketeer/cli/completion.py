"""``socketeer completion bash|zsh``: the shell completion script, generated from the parser.

shtab turns the argparse declarations into a script, so commands and options
can never drift from what the parser accepts. On top of them this module adds
what argparse cannot know: the handler names ``serve`` takes and the address
schemes (SPEC §1). shtab is imported here, when the command runs, never on the
``--help`` or ``--version`` path.
"""

from __future__ import annotations

import sys

from ..handlers import BUILTIN
from ..relay.endpoints import FORMS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

#: What an address starts with: every scheme of the grammar (SPEC §1).
SCHEMES = (
    "tcp://",
    "tcp4://",
    "tcp6://",
    "udp://",
    "udp4://",
    "udp6://",
    "tls://",
    "unix:",
    "unix-dgram:",
    "fd:",
    "systemd:",
)
#: The extra endpoints a relay takes on either side.
ENDPOINTS = FORMS

_BASH = """
_socketeer_addresses() {{
  compgen -W "{schemes}" -- "$1"
}}
_socketeer_endpoints() {{
  compgen -W "{schemes} {endpoints}" -- "$1"
}}
_socketeer_handlers() {{
  compgen -W "{handlers}" -- "$1"
}}
"""

# shtab's function reads COMP_WORDS, which bash splits at every ':' (its
# COMP_WORDBREAKS): "serve 127.0.0.1:0 e" would be five words and HANDLER the
# third. The wrapper gives it the words as the command line has them, takes back
# what bash will not insert (the current word up to its last ':'), and adds no
# space after a scheme ("tcp://" is the start of a word, not a whole one). The
# generators run in a subshell, where compopt cannot reach the completion.
_BASH_WRAPPER = """
_socketeer() {
  local line=${COMP_LINE:0:COMP_POINT}
  local -a COMP_WORDS
  read -ra COMP_WORDS <<< "$line"
  [[ -z $line || $line == *[[:space:]] ]] && COMP_WORDS+=("")
  local COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  _shtab_socketeer "$@"
  local current=${COMP_WORDS[COMP_CWORD]} i
  if [[ $current == *:* && $COMP_WORDBREAKS == *:* ]]; then
    local head=${current%"${current##*:}"}
    for i in "${!COMPREPLY[@]}"; do
      COMPREPLY[i]=${COMPREPLY[i]#"$head"}
      [[ -n ${COMPREPLY[i]} ]] || unset "COMPREPLY[i]"
    done
    COMPREPLY=("${COMPREPLY[@]}")
  fi
  for i in "${COMPREPLY[@]}"; do
    if [[ $i == *: || $i == *:// || $i == "//" ]]; then
      compopt -o nospace 2>/dev/null || :
      break
    fi
  done
  return 0
}
complete -o bashdefault -F _socketeer socketeer
"""

_ZSH = """
_socketeer_addresses() {{
  compadd -S '' -- {schemes}
}}
_socketeer_endpoints() {{
  compadd -S '' -- {schemes} {endpoints}
}}
_socketeer_handlers() {{
  compadd -- {handlers}
}}
"""

# The positionals, by metavar, that complete as an address, an endpoint or a handler.
_COMPLETERS = {
    "ADDRESS": "_socketeer_addresses",
    "FROM": "_socketeer_endpoints",
    "TO": "_socketeer_endpoints",
    "HANDLER": "_socketeer_handlers",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def annotate(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Mark the positionals that complete as addresses, endpoints or handlers (shtab's
    ``complete`` attribute); returns ``parser``."""
    for command in _subparsers(parser).values():
        for action in command._actions:
            function = _COMPLETERS.get(str(action.metavar)) if not action.option_strings else None
            if function is not None:
                action.complete = {"bash": function, "zsh": function}  # type: ignore[attr-defined]
    return parser


def script(shell: str) -> str:
    """The completion script for ``shell`` ("bash" or "zsh")."""
    import shtab

    from .parser import build_parser

    words = {
        "schemes": " ".join(SCHEMES),
        "endpoints": " ".join(ENDPOINTS),
        "handlers": " ".join(BUILTIN),
    }
    preamble = (_BASH if shell == "bash" else _ZSH).format(**words)
    text = str(shtab.complete(annotate(build_parser()), shell=shell, preamble=preamble))
    return text + _BASH_WRAPPER if shell == "bash" else text


def run(args: argparse.Namespace) -> int:
    try:
        text = script(args.shell)
    except ImportError:
        from ..errors import UsageError

        raise UsageError("completion needs shtab: pip install 'socketeer[completion]'") from None
    sys.stdout.write(text)
    return 0
