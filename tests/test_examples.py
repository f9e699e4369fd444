"""The README's quick start, run as a user runs it (less the install step, which CI has just done)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import notebook_deploy as nd

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_quickstart_runs_the_notebook_serves_and_shows_a_prediction(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NOTEBOOK_DEPLOY_HOME": str(tmp_path / "store")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    bundle = nd.Store(tmp_path / "store").get("iris")
    assert f"Captured {bundle.ref}" in result.stdout
    assert '-> 200 {"predictions":[2,1]}' in result.stdout
    assert bundle.manifest["provenance"]["kind"] == "interactive"
