"""Every example in README.md and docs/ runs, or says why it cannot.

A fenced ```python block is run as a script in a fresh interpreter; a fenced
```sh, ```bash or ```console block is run by bash (for ```console, the lines
after a ``$ `` prompt, and the lines it shows as output must appear in what
the commands print). Each runs in an empty temporary directory, in its own
process group (killed at the end, background servers with it), under a time
limit, with ``socketeer`` and ``python`` on PATH meaning this checkout.

An example that cannot run as it is written here (it needs a machine, a
service or minutes) carries the marker ``<!-- illustrative -->`` on the line
before its fence. Even so it is checked: Python must compile, shell must pass
``bash -n``, and every option on a ``socketeer COMMAND`` line must be one that
``socketeer COMMAND --help`` lists, so an illustration cannot drift from the
CLI unseen.

A ```python block made only of ``--8<-- "examples/tutorial/NAME.py"`` lines
shows a tutorial program; tests/test_tutorial.py runs each of those end to end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from .conftest import ROOT, SOCKETEER, cli_env

TIME_LIMIT = 30.0
MARKER = re.compile(r"^\s*<!--\s*illustrative\b.*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
SNIPPET = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')
PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell", "console"}


@dataclass(frozen=True)
class Example:
    path: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    illustrative: bool

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def extract(path: Path) -> list[Example]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(ROOT).as_posix()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        i += 1  # the closing fence
        lang = match["lang"].lower()
        if lang in PYTHON | SHELL:
            before = start - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            marked = before >= 0 and bool(MARKER.match(lines[before]))
            found.append(Example(rel, start + 1, lang, "\n".join(body) + "\n", marked))
    return found


EXAMPLES = [example for path in markdown_files() for example in extract(path)]


def test_examples_are_found() -> None:
    # The collector must see the pages' examples; an empty list would pass silently.
    assert sum(e.lang in PYTHON for e in EXAMPLES) >= 5
    assert sum(e.lang in SHELL for e in EXAMPLES) >= 10
    assert {e.path for e in EXAMPLES} >= {"README.md", "docs/quickstart.md", "docs/library.md"}


def test_markers_are_few() -> None:
    illustrative = [e for e in EXAMPLES if e.illustrative]
    assert len(illustrative) * 2 <= len(EXAMPLES), [e.id for e in illustrative]


# -- running ----------------------------------------------------------------


def tools(bin_dir: Path) -> dict[str, str]:
    """``socketeer`` and ``python`` on PATH are this checkout and this interpreter."""
    bin_dir.mkdir()
    (bin_dir / "socketeer").write_text(f'#!/bin/sh\nexec {shlex.join(SOCKETEER)} "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    for tool in ("socketeer", "python"):
        (bin_dir / tool).chmod(0o755)
    env = cli_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(bin_dir.parent)  # an example never writes into the real home
    return env


def run_bounded(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"still running after {TIME_LIMIT:.0f}s:\n{out.decode(errors='replace')}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # what it left in the background
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out.decode(errors="replace")


def console_parts(body: str) -> tuple[str, list[str]]:
    """The commands after ``$ `` prompts (with continuations), and the output lines shown."""
    commands: list[str] = []
    shown: list[str] = []
    continuing = False
    for line in body.splitlines():
        if continuing or line.startswith("$ "):
            text = line if continuing else line[2:]
            commands.append(text)
            continuing = text.endswith("\\")
        elif line.strip():
            shown.append(line)
    return "\n".join(commands) + "\n", shown


def shell_script(example: Example) -> str:
    return console_parts(example.body)[0] if example.lang == "console" else example.body


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.lang in PYTHON], ids=lambda e: e.id)
def test_python_example(example: Example, tmp_path: Path) -> None:
    included = [SNIPPET.match(line) for line in example.body.splitlines() if line.strip()]
    if included and all(included):
        tutorial_tests = (ROOT / "tests" / "test_tutorial.py").read_text()
        for match in included:
            assert match is not None
            program = ROOT / match["path"]
            assert program.is_file(), match["path"]
            assert program.parent == ROOT / "examples" / "tutorial", match["path"]
            assert f'"{program.name}"' in tutorial_tests, f"{program.name} is run by no test"
        return
    script = tmp_path / "example.py"
    script.write_text(example.body)
    compile(example.body, example.id, "exec")
    if example.illustrative:
        return
    env = tools(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    code, out = run_bounded([sys.executable, str(script)], work, env)
    assert code == 0, f"{example.id} exited {code}:\n{out}"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.lang in SHELL], ids=lambda e: e.id)
def test_shell_example(example: Example, tmp_path: Path) -> None:
    script = shell_script(example)
    syntax = subprocess.run(
        ["bash", "-n"], input=script.encode(), capture_output=True, timeout=10, check=False
    )
    assert syntax.returncode == 0, f"{example.id}: {syntax.stderr.decode()}"
    for command, options in socketeer_options(script):
        known = help_options(command)
        unknown = [o for o in options if o not in known]
        assert not unknown, f"{example.id}: socketeer {command} has no {', '.join(unknown)}"
    if example.illustrative:
        return
    env = tools(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    path = work / "example.sh"
    path.write_text(script)
    code, out = run_bounded(["bash", "-eu", "-o", "pipefail", str(path)], work, env)
    assert code == 0, f"{example.id} exited {code}:\n{out}"
    if example.lang == "console":
        for line in console_parts(example.body)[1]:
            pattern = ".*".join(re.escape(part) for part in line.split("…"))
            assert re.search(pattern, out), f"{example.id}: no {line!r} in:\n{out}"


# -- checking options against the parser -------------------------------------

COMMANDS = ("connect", "listen", "serve", "relay", "bench")


def socketeer_options(script: str) -> list[tuple[str, list[str]]]:
    """(command, options) for every ``socketeer COMMAND …`` in a shell script."""
    found = []
    joined = re.sub(r"\\\n", " ", script)
    for raw in joined.splitlines():
        line = raw.strip().removeprefix("$ ")
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for start, word in enumerate(words):
            if word != "socketeer" or start + 1 >= len(words) or words[start + 1] not in COMMANDS:
                continue
            options = []
            for token in words[start + 2 :]:
                if token in ("|", "&", "&&", "||", ";", ">", "2>", "<") or token == "--":
                    break
                if token.startswith("--"):
                    options.append(token.split("=", 1)[0])
                elif re.fullmatch(r"-([a-zA-Z])\1*", token):
                    options.append(token[:2])
            found.append((words[start + 1], options))
    return found


@cache
def help_options(command: str) -> frozenset[str]:
    result = subprocess.run(
        [*SOCKETEER, command, "--help"], capture_output=True, env=cli_env(), timeout=30, check=True
    )
    return frozenset(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", result.stdout.decode()))


def test_option_check_sees_a_wrong_option() -> None:
    script = "socketeer serve --model fork --bogus 127.0.0.1:0 echo -vv\n"
    [(command, options)] = socketeer_options(script)
    assert (command, options) == ("serve", ["--model", "--bogus", "-v"])
    assert "--bogus" not in help_options("serve")
    assert {"--model", "-v"} <= help_options("serve")
