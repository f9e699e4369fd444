"""The notebook-deploy command line, through click's runner and as a real process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from cli_server import cli_server
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_versions(store, iris):
    X, y = iris
    old = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="iris", sample=X[:3], store=store)
    new = nd.capture(LogisticRegression(max_iter=500, C=0.05).fit(X, y), name="iris", sample=X[:3], store=store)
    return old, new


def run(store, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["--store", str(store.root), *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_list_says_how_to_start_when_empty(store):
    assert "Capture one in Python: notebook_deploy.capture(model, sample=X[:5])" in run(store, "list").output


def test_list_show_and_lock(store, two_versions):
    old, new = two_versions
    listing = run(store, "list").output.splitlines()
    assert listing[0].split() == ["NAME", "VERSION", "TAGS", "CREATED", "MODEL", "SIZE"]
    assert [line.split()[1] for line in listing[1:]] == [old.version, new.version]
    assert "latest" in listing[2] and "latest" not in listing[1]
    shown = run(store, "show", "iris").output
    assert f"Bundle iris:{new.version}" in shown and "LogisticRegression" in shown and "tags      latest" in shown
    assert json.loads(run(store, "show", "iris", "--json").output)["version"] == new.version
    assert run(store, "show", "iris", "--lock").output.splitlines() == new.lock()


def test_tag_rollback_and_remove(store, two_versions):
    old, new = two_versions
    assert run(store, "tag", f"iris:{old.version[:6]}", "prod").output.strip() == f"iris:prod -> {old.version}"
    run(store, "tag", f"iris:{old.version}", "latest")  # rollback
    assert store.get("iris").version == old.version
    run(store, "tag", "iris", "prod", "--remove")
    assert "prod" not in store.tags("iris")
    assert store.tags("iris")["latest"] == old.version


def test_rm_one_version_then_all(store, two_versions):
    old, new = two_versions
    assert run(store, "rm", f"iris:{new.version}").output.strip() == f"Deleted iris:{new.version}"
    assert store.get("iris").version == old.version
    run(store, "rm", "iris", "--all")
    assert store.names() == []


def test_export_then_import_into_another_store(store, two_versions, tmp_path):
    old, new = two_versions
    archive = run(store, "export", "iris", "-o", str(tmp_path)).output.strip()
    assert archive.endswith(f"iris-{new.version}.tar.gz")
    other = nd.Store(tmp_path / "other")
    assert run(other, "import", archive).output.strip() == f"Imported iris:{new.version}"
    assert other.get("iris").version == new.version


def test_errors_are_one_line_and_exit_1(store, two_versions):
    for args, message in [
        (("show", "nothing"), "no bundle named 'nothing'"),
        (("show", "iris:nosuchtag"), "'iris' has no tag or version 'nosuchtag'"),
        (("show", "Bad Name"), "is not a valid bundle name"),
        (("tag", "iris", "0123456789ab"), "is not a valid tag"),
    ]:
        result = run(store, *args, ok=False)
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and message in result.output
        assert "Traceback" not in result.output


def test_a_tampered_bundle_is_refused_naming_the_file(store, two_versions):
    old, new = two_versions
    model = new.path / "model.pkl"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    result = run(store, "show", "iris", ok=False)
    assert result.exit_code == 1 and "model.pkl" in result.output and "changed or truncated" in result.output


@pytest.mark.parametrize(
    "command",
    [
        "list",
        "show",
        "serve",
        "tag",
        "rm",
        "export",
        "import",
        "deploy",
        "verify",
        "recipe",
        "push",
        "build",
        "containerize",
        "verify-image",
    ],
)
def test_every_command_help_teaches_by_example(store, command):
    output = run(store, command, "--help").output
    assert "Example" in output and f"notebook-deploy {command}" in output


@pytest.mark.integration
def test_serve_command_answers_over_http(store, two_versions, tmp_path):
    old, new = two_versions
    with cli_server(store.root, "iris") as served:
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        answer = requests.post(served.url + "/predict", json={"instances": rows}).json()
        assert answer == {"predictions": new.predict(np.array(rows)).tolist()}
    assert f"Serving iris:{new.version} at {served.url}" in served.stderr


def test_recipe_previews_the_cells_of_a_saved_notebook(store, tmp_path):
    import nbformat

    notebook = nbformat.read(ROOT / "example_notebooks" / "pandas_pipeline.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for count, cell in enumerate(code, start=1):  # as if run top to bottom
        cell.execution_count = count
    nbformat.write(notebook, tmp_path / "saved.ipynb")
    output = run(store, "recipe", str(tmp_path / "saved.ipynb"), "--model", "churn_model").output
    kept = [int(line[1:-1]) for line in output.splitlines() if line.startswith("[")]
    assert kept == [2, 3, 6, 7, 8]  # not describe (4), value_counts (5), predict_proba (9), %load_ext, %deploy
    assert "data: data/customers.csv (missing)" in output  # the data folder was not copied along
    failed = run(store, "recipe", str(tmp_path / "saved.ipynb"), "--model", "nothing", ok=False)
    assert failed.exit_code == 1 and "'nothing' is never assigned" in failed.output


def test_list_shows_a_damaged_version_with_the_reason_and_the_rest(store, two_versions):
    old, new = two_versions
    (old.path / "bundle.json").write_text("{cut sho")
    result = CliRunner().invoke(cli, ["--store", str(store.root), "list"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows == [["iris", new.version, "latest", *rows[0][3:]], ["iris", old.version, "DAMAGED"]]
    assert f"DAMAGED iris:{old.version}: " in result.stderr and "is not valid JSON" in result.stderr
