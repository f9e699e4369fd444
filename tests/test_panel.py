"""The notebook panel (notebook_deploy.panel): its buttons driven from Python, and in real kernels run
headless by nbclient with the widget state stored, as a browser would see it."""

from __future__ import annotations

import contextlib
import html
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
import requests
from images import push_test_base
from nbclient import NotebookClient
from registries import Registry as RealRegistry

import notebook_deploy as nd
from notebook_deploy.image.registry import Registry
from notebook_deploy.jupyter.panel import looks_like_data, looks_like_model
from notebook_deploy.tasks import CANCELLED, SUCCEEDED

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture
def panel(forest, iris):
    X, y = iris
    namespace = {"forest": forest, "X": X, "y": y, "np": np, "Forest": type(forest), "_hidden": forest}
    made = nd.panel(namespace)
    made.name_text.value = "iris"
    yield made
    made.wait(60)
    if made.server is not None:
        made.server.stop()


@pytest.fixture
def registry(tmp_path):
    with RealRegistry("none", tmp_path / "registry") as real:
        base = push_test_base(Registry(real.host, scheme="http", credentials=None), tmp_path)
        yield real, base


def test_import_stays_free_of_ipywidgets():
    def loaded(code: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", f"import sys, notebook_deploy as nd; {code}; print('ipywidgets' in sys.modules)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert loaded("pass") == "False" and loaded("nd.panel") == "True"


def test_models_and_samples_are_found_and_the_contract_holds(panel):
    assert panel.model_dropdown.options == ("forest",) and panel.model_dropdown.description == "Model"
    assert panel.sample_dropdown.options == ("X", "y") and panel.sample_dropdown.value == "X"
    assert panel.sample_dropdown.description == "Sample"
    assert "nd-panel" in panel._dom_classes and "nd-status" in panel.status._dom_classes
    assert "nd-response" in panel.response._dom_classes
    assert (panel.name_text.description, panel.image_text.description) == ("Name", "Image")
    buttons = [
        panel.capture_button,
        panel.serve_button,
        panel.stop_button,
        panel.send_button,
        panel.push_button,
        panel.cancel_button,
        panel.refresh_button,
    ]
    assert [b.description for b in buttons] == ["Capture", "Serve locally", "Stop", "Send", "Push", "Cancel", "Refresh"]
    assert panel.stop_button.disabled and panel.send_button.disabled and panel.cancel_button.disabled


def test_a_model_that_is_not_there_is_named(forest):
    made = nd.panel({"forest": forest}, model="clf")
    assert made.model_dropdown.value == "forest" and "'clf' is not a model variable" in made.status.value


def test_what_looks_like_a_model_or_data(forest):
    class Callable:
        def __call__(self, rows):
            return rows

    frame = pd.DataFrame({"a": [1.0]})
    assert looks_like_model(forest) and not looks_like_model(type(forest)) and not looks_like_model(np)
    assert not looks_like_model(print) and not looks_like_model(Callable()) and not looks_like_model(frame)
    assert looks_like_data(frame) and looks_like_data(np.zeros((2, 2))) and looks_like_data([[1.0]])
    assert not looks_like_data([]) and not looks_like_data(np.float64(1.0)) and not looks_like_data("text")


def test_refresh_finds_a_model_trained_later(iris):
    namespace = {"X": iris[0]}
    made = nd.panel(namespace)
    assert made.model_dropdown.value is None and "No model in the kernel yet" in made.status.value
    namespace["clf"] = nd.load  # a function: still no model
    made.refresh_button.click()
    assert made.model_dropdown.options == ()
    from sklearn.linear_model import LogisticRegression

    namespace["clf"] = LogisticRegression(max_iter=300).fit(*iris)
    made.refresh_button.click()
    assert made.model_dropdown.value == "clf" and made.name_text.value == "clf"
    assert "No model" not in made.status.value


def test_capture_makes_a_bundle_and_shows_packages_warnings_and_code(panel):
    started = time.monotonic()
    panel.capture_button.click()
    assert panel.busy and panel.capture_button.disabled
    assert panel.wait(300) and not panel.busy and not panel.capture_button.disabled
    print(f"capture took {time.monotonic() - started:.1f} s")
    bundle = nd.Store().get(f"iris:{panel.version_text.value}")
    assert bundle.name == "iris" and panel.bundle == bundle and panel.error is None
    assert f"captured <b>{bundle.ref}</b>" in panel.status.value
    assert "packages  " in panel.summary.value and "scikit-learn==" in panel.summary.value
    assert "warning " in panel.summary.value  # 5 sample rows are too few for drift statistics
    assert panel.code.value == 'import notebook_deploy as nd\nbundle = nd.capture(forest, name="iris", sample=X[:5])'
    assert repr(panel).startswith("notebook-deploy panel (model forest, sample X)") and bundle.ref in repr(panel)


def test_capture_without_a_sample_says_what_to_do(panel):
    panel.sample_dropdown.value = None
    panel.capture_button.click()
    assert not panel.busy and panel.bundle is None
    assert "Choose a Sample" in panel.status.value and "Traceback" not in panel.status.value


def test_capture_errors_from_the_core_are_shown_not_raised(panel):
    panel.name_text.value = "Not A Name!"
    panel.capture_button.click()
    assert panel.wait(60)
    assert panel.error.startswith("Capture failed: ") and "Traceback" not in panel.status.value
    assert not panel.capture_button.disabled


@pytest.mark.integration
def test_serve_send_and_stop(panel, forest, iris):
    panel.capture_button.click()
    assert panel.wait(300)
    started = time.monotonic()
    panel.serve_button.click()
    assert panel.wait(120), panel.status.value
    print(f"serve took {time.monotonic() - started:.1f} s")
    server = panel.server
    assert server is not None and server.running, panel.status.value
    assert "<b>running</b>" in panel.status.value and f"<a href='{server.url}/docs'" in panel.status.value
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert panel.code.value.endswith(f'server = nd.serve("{panel.ref}")\nserver.url')
    assert not panel.stop_button.disabled and not panel.send_button.disabled

    panel.request_box.value = '{"instances": ' + str(iris[0][:3].tolist()) + "}"
    panel.send_button.click()
    assert panel.wait(60)
    answer = panel.response.value.removeprefix("<pre style='white-space:pre-wrap;margin:0;'>").removesuffix("</pre>")
    assert answer == '{"predictions": ' + str(forest.predict(iris[0][:3]).tolist()) + "}"
    assert panel.http_status.value == "HTTP 200" and "server.post(\"predict\"" in panel.code.value
    assert "Uvicorn running" in panel.server_log.value or "Started" in panel.server_log.value
    (monitor,) = panel.monitor_box.children  # the running server's live charts
    assert monitor.monitor.server is server

    panel.request_box.value = "{not json"
    panel.send_button.click()
    assert "The request is not JSON" in panel.status.value

    panel.stop_button.click()
    assert panel.wait(60)
    assert not server.running and "<b>stopped</b>" in panel.status.value and panel.stop_button.disabled
    assert panel.code.value.endswith("server.stop()")


@pytest.mark.integration
def test_serve_an_unknown_version_says_so(panel):
    panel.version_text.value = "0000ffff"
    panel.serve_button.click()
    assert panel.wait(60)
    assert panel.server is None and panel.error.startswith("Serve failed: ")


@pytest.mark.integration
def test_push_shows_progress_per_layer_to_the_end(panel, registry):
    real, base = registry
    panel.capture_button.click()
    assert panel.wait(300)
    panel.image_text.value = f"{real.host}/models/iris:1"
    panel.backend_dropdown.value = "daemonless"
    panel.base_text.value = base
    started = time.monotonic()
    panel.push_button.click()
    assert panel.push_button.disabled
    assert panel.wait(600), panel.status.value
    print(f"push took {time.monotonic() - started:.1f} s")
    assert panel.task.state == SUCCEEDED, panel.status.value
    assert panel.progress.value == 1.0 and panel.progress.bar_style == "success"
    bars = panel.layer_bars.children
    assert len(bars) == len(panel.task.layers) > 1 and all(bar.value == 1.0 for bar in bars)
    assert f"push to {real.host}/models/iris:1: succeeded" in panel.status.value
    assert panel.code.value.endswith(
        f'nd.push("{panel.ref}", "{real.host}/models/iris:1", backend="daemonless", base="{base}")'
    )
    tags = requests.get(f"{real.url}/v2/models/iris/tags/list", timeout=10).json()
    assert [t for t in tags["tags"] if not t.startswith("sha256-")] == ["1"]  # and the SBOM's and provenance's


@pytest.mark.integration
def test_a_cancelled_push_says_so(panel, registry):
    real, base = registry
    panel.capture_button.click()
    assert panel.wait(300)
    panel.image_text.value, panel.backend_dropdown.value, panel.base_text.value = (
        f"{real.host}/models/iris:cancelled",
        "daemonless",
        base,
    )
    panel.push_button.click()
    deadline = time.monotonic() + 60
    while panel.cancel_button.disabled and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not panel.cancel_button.disabled
    panel.cancel_button.click()
    assert panel.wait(300)
    assert panel.task.state == CANCELLED and panel.progress.bar_style == "warning"
    assert ": cancelled" in panel.status.value and panel.cancel_button.disabled
    tags = requests.get(f"{real.url}/v2/models/iris/tags/list", timeout=10)
    assert tags.status_code == 404 or "cancelled" not in (tags.json().get("tags") or [])


def test_push_to_a_bad_reference_says_what_to_do(panel):
    panel.push_button.click()
    assert "Type the image to push to in Image" in panel.status.value
    panel.capture_button.click()
    assert panel.wait(300)
    panel.image_text.value = "Not A Reference"
    panel.push_button.click()
    assert panel.wait(60)
    assert panel.error.startswith("The push failed: ") and "Check the Image field" in panel.error
    assert "Traceback" not in panel.status.value and not panel.push_button.disabled


# -- real kernels, headless ------------------------------------------------------------------------
TRAIN = """\
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
clf = LogisticRegression(max_iter=500).fit(X, y)"""


def run_notebook(cells: list[str], cwd) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    NotebookClient(
        nb, kernel_name="python3", store_widget_state=True, timeout=600, resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def widgets_with_class(nb: nbformat.NotebookNode, css_class: str) -> list[dict]:
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    return [w["state"] for w in state.values() if css_class in w["state"].get("_dom_classes", [])]


def widget_named(nb: nbformat.NotebookNode, description: str) -> dict:
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    [found] = [w["state"] for w in state.values() if w["state"].get("description") == description]
    return found


@pytest.mark.integration
def test_the_panel_in_a_headless_kernel_keeps_its_widget_state(tmp_path):
    started = time.monotonic()
    nb = run_notebook(
        [
            TRAIN,
            "import notebook_deploy as nd\np = nd.panel()\np",
            "p.capture_button.click()\nassert p.wait(300), p.status.value\nassert p.error is None, p.error",
            "p.serve_button.click()\nassert p.wait(120), p.status.value\nassert p.error is None, p.error",
            "p.send_button.click()\nassert p.wait(60)\nprint(p.response.value)",
        ],
        tmp_path,
    )
    print(f"notebook took {time.monotonic() - started:.1f} s")
    outputs = nb.cells[1].outputs
    assert "application/vnd.jupyter.widget-view+json" in outputs[0]["data"]
    assert outputs[0]["data"]["text/plain"].startswith("notebook-deploy panel (model clf, sample X)")
    [bundle] = nd.Store().list()
    assert bundle.name == "clf"
    [root] = widgets_with_class(nb, "nd-panel")
    assert len(root["children"]) > 10
    [status] = widgets_with_class(nb, "nd-status")
    assert f"captured <b>{bundle.ref}</b>" in status["value"] and "<b>running</b>" in status["value"]
    assert "<a href='http://127.0.0.1:" in status["value"]
    [response] = widgets_with_class(nb, "nd-response")
    assert '{"predictions": [0, 0]}' in response["value"]
    assert widget_named(nb, "Model")["index"] == 0 and widget_named(nb, "Version")["value"] == bundle.version
    assert widget_named(nb, "Code")["value"].endswith(
        'server.post("predict", {"instances": [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2]]}).json()'
    )
    assert "scikit-learn==" in widgets_with_summary(nb)


def widgets_with_summary(nb: nbformat.NotebookNode) -> str:
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    [summary] = [w["state"]["value"] for w in state.values() if "Captured " in str(w["state"].get("value", ""))]
    return summary


@pytest.mark.integration
def test_deploy_panel_magic_captures_with_the_recipe(tmp_path):
    nb = run_notebook(
        [
            "%load_ext notebook_deploy",
            TRAIN,
            "X.shape",  # not part of the recipe
            "%deploy --panel clf",
            "p = _\np.capture_button.click()\nassert p.wait(300), p.status.value\nassert p.error is None, p.error",
            "%deploy",
        ],
        tmp_path,
    )
    assert "show the panel with %deploy --panel" in nb.cells[5].outputs[0]["text"]
    assert "application/vnd.jupyter.widget-view+json" in nb.cells[3].outputs[0]["data"]
    [bundle] = nd.Store().list()
    assert bundle.manifest["recipe"]["executions"] == [2]
    assert widget_named(nb, "Code")["value"].endswith("%deploy clf --name clf --sample X")
    assert "recipe    1 cell(s) kept: [2]" in widgets_with_summary(nb)
    assert len(widgets_with_class(nb, "nd-panel")) == 1


@contextlib.contextmanager
def served_panel(namespace: dict, store) -> Iterator[Any]:
    """A panel over ``namespace`` whose model is captured and served, its server stopped at the end."""
    made = nd.panel(namespace, store=store)
    try:
        made.capture_button.click()
        assert made.wait(300), made.status.value
        made.serve_button.click()
        assert made.wait(120), made.status.value
        yield made
    finally:
        made.wait(60)
        if made.server is not None:
            made.server.stop()


@pytest.mark.integration
def test_a_model_of_images_is_tested_with_files_picked_in_the_panel(tmp_path):
    pytest.importorskip("transformers")
    import io

    import tiny_models
    from PIL import Image

    vision = tiny_models.image_classifier()
    images = [Image.new("RGB", (32, 32), color) for color in ("red", "navy")]
    with served_panel({"vision": vision, "images": images}, tmp_path / "store") as made:
        assert made.upload.layout.display is None and made.request_box.value == '{"instances": []}'
        picked = Image.new("RGB", (32, 32), "green")
        png = io.BytesIO()
        picked.save(png, format="PNG")
        content = png.getvalue()
        made.upload.value = (
            {
                "name": "green.png",
                "type": "image/png",
                "size": len(content),
                "content": memoryview(content),
                "last_modified": datetime.now(timezone.utc),
            },
        )
        made.send_button.click()
        assert made.wait(60), made.status.value
        assert made.http_status.value == "HTTP 200", made.response.value
        expected = json.dumps({"predictions": [vision(Image.open(io.BytesIO(content)))]})
        assert html.unescape(made.response.value) == f"<pre style='white-space:pre-wrap;margin:0;'>{expected}</pre>"
        assert "open(\"green.png\", 'rb')" in made.code.value


@pytest.mark.integration
def test_a_text_generator_streams_its_answer_into_the_panel(tmp_path):
    pytest.importorskip("transformers")
    import tiny_models

    writer = tiny_models.text_generator()
    prompts = ["hello world", "the quick brown"]
    with served_panel({"writer": writer, "prompts": prompts}, tmp_path / "store") as made:
        assert made.method_dropdown.value == "generate" and "predict" in made.method_dropdown.options
        assert json.loads(made.request_box.value) == {"prompt": "hello world"}
        made.request_box.value = json.dumps({"prompt": "the quick brown", "max_tokens": 6})
        made.send_button.click()
        assert made.wait(60), made.status.value
        expected = writer("the quick brown", max_new_tokens=6, return_full_text=False)[0]["generated_text"]
        assert made.http_status.value == "done"
        assert html.unescape(made.response.value) == f"<pre style='white-space:pre-wrap;margin:0;'>{expected}</pre>"
        assert 'server.generate("the quick brown", max_tokens=6)' in made.code.value
        pieces = list(made.server.generate("the quick brown", max_tokens=6))
        assert len(pieces) > 1 and "".join(pieces) == expected  # streamed: several pieces, the same text

        made.request_box.value = json.dumps({"prompt": "hello", "max_tokens": 0})
        made.send_button.click()
        assert made.wait(60)
        assert made.http_status.value == "failed" and "max_tokens" in made.response.value
