"""Recipes: built from a history, stored in the bundle, replayed by verify."""

from __future__ import annotations

import re
import shutil

import nbformat
import pytest
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.bundle import seal_manifest
from notebook_deploy.capturing.recipe import History, build_recipe, history_from_notebook

SOURCES = [
    "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
    'frame = pd.read_csv("train.csv")',
    "frame.describe()",
    'model = LogisticRegression(C=0.5).fit(frame[["a", "b"]], frame["y"])',
    'model.score(frame[["a", "b"]], frame["y"])',
]


@pytest.fixture
def training(tmp_path):
    """A data file, the model those cells build from it, and the history that built it."""
    rows = [(i % 7, (i * 3) % 5, int(i % 7 > 3)) for i in range(60)]
    (tmp_path / "train.csv").write_text("a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    import pandas as pd

    frame = pd.read_csv(tmp_path / "train.csv")
    model = LogisticRegression(C=0.5).fit(frame[["a", "b"]], frame["y"])
    history = History(sources=list(SOURCES), counts=[1, 2, 3, 4, 5], workdir=str(tmp_path))
    return model, frame[["a", "b"]], history


def test_build_recipe_keeps_what_builds_the_model_and_hashes_its_data(training):
    model, X, history = training
    recipe = build_recipe(history, "model")
    assert recipe.counts == [1, 2, 4]
    [data] = recipe.files
    assert data.path == "train.csv" and data.size > 0 and len(data.sha256) == 64


def test_the_recipe_notebook_is_valid_and_the_same_bytes_each_time(training):
    model, X, history = training
    history.failed = {4}
    recipe = build_recipe(history, "model")
    first, second = (nbformat.writes(build_recipe(history, "model").to_notebook()) for _ in range(2))
    assert first == second
    notebook = recipe.to_notebook()
    assert [c.source for c in notebook.cells] == [SOURCES[0], SOURCES[1], SOURCES[3]]
    assert notebook.cells[2].metadata["tags"] == ["raises-exception"]


def test_capture_with_a_history_stores_the_recipe(training, store):
    model, X, history = training
    bundle = nd.capture(model, name="lr", sample=X, history=history, variable="model", include_data=True, store=store)
    recipe = bundle.manifest["recipe"]
    assert recipe["target"] == "model" and recipe["executions"] == [1, 2, 4]
    assert recipe["files"][0]["included"] is True
    notebook = nbformat.read(bundle.path / "recipe.ipynb", as_version=4)
    assert len(notebook.cells) == 3
    assert bundle.recipe() == {**recipe, "cells": [{"source": SOURCES[i], "execution_count": i + 1} for i in (0, 1, 3)]}
    stored = [f for f in bundle.manifest["files"] if f.startswith("data-")]
    assert len(stored) == 1 and stored[0].endswith("-train.csv")
    bundle.check_integrity()


def test_a_history_without_the_variable_refuses_the_capture(training, store):
    model, X, history = training
    with pytest.raises(nd.CaptureError, match="no recipe for 'clf'"):
        nd.capture(model, name="lr", sample=X, history=history, variable="clf", store=store)


def test_history_from_a_saved_notebook_follows_execution_counts_and_warns(tmp_path):
    cells = [
        nbformat.v4.new_code_cell("import numpy as np", execution_count=1),
        nbformat.v4.new_code_cell("x = np.arange(3)", execution_count=5),
        nbformat.v4.new_code_cell("y = x * 2", execution_count=3),
        nbformat.v4.new_code_cell("never_ran = 1"),
        nbformat.v4.new_code_cell(
            "1 / 0",
            execution_count=6,
            outputs=[
                nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])
            ],
        ),
    ]
    path = tmp_path / "n.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    history = history_from_notebook(path)
    assert history.sources == ["import numpy as np", "y = x * 2", "x = np.arange(3)", "1 / 0"]
    assert history.counts == [1, 3, 5, 6] and history.failed == {6}
    text = " ".join(history.warnings)
    assert "1 code cell(s)" in text and "executions 2, 4 are not in the saved notebook" in text
    assert "out of their order" in text


