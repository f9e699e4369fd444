"""Static checks, run with the tests so that CI runs them: ruff's lint rules and its formatting, with the
settings in pyproject.toml (``[tool.ruff]``), over the package, the tests, the benchmarks and the scripts;
and mypy's type check of the package, with the settings in pyproject.toml (``[tool.mypy]``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
CHECKED = ["notebook_deploy", "tests", "benchmarks", "examples", "scripts"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check", "--diff"]], ids=["lint", "format"])
def test_ruff_passes(command: list[str]) -> None:
    found = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *CHECKED], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert found.returncode == 0, (found.stdout + found.stderr)[-5000:]


def test_ruff_finds_what_it_is_set_to_find(tmp_path: Path) -> None:
    """The check can fail: an unused import and an unsorted import block in a file under its settings."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n")
    found = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 1 and "F401" in found.stdout and "I001" in found.stdout


def test_mypy_passes() -> None:
    found = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert found.returncode == 0, (found.stdout + found.stderr)[-5000:]


def test_mypy_finds_what_it_is_set_to_find(tmp_path: Path) -> None:
    """The check can fail: a wrong return type and an unannotated parameter, under the project's settings."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int) -> str:\n    return x\n\n\ndef g(y, z: int) -> None:\n    pass\n")
    found = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert found.returncode == 1, found.stdout + found.stderr
    assert "[return-value]" in found.stdout and "[no-untyped-def]" in found.stdout, found.stdout
