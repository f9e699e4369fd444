"""Every notebook in example_notebooks/, run top to bottom in a fresh kernel with nbclient (as a reader
runs it, in a copy of the folder, with a store of its own), and what its outputs must show."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest
import requests
from images import push_test_base
from registries import Registry as RealRegistry

import notebook_deploy as nd
from notebook_deploy.image.registry import OCI_MANIFEST, Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_notebooks"
NOTEBOOKS = sorted(path.name for path in EXAMPLES.glob("*.ipynb"))
REQUIRED = {
    "quickstart.ipynb",
    "pandas_pipeline.ipynb",
    "custom_model.ipynb",
    "drift_monitoring.ipynb",
    "pytorch_model.ipynb",
    "push_to_registry.ipynb",
    "foundation_models.ipynb",
}
# Notebooks another test file already runs top to bottom in a real kernel, with checks of its own:
# not run a second time here.
RUN_ELSEWHERE = {
    "quickstart.ipynb": "tests/test_examples.py",  # through examples/quickstart.py, the README's quick start
    "pandas_pipeline.ipynb": "tests/test_notebooks.py",  # cell by cell, then %deploy and verify
    "custom_model.ipynb": "tests/test_notebooks.py",
    "out_of_order.ipynb": "tests/test_notebooks.py",
}

pytestmark = pytest.mark.integration


def test_the_examples_include_every_required_kind():
    assert REQUIRED <= set(NOTEBOOKS)
    for name, test_file in RUN_ELSEWHERE.items():
        assert name.removesuffix(".ipynb") in (ROOT / test_file).read_text(), (name, test_file)


@pytest.fixture
def registry(tmp_path):
    """A real registry on loopback with a small base image (no Python in it: enough for a push)."""
    with RealRegistry("none", tmp_path / "registry") as real:
        yield real, push_test_base(Registry(real.host, scheme="http", credentials=None), tmp_path)


def execute(name: str, folder: Path, env: dict[str, str]) -> str:
    """Run a copy of notebook ``name`` in ``folder``; return the text of every output, in order."""
    shutil.copytree(EXAMPLES, folder)
    notebook = nbformat.read(folder / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(folder)}}
    )
    client.execute(env={**os.environ, **env})
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(
                output["text"] if output["output_type"] == "stream" else output.get("data", {}).get("text/plain", "")
            )
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                texts.append("<widget>")
    return "\n".join(texts)


def check_drift(output: str, store: nd.Store, registry: Any) -> None:
    assert re.findall(r"drifted features: (.*)", output) == ["[]", "['income', 'region']"], output
    assert re.search(r"income\s+numeric\s+\S+\s+\S+\s+True", output) and re.search(
        r"age\s+numeric\s+\S+\s+\S+\s+False", output
    )
    assert store.get("loans").manifest["reference"]["rows"] == 5000


def check_pytorch(output: str, store: nd.Store, registry: Any) -> None:
    assert "served equals in-process: True" in output, output
    bundle = store.get("parabola")
    assert bundle.manifest["model"]["type"] == "__main__.Classifier" and bundle.methods == ["predict"]
    assert any(line.startswith("torch==") for line in bundle.lock())


def check_push(output: str, store: nd.Store, registry: Any) -> None:
    real, _ = registry
    digest = re.search(rf"Pushed {re.escape(real.host)}/examples/iris-logistic:1@(sha256:[0-9a-f]{{64}})", output)
    assert digest, output
    assert output.count("<widget>") >= 4  # a progress bar per layer: base, packages, runtime, bundle
    tags = requests.get(f"{real.url}/v2/examples/iris-logistic/tags/list", timeout=10).json()["tags"]
    assert [t for t in tags if not t.startswith("sha256-")] == ["1"]  # and the SBOM's, provenance's, signature's
    manifest = requests.head(
        f"{real.url}/v2/examples/iris-logistic/manifests/1", headers={"Accept": OCI_MANIFEST}, timeout=10
    )
    assert manifest.headers["Docker-Content-Digest"] == digest.group(1)


def check_foundation(output: str, store: nd.Store, registry: Any) -> None:
    assert output.count("served equals in-process: True") == 2, output  # the classifier, the OpenAI client's
    assert re.search(r"\d+ pieces: \[", output), output
    for name in ("reviews", "story"):
        bundle = store.get(name)
        # standard pipelines: stored in transformers' own format, its weights as safetensors, no pickle
        assert bundle.manifest["serialization"]["format"] == "transformers-pipeline"
        assert (bundle.path / "pretrained.model.safetensors").is_file() and not (bundle.path / "model.pkl").exists()
        assert {"torch", "transformers", "tokenizers"} <= {line.split("==")[0] for line in bundle.lock()}


CHECKS: dict[str, Callable[[str, nd.Store, Any], None]] = {
    "foundation_models.ipynb": check_foundation,
    "drift_monitoring.ipynb": check_drift,
    "pytorch_model.ipynb": check_pytorch,
    "push_to_registry.ipynb": check_push,
}


@pytest.mark.parametrize("name", [name for name in NOTEBOOKS if name not in RUN_ELSEWHERE])
def test_example_notebook_runs_top_to_bottom(name, tmp_path, request):
    env = {"NOTEBOOK_DEPLOY_HOME": str(tmp_path / "store")}
    registry = None
    if name == "push_to_registry.ipynb":
        registry = request.getfixturevalue("registry")
        env |= {"NOTEBOOK_DEPLOY_EXAMPLE_REGISTRY": registry[0].host, "NOTEBOOK_DEPLOY_EXAMPLE_BASE": registry[1]}
    output = execute(name, tmp_path / "notebooks", env)
    check = CHECKS.get(name)
    if check is not None:
        check(output, nd.Store(tmp_path / "store"), registry)
