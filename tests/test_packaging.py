"""The package a user installs: one version, the manual pages in the wheel, a changelog."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import socketeer

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_has_one_source() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.MULTILINE), "one source: __version__"
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "socketeer.__version__"}' in pyproject
    assert version("socketeer") == socketeer.__version__


def test_the_cli_reports_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "socketeer", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout == f"socketeer {socketeer.__version__}\n"


def test_the_changelog_keeps_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog")
    assert "https://keepachangelog.com/" in text
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert socketeer.__version__ in headings
    for heading in re.findall(r"^### (.+)$", text, re.MULTILINE):
        assert heading in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


@pytest.mark.slow
def test_the_wheel_carries_the_manual_pages(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("socketeer-*.whl")
    assert wheel.name.startswith(f"socketeer-{socketeer.__version__}-")
    data = f"socketeer-{socketeer.__version__}.data/data/share/man/man1/"
    with zipfile.ZipFile(wheel) as archive:
        pages = {
            name.removeprefix(data): archive.read(name)
            for name in archive.namelist()
            if name.startswith(data)
        }
        names = set(archive.namelist())
    committed = {page.name: page.read_bytes() for page in (ROOT / "man").glob("*.1")}
    assert pages == committed
    assert {"socketeer.1", "socketeer-relay.1"} <= set(pages)
    assert "socketeer/py.typed" in names
    assert "socketeer/cli/completion.py" in names
