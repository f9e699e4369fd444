"""Test helper: virtual environments of their own for tools whose pins do not fit beside the test
environment's, cached in ~/.cache/notebook-deploy-tests/ and remade when their requirements change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CACHE = Path.home() / ".cache" / "notebook-deploy-tests"


def tool_venv(name: str, *requirements: str) -> Path:
    """The folder of venv ``name`` with ``requirements`` installed (installed once, then reused)."""
    venv = CACHE / name
    installed = venv / "installed.txt"
    if not installed.exists() or installed.read_text() != " ".join(requirements):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements], check=True)
        installed.write_text(" ".join(requirements))
    return venv
