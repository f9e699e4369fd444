"""The acceptance run: `pip install .` in a fresh virtual environment, then capture and serve three models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("fresh")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(ROOT), "scikit-learn", "pandas", "boto3"], check=True)
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(ROOT / "tests" / "scripts" / "three_models.py")],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "NOTEBOOK_DEPLOY_HOME": str(work / "store")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", ["boosting", "customers", "centroids"])
def test_http_predictions_equal_in_process(report, name):
    assert report[name]["http"] == report[name]["in_process"]
    assert report[name]["client_equal"]


def test_the_notebook_class_was_captured_from_main(report):
    assert report["centroids"]["type"] == "__main__.NearestCentroid"


@pytest.mark.parametrize("name, needs_pandas", [("boosting", False), ("customers", True), ("centroids", False)])
def test_locks_pin_installed_versions_and_nothing_unrelated(report, name, needs_pandas):
    lock = dict(line.split("==") for line in report[name]["lock"])
    installed = report["installed"]
    required = ["numpy"] + (["scikit-learn", "scipy"] if name != "centroids" else [])
    for dist in required + (["pandas"] if needs_pandas else []):
        assert lock[dist] == installed[dist], (dist, lock)
    assert ("pandas" in lock) == needs_pandas
    assert not {"boto3", "botocore", "requests", "notebook-deploy", "fastapi", "uvicorn"} & set(lock)
