"""The manual pages and the shell completion agree with the parser they are generated from."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from socketeer.cli.completion import ENDPOINTS, SCHEMES, script
from socketeer.cli.parser import build_parser

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"


def commands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no commands")


def roff(text: str) -> str:
    """How a word is written in a page: roff's minus sign for each hyphen."""
    return text.replace("-", r"\-")


# -- manual pages -------------------------------------------------------------------------


def test_committed_pages_are_what_the_parser_generates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_man.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {page.name: page.read_text() for page in tmp_path.glob("*.1")}
    committed = {page.name: page.read_text() for page in MAN.glob("*.1")}
    assert sorted(committed) == sorted(fresh), "run 'make man' and commit man/"
    for name, text in fresh.items():
        assert committed[name] == text, f"man/{name} is stale: run 'make man' and commit man/"


def test_a_page_for_socketeer_and_each_command() -> None:
    expected = {"socketeer.1"} | {f"socketeer-{name}.1" for name in commands()}
    assert {page.name for page in MAN.glob("*.1")} == expected
    assert {"connect", "listen", "serve", "relay", "bench", "completion"} <= set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_of_a_command_is_in_its_page(name: str) -> None:
    page = (MAN / f"socketeer-{name}.1").read_text()
    assert page.startswith(f'.TH {roff("SOCKETEER-" + name.upper())} "1"')
    parser = commands()[name]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        for option in action.option_strings:
            assert rf"\fB{roff(option)}\fR" in page, f"{option} missing from socketeer-{name}(1)"
        if not action.option_strings:
            assert str(action.metavar) in page
        if action.help:
            first_words = " ".join(action.help.split()[:3])
            assert roff(first_words) in page.replace("\n", " "), (name, action.dest)


def test_the_main_page_has_commands_addresses_exit_status_and_environment() -> None:
    page = (MAN / "socketeer.1").read_text()
    for name in commands():
        assert rf"\fI\,{name}\/\fR" in page
        assert rf"\fBsocketeer\-{roff(name)}\fR(1)" in page  # SEE ALSO
    for heading in ("ADDRESSES", "EXIT STATUS", "ENVIRONMENT", "SEE ALSO"):
        assert f".SH {heading}\n" in page
    for scheme in SCHEMES:
        assert rf"\fB{roff(scheme)}" in page, scheme
    for variable in ("LISTEN_FDS", "LISTEN_PID"):
        assert variable in page
    for code in ("0", "1", "2", "130"):
        assert f".B {code}\n" in page
    assert r"\fB\-\-version\fR" in page


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")
def test_pages_render_without_warnings() -> None:
    for page in MAN.glob("*.1"):
        out = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0 and not out.stderr, (page.name, out.stderr)


# -- shell completion ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "socketeer.bash"
    path.write_text(script("bash"))
    return path


def complete(bash_script: Path, line: str) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end), asked as bash asks: the
    words split at spaces and around every ':' (COMP_WORDBREAKS), COMP_LINE whole."""
    words = [piece for word in line.split() for piece in re.findall(r"[^:]+|:+", word)]
    if not line or line.endswith(" "):
        words.append("")
    program = r"""
source "$1"
COMP_LINE=$2
COMP_POINT=${#2}
shift 2
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
function=$(complete -p socketeer | sed -E 's/.*-F ([^ ]+).*/\1/')
"$function" socketeer "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""
    out = subprocess.run(
        ["bash", "-c", program, "bash", str(bash_script), line, *words],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [word for word in out.stdout.splitlines() if word]


def test_bash_registers_a_function_for_socketeer(bash_script: Path) -> None:
    out = subprocess.run(
        ["bash", "-c", 'source "$1"; complete -p socketeer', "bash", str(bash_script)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-F _socketeer socketeer" in out.stdout


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("socketeer re", ["relay"]),
        ("socketeer c", ["connect", "completion"]),
        ("socketeer serve 127.0.0.1:0 e", ["echo", "exec"]),
        (
            "socketeer serve 127.0.0.1:0 ",
            ["echo", "discard", "ack", "exec", "broker", "chat", "socks5", "http-proxy"],
        ),
        ("socketeer completion ", ["bash", "zsh"]),
        ("socketeer relay --proxy-protocol ", ["v1", "v2"]),
        ("socketeer serve --model ", ["thread", "fork", "async"]),
        ("socketeer connect tcp", ["tcp://", "tcp4://", "tcp6://"]),
        ("socketeer listen unix", ["unix:", "unix-dgram:"]),
        ("socketeer connect ", list(SCHEMES)),
        ("socketeer relay 127.0.0.1:0 ex", ["exec:"]),
        (
            "socketeer relay --model async 127.0.0.1:0 127.0.0.1:1 --pro",
            ["--proxy", "--proxy-protocol"],
        ),
        ("socketeer relay tcp://127.0.0.1:0 unix-d", ["unix-dgram:"]),
        ("socketeer connect unix-dgram:", []),
        ("socketeer connect tcp:", ["//"]),
    ],
)
def test_bash_completes(bash_script: Path, line: str, expected: list[str]) -> None:
    assert sorted(complete(bash_script, line)) == sorted(expected)


def test_bash_completes_options_of_the_command(bash_script: Path) -> None:
    offered = complete(bash_script, "socketeer relay --pro")
    assert "--proxy-protocol" in offered
    assert all(word.startswith("--pro") for word in offered)
    assert "--keep-open" in complete(bash_script, "socketeer listen --")
    assert "--keep-open" not in complete(bash_script, "socketeer connect --")


def test_bash_completes_every_option_of_every_command(bash_script: Path) -> None:
    for name, parser in commands().items():
        offered = set(complete(bash_script, f"socketeer {name} -"))
        for action in parser._actions:
            assert set(action.option_strings) <= offered, (name, action.option_strings)


def test_relay_sides_complete_endpoints_too(bash_script: Path) -> None:
    offered = complete(bash_script, "socketeer relay ")
    assert set(offered) == set(SCHEMES) | set(ENDPOINTS)


def test_zsh_script_names_the_completers() -> None:
    text = script("zsh")
    assert text.startswith("#compdef socketeer")
    for word in ("_socketeer_addresses", "_socketeer_handlers", "--proxy-protocol", "broker"):
        assert word in text
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-n"], input=text, text=True, check=True)


def test_the_command_prints_the_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "socketeer", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == script("bash")
    bad = subprocess.run(
        [sys.executable, "-m", "socketeer", "completion", "fish"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "socketeer: error:" in bad.stderr


def test_help_does_not_import_shtab() -> None:
    code = (
        "import sys\nfrom socketeer.cli.main import main\n"
        "try:\n    main(['completion', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('shtab' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
