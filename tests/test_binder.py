"""The Binder configuration (binder/): its setup steps, run in a fresh virtual environment, leave the
JupyterLab extension and the server extension enabled, the quickstart notebook open and a bundle in the
store; and repo2docker accepts the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from venvs import tool_venv

import notebook_deploy as nd

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
# Lines of binder/requirements.txt that need the PyTorch CPU index, which CI cannot reach (PyPI and npm
# only). Nothing but pytorch_model.ipynb needs torch, so the extensions are checked without it.
UNREACHABLE = {"--extra-index-url https://download.pytorch.org/whl/cpu", "torch"}

pytestmark = pytest.mark.integration


def repository_copy(target: Path) -> Path:
    """The repository as Binder gets it: the files git knows (new ones not ignored included), plus the
    JupyterLab extension already built, so that `pip install .` does not build it again with node (the
    labextension's own tests build it)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    built = ROOT / "notebook_deploy" / "labextension"
    if built.is_dir():
        shutil.copytree(built, target / "notebook_deploy" / "labextension")
    return target


@pytest.fixture(scope="module")
def binder(tmp_path_factory):
    """Binder's steps in a fresh venv: binder/requirements.txt, then binder/postBuild in the repository's
    folder. Yields the repository copy and the environment the steps ran with."""
    work = tmp_path_factory.mktemp("binder")
    repo = repository_copy(work / "repo")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "VIRTUAL_ENV": str(venv),
        "HOME": str(work / "home"),
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
    }
    lines = [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#") and line not in UNREACHABLE]
    if requirements:
        subprocess.run(["python", "-m", "pip", "install", "-q", *requirements], cwd=repo, env=env, check=True)
    built = subprocess.run(["binder/postBuild"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return repo, env


def jupyter(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(["jupyter", *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # without the colours


def test_the_binder_files_follow_repo2dockers_conventions():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = (BINDER / "postBuild").read_text()
    assert os.access(BINDER / "postBuild", os.X_OK) and post_build.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in post_build and 'pip install ".[examples]"' in post_build


@pytest.fixture(params=["binder", "project"])
def installed(request) -> dict[str, str]:
    """The environment of an install: the Binder venv, or this project's venv, which the README's test
    command installed (``pip install -e ".[test]"``)."""
    if request.param == "binder":
        return request.getfixturevalue("binder")[1]
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_the_lab_extension_is_enabled(installed):
    assert re.search(r"notebook-deploy v\S+ enabled\s+OK", jupyter(installed, "labextension", "list"))


def test_the_server_extension_is_enabled(installed):
    listed = jupyter(installed, "server", "extension", "list")
    assert re.search(r"notebook_deploy\.jupyter\.server\s+enabled", listed), listed
    assert re.search(r"notebook_deploy\.jupyter\.server \S+ OK", listed), listed


def test_the_quickstart_opens_beside_the_sidebar_with_a_bundle_in_the_store(binder):
    _, env = binder
    exported = jupyter(env, "lab", "workspaces", "export", "default")
    assert '"notebook:example_notebooks/quickstart.ipynb"' in exported and '"notebook-deploy-sidebar"' in exported
    bundle = nd.Store(Path(env["HOME"]) / ".notebook_deploy").get("iris")
    assert bundle.manifest["model"]["type"].endswith("RandomForestClassifier")


def test_repo2docker_accepts_the_repository(binder):
    repo, _ = binder
    repo2docker = tool_venv("repo2docker-2026.4.0", "jupyter-repo2docker==2026.4.0") / "bin" / "repo2docker"
    result = subprocess.run(
        [str(repo2docker), "--no-build", "--debug", str(repo)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Building conda environment for python=3.11" in output
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in output
    assert "RUN ./binder/postBuild" in output
