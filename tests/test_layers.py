"""The architecture holds: pure modules import no I/O, the public surface is what the docs say."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import socketeer

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
    # `socketeer --help` loads the parser and nothing else of socketeer.
    code = (
        "import sys, socketeer.cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith('socketeer.') "
        "and m != 'socketeer.cli'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['socketeer.cli.main', 'socketeer.errors']"


def test_typed_marker_is_shipped() -> None:
    assert (SRC / "py.typed").exists()
