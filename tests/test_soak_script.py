"""benchmarks/soak.py runs end to end with tiny parameters, so the script cannot rot.

The figures of a real run are in docs/reliability.md; here only that every
phase runs, that each target's samples are there, and that the goals a short
run can judge (no failed request, no leaked descriptor, no zombie, no
traceback, the server alive) hold.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, cli_env


@pytest.mark.slow
@pytest.mark.parametrize("target", ["async", "thread", "relay"])
def test_soak_script_runs_and_reports(target: str, tmp_path: Path) -> None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("the soak client is C: needs gcc")
    out = tmp_path / "soak.json"
    tiny = ["--connections", "500", "--minutes", "0.05", "--interval", "1", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--targets", target, *tiny],
        capture_output=True,
        text=True,
        timeout=90,
        env=cli_env(),
        check=False,
    )
    assert run.returncode in (0, 1), run.stderr  # 1: a goal missed, judged below
    assert "| target |" in run.stdout
    summary = json.loads(out.read_text())
    assert summary["parameters"]["connections"] == 500
    (result,) = summary["results"]
    assert result["target"] == target
    phases = [s["phase"] for s in result["samples"]]
    assert phases[0] == "start"
    assert {"warm", "connections", "mixed", "end"} <= set(phases)
    assert result["requests"]["warm-up"] + result["requests"]["connections"] == 500
    assert result["failed"] == 0, result["failure_notes"]
    assert result["fds_leaked"] <= 0
    assert result["max_zombies"] == 0
    assert result["tracebacks"] == 0
    assert result["alive_at_end"]
