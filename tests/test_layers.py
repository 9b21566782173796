"""The architecture holds: pure modules import no I/O, the public surface is what the docs say."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import socketeer

from .conftest import NOBODY

SRC = Path(socketeer.__file__).parent
PURE = [
    "address.py",
    "errors.py",
    "framing.py",
    "_buffer.py",
    "_deadline.py",
    "hexdump.py",
    "access.py",
    "chat.py",
    "proxyproto.py",
    "relay/endpoints.py",
]
IO_MODULES = {"socket", "ssl", "asyncio", "selectors", "select", "subprocess"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_pure_modules_import_no_io() -> None:
    for name in PURE:
        bad = imported_modules(SRC / name) & IO_MODULES
        assert not bad, f"{name} imports {bad}: protocol logic must stay free of I/O"


def test_public_names_exist_and_are_exported() -> None:
    for name in socketeer.__all__:
        assert hasattr(socketeer, name), name
    assert {"connect", "listen", "open_datagram", "Address"} <= set(socketeer.__all__)


def test_public_names_are_the_lazy_table() -> None:
    assert set(socketeer.__all__) == set(socketeer._WHERE)


def test_importing_the_cli_does_not_load_the_commands() -> None:
    # `socketeer --version` loads main and the errors, nothing else of socketeer.
    code = (
        "import sys, socketeer.cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith('socketeer.') "
        "and m != 'socketeer.cli'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['socketeer.cli.main', 'socketeer.errors']"


def test_typed_marker_is_shipped() -> None:
    assert (SRC / "py.typed").exists()


def _module_name(path: Path) -> str:
    parts = ["socketeer", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, name: str) -> set[str]:
    """The socketeer modules ``path`` imports when it runs (``TYPE_CHECKING`` blocks aside),
    lazy imports inside functions included: a cycle through them fails just as late."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    skipped: set[int] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for sub in node.body for child in ast.walk(sub))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("socketeer"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if not module.startswith("socketeer"):
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                is_module = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                    SRC.parent / sub.replace(".", "/") / "__init__.py"
                ).exists()
                found.add(sub if is_module else module)
    found.discard(name)
    return found


def test_no_import_cycles() -> None:
    graph = {_module_name(path): set() for path in SRC.rglob("*.py")}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        graph[name] = {m for m in _runtime_imports(path, name) if m in graph}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_server_is_importable_from_the_package_lazily() -> None:
    code = (
        "import sys, socketeer; assert 'socketeer.server' not in sys.modules; "
        "from socketeer import Server; from socketeer.server import Server as S; "
        "assert Server is S; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# What each start-up path may not load: modules of a command it does not run, and
# typing, which Python itself never loads (``python -X importtime -c pass``).
HEAVY = {"asyncio", "ssl", "typing", "selectors", "socket", "threading", "logging", "subprocess"}
STARTUP_LIMITS = {
    ("--version",): HEAVY | {"argparse", "dataclasses", "inspect", "signal", "traceback"},
    ("--help",): HEAVY | {"dataclasses", "inspect", "traceback"},
    ("relay", "--help"): HEAVY | {"dataclasses"},
    ("bench", "--help"): HEAVY | {"dataclasses", "hdrh", "matplotlib", "locust", "gevent"},
}


def loaded_at_start(*argv: str) -> set[str]:
    """The modules ``python -X importtime -m socketeer ARGV`` imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "socketeer", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, result.stderr
    return names


@pytest.mark.parametrize("argv", list(STARTUP_LIMITS), ids=" ".join)
def test_start_up_loads_nothing_it_does_not_use(argv: tuple[str, ...]) -> None:
    loaded = loaded_at_start(*argv)
    assert not loaded & STARTUP_LIMITS[argv], sorted(loaded & STARTUP_LIMITS[argv])


def test_connect_loads_no_typing_no_asyncio_no_ssl() -> None:
    # A plain TCP client: sockets and selectors yes; typing, asyncio, ssl, threads no.
    loaded = loaded_at_start("connect", "-t", "2", f"127.0.0.1:{NOBODY}")
    assert "socketeer.connection" in loaded
    unwanted = {"typing", "asyncio", "ssl", "threading", "logging", "subprocess", "tempfile"}
    assert not loaded & unwanted, sorted(loaded & unwanted)
