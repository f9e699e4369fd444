"""Test helper: run ``jlpm`` (the yarn that comes with JupyterLab) in labextension/ with this venv first on
PATH, so that ``jupyter``, ``jlpm`` and ``python`` are the venv's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"


def venv_env(**extra: str) -> dict[str, str]:
    """This environment, with the venv's ``jupyter``/``jlpm``/``python`` first on PATH, plus ``extra``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def jlpm(
    args: list[str], cwd: Path = LABEXTENSION, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``jlpm ARGS`` in ``cwd``; the caller checks the return code and shows the output."""
    env = env or venv_env()
    found = shutil.which("jlpm", path=env["PATH"])
    if found is None:
        pytest.fail("jlpm is missing: it comes with jupyterlab (jupyter-builder); pip install -e '.[test]'")
    return subprocess.run(
        [found, *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def jlpm_install(folder: Path = LABEXTENSION, env: dict[str, str] | None = None) -> None:
    """``jlpm install`` in ``folder`` as its ``yarn.lock`` says (seconds when nothing changed)."""
    result = jlpm(["install"], folder, env)
    assert result.returncode == 0, f"jlpm install in {folder} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
