"""The example notebooks in real kernels: %deploy, verify, deploy_notebook and the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel

import notebook_deploy as nd
from notebook_deploy.signing import SIGNING_KEY_VARIABLE, TRUST_DIR_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_notebooks"

pytestmark = pytest.mark.integration


class Kernel:
    """A real IPython kernel that runs cells one at a time, as a person does in JupyterLab."""

    def __init__(self, cwd: Path, store: Path) -> None:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "NOTEBOOK_DEPLOY_HOME": str(store),
            # the session's signing key and trust store (conftest), so servers this process starts trust
            # what the kernel captured
            **{k: os.environ[k] for k in (SIGNING_KEY_VARIABLE, TRUST_DIR_VARIABLE) if k in os.environ},
        }
        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)

    def run(self, source: str) -> str:
        """Execute one cell; return what it printed and displayed, and raise on an error."""
        text: list[str] = []

        def collect(message: dict) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                text.append(content["text"])
            elif message["msg_type"] in ("execute_result", "display_data"):
                text.append(content["data"].get("text/plain", ""))
            elif message["msg_type"] == "error":
                text.append(f"{content['ename']}: {content['evalue']}")

        reply = self.client.execute_interactive(source, output_hook=collect, timeout=300)
        output = "".join(text)
        if reply["content"]["status"] != "ok":
            raise AssertionError(f"cell failed: {source!r}\n{output}")
        return output

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def workspace(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "notebooks")
    return tmp_path / "notebooks", nd.Store(tmp_path / "store")


@pytest.fixture
def kernel(workspace):
    folder, store = workspace
    running = Kernel(folder, store.root)
    yield running
    running.close()


def code_cells(name: str) -> list[str]:
    return [c.source for c in nbformat.read(EXAMPLES / name, as_version=4).cells if c.cell_type == "code"]


def captured(output: str, store: nd.Store) -> nd.Bundle:
    match = re.search(r"Captured (\S+:[0-9a-f]{12})", output)
    assert match, output
    return store.get(match.group(1))


def with_recipe_cell(bundle: nd.Bundle, copy: Path, index: int, source: str) -> nd.Bundle:
    """A copy of ``bundle`` at ``copy`` whose recipe cell ``index`` reads ``source``, resealed."""
    from notebook_deploy.bundle import seal_manifest

    shutil.copytree(bundle.path, copy)
    notebook = nbformat.read(copy / "recipe.ipynb", as_version=4)
    notebook.cells[index].source = source
    nbformat.write(notebook, copy / "recipe.ipynb")
    seal_manifest(copy, {k: v for k, v in bundle.manifest.items() if k != "files"})
    return nd.Bundle.open(copy)


@pytest.mark.parametrize("notebook", ["pandas_pipeline.ipynb", "custom_model.ipynb"])
def test_deploy_in_a_kernel_then_verify(kernel, workspace, notebook):
    folder, store = workspace
    *cells, deploy = code_cells(notebook)
    for cell in cells:
        kernel.run(cell)
    bundle = captured(kernel.run(deploy), store)
    recipe = bundle.manifest["recipe"]
    assert recipe["executions"], recipe
    report = nd.verify(bundle)
    assert report.reproducible, str(report)


def test_the_pandas_recipe_leaves_exploration_out(kernel, workspace):
    folder, store = workspace
    cells = code_cells("pandas_pipeline.ipynb")
    for cell in cells[:-1]:
        kernel.run(cell)
    output = kernel.run(cells[-1])
    bundle = captured(output, store)
    kept = nbformat.read(bundle.path / "recipe.ipynb", as_version=4).cells
    sources = "\n".join(c.source for c in kept)
    assert "describe()" not in sources and "value_counts" not in sources and "predict_proba" not in sources
    assert 'pd.read_csv("data/customers.csv")' in sources and "churn_model.fit" in sources
    assert bundle.manifest["recipe"]["files"][0]["path"] == "data/customers.csv"
    assert re.search(r"sample    the first rows of X_train, passed to churn_model.fit in cell \[\d+\]", output), output
    assert "loaded at execution" not in output  # the notebook loads the extension in its first cell


def test_loading_the_extension_late_is_named_in_a_warning(kernel, workspace):
    kernel.run("import numpy as np\nfrom sklearn.linear_model import LinearRegression")
    kernel.run("X = np.arange(10.0).reshape(5, 2); model = LinearRegression().fit(X, X[:, 0])")
    kernel.run("%load_ext notebook_deploy")
    output = kernel.run("%deploy model --name late --sample X")
    assert "notebook_deploy was loaded at execution 3" in output


def test_out_of_order_refit_is_what_the_recipe_rebuilds(kernel, workspace):
    """Run top to bottom, then change C and re-run only the fit cell: the recipe follows the kernel."""
    folder, store = workspace
    load, data, tuning, fit, deploy = code_cells("out_of_order.ipynb")
    for cell in (load, data, tuning, fit):
        kernel.run(cell)
    kernel.run("C = 0.05")
    kernel.run(fit)
    bundle = captured(kernel.run(deploy), store)
    kept = [c.source for c in nbformat.read(bundle.path / "recipe.ipynb", as_version=4).cells]
    assert kept == [data, "C = 0.05", fit]
    assert bundle.manifest["recipe"]["executions"] == [2, 5, 6]
    assert nd.verify(bundle).reproducible

    report = nd.verify(with_recipe_cell(bundle, folder / "edited", 1, "C = 1.0"))
    assert not report.reproducible
    assert re.match(r"predict(_proba|_log_proba)?, row \d+", report.summary) or "decision_function" in report.summary


def test_a_notebook_with_a_cloud_key_is_refused_naming_the_cell(kernel, workspace):
    folder, store = workspace
    kernel.run("%load_ext notebook_deploy")
    kernel.run("import numpy as np")
    kernel.run(
        'AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\nAWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"'
    )
    kernel.run("def model(rows):\n    print(AWS_ACCESS_KEY_ID)\n    return np.asarray(rows).sum(axis=1)")
    output = kernel.run("%deploy model --sample '[[1.0, 2.0]]'")
    assert "cell [3]" in output and "AWS" in output and "allow" in output.lower()
    assert store.list() == []
    assert "Captured" in kernel.run("%deploy model --sample '[[1.0, 2.0]]' --allow-secrets")


def test_deploy_notebook_runs_it_headless(workspace):
    folder, store = workspace
    bundle = nd.deploy_notebook(folder / "custom_model.ipynb", "centroids", sample="X[:5]", store=store)
    assert bundle.manifest["model"]["type"] == "__main__.CentroidClassifier"
    assert bundle.manifest["recipe"]["source"]["kind"] == "kernel"
    assert nd.verify(bundle).reproducible


def test_cli_deploy_and_verify(workspace):
    folder, store = workspace
    run = [sys.executable, "-m", "notebook_deploy", "--store", str(store.root)]
    deployed = subprocess.run(
        [*run, "deploy", str(folder / "out_of_order.ipynb"), "--model", "clf", "--name", "cancer"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "Captured cancer:" in deployed.stdout and "recipe" in deployed.stdout
    verified = subprocess.run([*run, "verify", "cancer"], capture_output=True, text=True, timeout=600)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "reproducible" in verified.stdout


def test_deploy_serve_answers_from_the_kernel(kernel, workspace):
    folder, store = workspace
    load, data, tuning, fit, deploy = code_cells("out_of_order.ipynb")
    for cell in (load, data, tuning, fit):
        kernel.run(cell)
    output = kernel.run("server = %deploy clf --sample X[:5] --serve")
    assert "Captured clf:" in output
    answer = kernel.run(
        "import requests\nrequests.post(server.url + '/predict', json={'instances': X[:2].tolist()}).json()"
    )
    assert answer.strip() == repr({"predictions": [0, 0]})
    kernel.run("server.stop()")