@pytest.mark.integration
def test_verify_replays_the_recipe_and_finds_a_changed_one(training, store, tmp_path):
    model, X, history = training
    bundle = nd.capture(model, name="lr", sample=X, history=history, variable="model", include_data=True, store=store)
    shutil.move(tmp_path / "train.csv", tmp_path / "moved.csv")  # the bundle's copy must be used

    report = nd.verify(bundle)
    assert report.reproducible, str(report)
    assert "stored outputs of predict, predict_proba" in report.summary

    edited = tmp_path / "edited"
    shutil.copytree(bundle.path, edited)
    notebook = nbformat.read(edited / "recipe.ipynb", as_version=4)
    notebook.cells[2].source = notebook.cells[2].source.replace("C=0.5", "C=0.001")
    nbformat.write(notebook, edited / "recipe.ipynb")
    manifest = seal_manifest(edited, {k: v for k, v in bundle.manifest.items() if k != "files"})
    changed = nd.verify(nd.Bundle.open(edited))
    assert not changed.reproducible
    assert re.match(r"predict(_proba|_log_proba)?, row \d+: expected ", changed.summary), changed.summary
    assert manifest["version"] != bundle.version


@pytest.mark.integration
def test_verify_names_the_cell_that_fails_and_missing_data(training, store, tmp_path):
    model, X, history = training
    bundle = nd.capture(model, name="lr", sample=X, history=history, variable="model", store=store)
    (tmp_path / "train.csv").write_text("a,b,y\n1,2,0\n")
    assert "changed since capture" in nd.verify(bundle).summary
    (tmp_path / "train.csv").unlink()
    assert "is not available" in nd.verify(bundle).summary


@pytest.mark.integration
def test_verify_in_a_fresh_environment_built_from_the_lock(training, store):
    model, X, history = training
    bundle = nd.capture(model, name="lr", sample=X, history=history, variable="model", include_data=True, store=store)
    steps = []
    report = nd.verify(bundle, fresh_env=True, progress=steps.append)
    assert report.reproducible, str(report)
    assert report.environment == "a fresh virtual environment built from the locks"
    assert steps[0] == "creating a virtual environment from requirements.txt and recipe-requirements.txt"


def test_the_recipe_records_what_its_cells_import_beyond_the_lock():
    from notebook_deploy.capturing.packages import replay_requirements
    from notebook_deploy.capturing.recipe import imported_modules

    cells = [
        "import numpy as np, os.path\nfrom patsy import dmatrix",
        "%matplotlib inline",
        "from . import local",
        "def f():\n    import json",
    ]
    assert imported_modules(cells) == {"numpy", "os", "patsy", "matplotlib", "json"}
    import patsy

    required = replay_requirements({"numpy", "os", "patsy", "json", "a_notebook_helper"}, {"numpy": "1"})
    assert f"patsy=={patsy.__version__}" in required  # pinned as installed
    assert not any(line.lower().startswith("numpy==") for line in required)  # the lock pins it already


@pytest.mark.integration
def test_fresh_env_installs_the_recipes_own_requirements_and_reuses_a_kept_environment(tmp_path, store):
    """patsy builds the features but the model never loads it: it is not in the model's lock, only in the
    recipe's, and the replay in a fresh environment needs it."""
    import numpy as np
    from patsy import dmatrix

    frame = {"a": np.arange(30.0) % 7, "b": np.arange(30.0) % 5}
    features = np.asarray(dmatrix("a + b + a:b - 1", frame))
    model = LogisticRegression().fit(features, (frame["a"] > 3).astype(int))
    sources = [
        "import numpy as np\nfrom patsy import dmatrix\nfrom sklearn.linear_model import LogisticRegression",
        'frame = {"a": np.arange(30.0) % 7, "b": np.arange(30.0) % 5}',
        'features = np.asarray(dmatrix("a + b + a:b - 1", frame))',
        'model = LogisticRegression().fit(features, (frame["a"] > 3).astype(int))',
    ]
    history = History(sources=sources, counts=[1, 2, 3, 4], workdir=str(tmp_path))
    bundle = nd.capture(model, name="patsy", sample=features[:4], history=history, variable="model", store=store)
    assert not any(line.lower().startswith("patsy") for line in bundle.lock())
    assert any(line.startswith("patsy==") for line in bundle.manifest["recipe"]["requirements"])
    assert "patsy==" in (bundle.path / "recipe-requirements.txt").read_text()
    kept = tmp_path / "environments"
    steps: list[str] = []
    first = nd.verify(bundle, fresh_env=True, environments=kept, progress=steps.append)
    assert first.reproducible, str(first)
    assert steps[0].startswith("creating a virtual environment")
    [environment] = [p for p in kept.iterdir() if not p.name.startswith(".")]
    steps.clear()
    second = nd.verify(bundle, fresh_env=True, environments=kept, progress=steps.append)
    assert second.reproducible, str(second)
    assert steps[0] == f"using the environment {environment}, built earlier for the same pins"
