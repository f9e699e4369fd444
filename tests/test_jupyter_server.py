"""The Jupyter server extension (notebook_deploy.jupyter.server): every route of docs/jupyter-rest-api.md
in a real Jupyter server, through pytest-jupyter's ``jp_fetch``.

pytest-jupyter's fixtures are imported into this module instead of being loaded as a plugin: the plugin
has autouse fixtures (an event loop and a ServerApp cleanup per test) and call hooks that would apply to
every test of the suite. The tests are plain functions that run ``jp_fetch`` on ``jp_asyncio_loop``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import test_tasks
import tiny_models as tm
from jupyter_server.auth.authorizer import AllowAllAuthorizer, Authorizer
from jupyter_server.utils import JupyterServerAuthWarning
from pytest_jupyter.jupyter_server import *  # noqa: F403 - the fixtures: jp_fetch, jp_serverapp, ...
from registries import free_port
from test_openai import greedy
from traitlets.config import Config

import notebook_deploy as nd
from notebook_deploy.bundle import seal_manifest
from notebook_deploy.capturing.recipe import History
from notebook_deploy.compare import compare
from notebook_deploy.jupyter.server import AUTH_RESOURCE, NAMESPACE, ROUTES

EXTENSION = "notebook_deploy.jupyter.server"
registry = test_tasks.registry  # the fixture: a local registry holding a base image
RECIPE_SOURCES = [
    "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
    'frame = pd.read_csv("train.csv")',
    'model = LogisticRegression(C=0.5).fit(frame[["a", "b"]], frame["y"])',
]


def newer_copy(bundle: nd.Bundle, store: nd.Store) -> nd.Bundle:
    """Another, newer version of ``bundle`` in ``store``: the same files under another label, no capture."""
    with store.staging() as staged:
        for file in bundle.path.iterdir():
            shutil.copy(file, staged)
        manifest = seal_manifest(
            staged, {**bundle.manifest, "labels": {"copy": "2"}, "created": datetime.now(timezone.utc).isoformat()}
        )
        return store.commit(staged, manifest)


def capture_with_recipe(store: nd.Store, folder: Path) -> nd.Bundle:
    """``lr``: a model captured with the history that built it from ``train.csv``, so it has a recipe."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rows = [(i % 7, (i * 3) % 5, int(i % 7 > 3)) for i in range(60)]
    (folder / "train.csv").write_text("a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    frame = pd.read_csv(folder / "train.csv")
    model = LogisticRegression(C=0.5).fit(frame[["a", "b"]], frame["y"])
    history = History(sources=list(RECIPE_SOURCES), counts=[1, 2, 3], workdir=str(folder))
    return nd.capture(
        model,
        name="lr",
        sample=frame[["a", "b"]].head(),
        history=history,
        variable="model",
        include_data=True,
        store=store,
    )


@pytest.fixture(scope="module")
def template(forest_bundle, pipeline_bundle, tmp_path_factory) -> Path:
    """A store with two versions of ``forest``, ``customers``, and ``lr`` with a recipe; tests use a copy."""
    store = nd.Store(tmp_path_factory.mktemp("jupyter") / "store")
    exports = tmp_path_factory.mktemp("exports")
    for bundle in (forest_bundle, pipeline_bundle):
        store.import_archive(bundle.export(exports))
    newer_copy(forest_bundle, store)
    capture_with_recipe(store, tmp_path_factory.mktemp("training"))
    return store.root


@pytest.fixture
def deploy_store(template, tmp_path) -> nd.Store:
    shutil.copytree(template, tmp_path / "store")
    return nd.Store(tmp_path / "store")


class ReadOnlyDeployments(Authorizer):
    """A deployment's authorizer that lets users see the Deployments lists and change nothing in them."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != AUTH_RESOURCE or action == "read"


@pytest.fixture
def authorizer_class() -> type[Authorizer]:
    return AllowAllAuthorizer


@pytest.fixture
def jp_server_config(deploy_store, authorizer_class):
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {EXTENSION: True, "jupyter_server_terminals": False},
                "allow_unauthenticated_access": False,
                "reraise_server_extension_failures": True,
                "authorizer_class": authorizer_class,
            },
            "NotebookDeploy": {"store": str(deploy_store.root)},
        }
    )


@pytest.fixture
def api(jp_fetch, jp_asyncio_loop):
    """``api("GET", "bundles")`` → (status, decoded JSON answer); a dict or list body is sent as JSON."""

    def call(
        method: str,
        *parts: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        if body is None and method in ("POST", "PUT"):
            body = ""
        text = body if body is None or isinstance(body, str) else json.dumps(body)
        response = jp_asyncio_loop.run_until_complete(
            jp_fetch(NAMESPACE, *parts, method=method, body=text, headers=headers, params=params, raise_error=False)
        )
        return response.code, json.loads(response.body)

    return call


def wait_for_task(api, task_id: str, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        status, task = api("GET", "tasks", task_id)
        assert status == 200, task
        if task["state"] != "running" or time.monotonic() > deadline:
            return task
        time.sleep(0.2)


# -- bundles ---------------------------------------------------------------------------------------------
def test_version_names_the_store(api, deploy_store):
    assert api("GET", "version") == (200, {"version": nd.__version__, "store": str(deploy_store.root)})


def test_bundles_are_listed_by_name_with_versions_newest_first(api, forest_bundle, pipeline_bundle):
    status, answer = api("GET", "bundles")
    assert status == 200
    assert [b["name"] for b in answer["bundles"]] == ["customers", "forest", "lr"]
    forest = answer["bundles"][1]
    newer, older = forest["versions"]
    assert older["version"] == forest_bundle.version and older["tags"] == []
    assert forest["tags"] == {"latest": newer["version"]} and newer["tags"] == ["latest"]
    assert newer["created"] > older["created"]
    assert older == {
        "name": "forest",
        "version": forest_bundle.version,
        "ref": forest_bundle.ref,
        "created": forest_bundle.created,
        "tags": [],
        "model_type": forest_bundle.manifest["model"]["type"],
        "methods": forest_bundle.methods,
        "size": forest_bundle.size,
    }


def test_details_show_recipe_lock_schema_and_sample(api):
    status, details = api("GET", "bundles", "lr", "latest")
    assert status == 200
    assert details["name"] == "lr" and details["tags"] == ["latest"] and details["ref"] == f"lr:{details['version']}"
    assert [c["source"] for c in details["recipe"]["cells"]] == RECIPE_SOURCES
    assert [c["execution_count"] for c in details["recipe"]["cells"]] == [1, 2, 3]
    assert details["recipe"]["target"] == "model"
    assert any(line.startswith("scikit-learn==") for line in details["lock"])
    assert details["requirements"] and details["manifest"]["version"] == details["version"]
    assert details["schema"]["input"]["description"].startswith("table of a: ")
    assert details["schema"]["input"]["json_schema"]["anyOf"][0]["required"] == ["a", "b"]
    assert set(details["schema"]["outputs"]) == set(details["methods"])
    assert len(details["sample"]["instances"]) == 5
    assert details["reference"]["rows"] == 5
    assert [feature["name"] for feature in details["reference"]["features"]] == ["a", "b"]


def test_details_of_a_bundle_without_recipe(api, forest_bundle):
    status, details = api("GET", "bundles", "forest", forest_bundle.version)
    assert status == 200 and details["recipe"] is None and details["version"] == forest_bundle.version


def test_moving_latest_back_is_a_rollback_the_list_shows(api, forest_bundle):
    status, moved = api("PUT", "bundles", "forest", "tags", "latest", body={"version": forest_bundle.version[:6]})
    assert status == 200 and moved == {"name": "forest", "tag": "latest", "version": forest_bundle.version}
    forest = api("GET", "bundles")[1]["bundles"][1]
    assert forest["tags"] == {"latest": forest_bundle.version}
    assert [v["tags"] for v in forest["versions"]] == [[], ["latest"]]
    assert api("GET", "bundles", "forest", "latest")[1]["version"] == forest_bundle.version


def test_a_tag_is_added_and_removed(api, forest_bundle):
    assert api("PUT", "bundles", "forest", "tags", "prod", body={"version": forest_bundle.version})[0] == 200
    assert api("GET", "bundles", "forest", "prod")[1]["version"] == forest_bundle.version
    assert api("DELETE", "bundles", "forest", "tags", "prod") == (
        200,
        {"name": "forest", "tag": "prod", "version": None},
    )
    status, answer = api("GET", "bundles", "forest", "prod")
    assert status == 404 and "no tag or version 'prod'" in answer["message"]


def test_deleting_a_version(api, forest_bundle, deploy_store):
    assert api("DELETE", "bundles", "forest", forest_bundle.version) == (200, {"deleted": forest_bundle.ref})
    [forest] = [b for b in api("GET", "bundles")[1]["bundles"] if b["name"] == "forest"]
    assert forest_bundle.version not in [v["version"] for v in forest["versions"]]
    assert [b.version for b in deploy_store.list("forest")] == [v["version"] for v in forest["versions"]]


# -- compare ---------------------------------------------------------------------------------------------
def test_compare_two_versions_without_and_with_measuring(api, forest_bundle, deploy_store):
    newer = deploy_store.get("forest:latest")
    status, answer = api(
        "GET", "compare", params={"old": f"forest:{forest_bundle.version[:6]}", "new": "forest:latest"}
    )
    assert status == 200, answer
    direct = compare(forest_bundle.ref, newer.ref, store=deploy_store, measure_serving=False).to_dict()
    assert {k: v for k, v in answer.items() if k != "sample"} == {k: v for k, v in direct.items() if k != "sample"}
    assert answer["sample"].keys() == direct["sample"].keys()  # the replay's timings differ, nothing else
    assert answer["old"] == forest_bundle.ref and answer["new"] == newer.ref
    assert answer["breaking"] is False and answer["schema"] == []
    assert answer["sample"]["agreement"] == 1.0 and answer["footprints"] is None
    status, measured = api("GET", "compare", params={"old": forest_bundle.ref, "new": "forest:latest", "measure": "1"})
    assert status == 200, measured
    for side in ("old", "new"):
        footprint = measured["footprints"][side]
        assert footprint["start_seconds"] > 0 and footprint["peak_rss_bytes"] > 0
        assert footprint["latency_ms"]["p99"] >= footprint["latency_ms"]["p50"] > 0
    assert set(measured["ratios"]) >= {"size", "latency", "start", "memory"}


def test_compare_names_a_breaking_change_first(api):
    status, answer = api("GET", "compare", params={"old": "forest", "new": "customers"})
    assert status == 200, answer
    assert answer["breaking"] is True
    assert answer["schema"][0]["breaking"] and answer["schema"][0]["what"].startswith("the input: ")
    assert answer["sample"]["rows"] == 15 and answer["sample"]["agreement"] < 1  # forest's rows, refused


@pytest.mark.parametrize(
    ("query", "status", "expected"),
    [
        ({"new": "forest"}, 400, "query 'old' is missing"),
        ({"old": "forest", "new": ""}, 400, "query 'new' is missing"),
        ({"old": "forest", "new": "forest", "measure": "yes"}, 400, "'measure' must be 0 or 1"),
        ({"old": "../forest", "new": "forest"}, 400, "not a valid bundle name"),
        ({"old": "nothing", "new": "forest"}, 404, "no bundle named 'nothing'"),
        ({"old": "forest", "new": "forest:ffffffffffff"}, 404, "no tag or version 'ffffffffffff'"),
    ],
)
def test_compare_refuses_missing_malformed_and_unknown_refs(api, query, status, expected):
    found, answer = api("GET", "compare", params=query)
    assert found == status, answer
    assert expected in answer["message"]


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "parts", "body", "expected"),
    [
        ("POST", ("servers",), "", "not JSON"),
        ("POST", ("servers",), "{'ref': 'forest'}", "not JSON"),
        ("POST", ("servers",), [], "must be a JSON object, not list"),
        ("POST", ("servers",), {}, "needs 'ref'"),
        ("POST", ("servers",), {"ref": 3}, "'ref' must be a string, not int"),
        ("POST", ("servers",), {"ref": "forest", "port": "80"}, "'port' must be an integer"),
        ("POST", ("servers",), {"ref": "forest", "port": True}, "'port' must be an integer"),
        ("POST", ("servers",), {"ref": "forest", "port": 70000}, "from 0 (any free port) to 65535"),
        ("POST", ("servers",), {"ref": "forest", "api_key": "secret"}, "unknown field 'api_key'"),
        ("POST", ("servers",), {"ref": "../forest"}, "not a valid bundle name"),
        ("POST", ("servers", "1", "predict"), {"instances": {"a": 1}}, "'instances' must be a list, not dict"),
        ("POST", ("servers", "1", "generate"), ["hi"], "must be a JSON object, not list"),
        ("POST", ("tasks",), {"ref": "forest"}, "'kind' must be one of 'push', 'verify', not None"),
        ("POST", ("tasks",), {"kind": "build", "ref": "forest"}, "not 'build'"),
        ("POST", ("tasks",), {"kind": "push", "ref": "forest"}, "needs 'image'"),
        (
            "POST",
            ("tasks",),
            {"kind": "push", "ref": "forest", "image": "localhost:5000/forest:1", "password": "x"},
            "unknown field 'password'",
        ),
        ("POST", ("tasks",), {"kind": "push", "ref": "forest", "image": "Not An Image"}, "Not An Image"),
        (
            "POST",
            ("tasks",),
            {"kind": "verify", "ref": "forest", "image": "localhost:5000/forest:1"},
            "unknown field 'image'",
        ),
        ("PUT", ("bundles", "forest", "tags", "prod"), {}, "needs 'version'"),
        ("PUT", ("bundles", "forest", "tags", "0123456789ab"), {"version": "latest"}, "not a valid tag"),
        ("GET", ("bundles", "Forest", "latest"), None, "not a valid bundle name"),
    ],
)
def test_malformed_requests_are_400_saying_what_was_wrong(api, method, parts, body, expected):
    status, answer = api(method, *parts, body=body)
    assert status == 400, answer
    assert expected in answer["message"]


@pytest.mark.parametrize(
    ("method", "parts", "body", "expected"),
    [
        ("GET", ("bundles", "nothing", "latest"), None, "no bundle named 'nothing'"),
        ("GET", ("bundles", "forest", "ffffffffffff"), None, "no tag or version 'ffffffffffff'"),
        ("DELETE", ("bundles", "forest", "staging"), None, "no tag or version 'staging'"),
        ("PUT", ("bundles", "nothing", "tags", "prod"), {"version": "latest"}, "no bundle named 'nothing'"),
        ("DELETE", ("bundles", "forest", "tags", "staging"), None, "has no tag 'staging'"),
        ("POST", ("servers",), {"ref": "nothing"}, "no bundle named 'nothing'"),
        ("DELETE", ("servers", "1"), None, "no server '1'"),
        ("GET", ("servers", "1", "logs"), None, "no server '1'"),
        ("POST", ("servers", "1", "predict"), {"instances": [[1, 2, 3, 4]]}, "no server '1'"),
        ("POST", ("servers", "1", "generate"), {"prompt": "hi"}, "no server '1'"),
        ("POST", ("tasks",), {"kind": "verify", "ref": "nothing"}, "no bundle named 'nothing'"),
        (
            "POST",
            ("tasks",),
            {"kind": "push", "ref": "forest:nothing", "image": "localhost:5000/f:1"},
            "no tag or version",
        ),
        ("GET", ("tasks", "0"), None, "no task '0'"),
        ("DELETE", ("tasks", "0"), None, "no task '0'"),
    ],
)
def test_unknown_bundles_servers_and_tasks_are_404(api, method, parts, body, expected):
    status, answer = api(method, *parts, body=body)
    assert status == 404, answer
    assert expected in answer["message"]


def route_requests() -> list[tuple[str, str]]:
    """(method, path) for every method of every route, path parameters filled in."""
    requests_ = []
    for pattern, handler in ROUTES:
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "x", pattern)
        requests_ += [(method, path) for method in ("GET", "POST", "PUT", "DELETE") if method.lower() in vars(handler)]
    return requests_


@pytest.mark.parametrize(("method", "path"), route_requests())
def test_every_route_refuses_requests_without_the_token(api, method, path):
    status, _ = api(
        method, *path.split("/"), body="{}" if method in ("POST", "PUT") else None, headers={"Authorization": ""}
    )
    assert status in (401, 403)


def test_every_route_is_declared_authenticated(jp_configurable_serverapp):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = jp_configurable_serverapp()
    assert EXTENSION in app.extension_manager.extensions
    assert not [w for w in caught if issubclass(w.category, JupyterServerAuthWarning)]


@pytest.mark.parametrize("authorizer_class", [ReadOnlyDeployments])
def test_a_read_only_authorizer_lists_but_changes_nothing(api, forest_bundle, deploy_store):
    status, listed = api("GET", "bundles")
    assert status == 200 and [b["name"] for b in listed["bundles"]] == ["customers", "forest", "lr"]
    assert api("GET", "bundles", "forest", forest_bundle.version)[0] == 200
    assert api("GET", "servers") == (200, {"servers": []})
    refused = [
        ("DELETE", ("bundles", "forest", forest_bundle.version), None),
        ("PUT", ("bundles", "forest", "tags", "prod"), {"version": forest_bundle.version}),
        ("DELETE", ("bundles", "forest", "tags", "latest"), None),
        ("POST", ("servers",), {"ref": "forest"}),
        ("POST", ("servers", "1", "predict"), {"instances": [[1, 2, 3, 4]]}),
        ("POST", ("servers", "1", "generate"), {"prompt": "hi"}),
        ("DELETE", ("servers", "1"), None),
        ("POST", ("tasks",), {"kind": "push", "ref": "forest", "image": "127.0.0.1:1/forest:1"}),
        ("DELETE", ("tasks", "1"), None),
    ]
    for method, parts, body in refused:
        status, answer = api(method, *parts, body=body)
        assert status == 403, (method, parts, answer)
    assert deploy_store.get(forest_bundle.ref).version == forest_bundle.version  # still there
    assert deploy_store.tags("forest") == listed["bundles"][1]["tags"]  # unchanged
    assert api("GET", "servers") == (200, {"servers": []}) and api("GET", "tasks") == (200, {"tasks": []})


def test_a_damaged_version_or_tags_file_is_listed_as_damaged(api, deploy_store, forest_bundle):
    (deploy_store.root / "bundles" / "forest" / forest_bundle.version / "bundle.json").write_text("{not json")
    (deploy_store.root / "bundles" / "customers" / "tags.json").write_text("[1, 2")
    status, answer = api("GET", "bundles")
    assert status == 200, answer
    customers, forest, lr = answer["bundles"]
    assert [v["version"] for v in forest["versions"]] != [] and forest_bundle.version not in [
        v["version"] for v in forest["versions"]
    ]
    (damaged,) = forest["damaged"]
    assert damaged["version"] == forest_bundle.version and "is not valid JSON" in damaged["reason"]
    assert customers["versions"] and customers["tags"] == {}
    assert customers["damaged"][0]["version"] == "tags.json" and "cannot be read" in customers["damaged"][0]["reason"]
    assert lr["damaged"] == []


# -- servers and tasks (real processes) ------------------------------------------------------------------
@pytest.mark.integration
def test_serve_predict_through_the_proxy_read_logs_and_stop(api, forest_bundle, iris):
    status, server = api("POST", "servers", body={"ref": f"forest:{forest_bundle.version}"})
    assert status == 201, server
    try:
        assert server["status"] == "running" and server["ref"] == forest_bundle.ref
        assert api("GET", "servers")[1] == {"servers": [server]}
        rows = iris[0][:3].tolist()
        status, proxied = api("POST", "servers", server["id"], "predict", body={"instances": rows})
        assert status == 200 and proxied["status"] == 200
        assert proxied["body"]["predictions"] == forest_bundle.predict(iris[0][:3]).tolist()
        status, proba = api(
            "POST", "servers", server["id"], "predict", body={"method": "predict_proba", "instances": rows}
        )
        assert proba["body"]["predictions"] == forest_bundle.predict(iris[0][:3], "predict_proba").tolist()
        status, refused = api("POST", "servers", server["id"], "predict", body={"instances": [[1, 2]]})
        assert status == 200 and refused["status"] == 422 and "row 0" in refused["body"]["detail"]
        assert '"POST /predict HTTP/1.1" 422' in api("GET", "servers", server["id"], "logs")[1]["logs"]
        status, refused = api("POST", "servers", server["id"], "generate", body={"prompt": "hi"})
        assert status == 404 and "not a text generator" in refused["message"]
    finally:
        status, stopped = api("DELETE", "servers", server["id"])
    assert status == 200 and stopped["status"] == "stopped"
    assert api("GET", "servers")[1]["servers"][0]["status"] == "stopped"
    status, answer = api("POST", "servers", server["id"], "predict", body={"instances": rows})
    assert status == 409 and "has stopped" in answer["message"]


@pytest.mark.integration
def test_monitor_answers_charts_that_grow_with_traffic(api, forest_bundle, iris):
    status, server = api("POST", "servers", body={"ref": f"forest:{forest_bundle.version}"})
    assert status == 201, server
    rows = iris[0][:3].tolist()
    try:
        status, first = api("GET", "servers", server["id"], "monitor")
        assert status == 200, first
        assert set(first["charts"]) == {"requests", "latency", "errors", "batches", "drift"}
        for _ in range(5):
            api("POST", "servers", server["id"], "predict", body={"instances": rows})
        time.sleep(1.1)  # the route scrapes at most once a second
        status, second = api("GET", "servers", server["id"], "monitor")
        values = second["charts"]["requests"]["data"]["values"]
        assert status == 200 and [v["version"] for v in values] == [forest_bundle.version] and values[0]["value"] > 0
        assert api("GET", "servers", "12345678", "monitor")[0] == 404
    finally:
        api("DELETE", "servers", server["id"])
    status, answer = api("GET", "servers", server["id"], "monitor")
    assert status == 409 and "has stopped" in answer["message"]


@pytest.mark.integration
def test_generate_passes_a_text_generators_events_on(api, jp_fetch, jp_asyncio_loop, deploy_store):
    generator = tm.text_generator()
    bundle = nd.capture(generator, "gen", ["hello world", "the quick"], store=deploy_store)
    status, server = api("POST", "servers", body={"ref": bundle.ref})
    assert status == 201, server
    try:
        chunks: list[bytes] = []
        response = jp_asyncio_loop.run_until_complete(
            jp_fetch(
                NAMESPACE,
                "servers",
                server["id"],
                "generate",
                method="POST",
                body=json.dumps({"prompt": "the quick brown fox", "max_tokens": 12}),
                streaming_callback=chunks.append,
                raise_error=False,
            )
        )
        assert response.code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        lines = b"".join(chunks).decode().splitlines()
        events = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
        assert len(events) > 2 and all(set(event) == {"text"} for event in events[:-1])
        assert "".join(event["text"] for event in events[:-1]) == greedy(generator, "the quick brown fox", 12)
        assert events[-1]["finish_reason"] == "length" and events[-1]["usage"]["completion_tokens"] == 12
        status, refused = api("POST", "servers", server["id"], "generate", body={"prompt": 3})
        assert status == 400 and "the model server answered 400" in refused["message"], refused
        assert "'prompt'" in refused["message"]
    finally:
        api("DELETE", "servers", server["id"])
    status, stopped = api("POST", "servers", server["id"], "generate", body={"prompt": "hi"})
    assert status == 409 and "has stopped" in stopped["message"]


@pytest.mark.integration
def test_push_task_is_polled_until_it_succeeded(api, registry, forest_bundle):
    real, base = registry
    image = f"{real.host}/models/forest:1"
    status, task = api(
        "POST",
        "tasks",
        body={
            "kind": "push",
            "ref": f"forest:{forest_bundle.version}",
            "image": image,
            "base": base,
            "backend": "daemonless",
        },
    )
    assert status == 202 and task["state"] == "running" and task["target"] == image
    assert api("GET", "tasks")[1]["tasks"][0]["id"] == task["id"]
    task = wait_for_task(api, task["id"], 300)
    assert task["state"] == "succeeded", task["error"]
    assert task["progress"] == 1 and task["result"]["digest"].startswith("sha256:")
    assert all(layer["done"] == layer["total"] for layer in task["layers"])
    assert (
        requests.get(
            f"{real.url}/v2/models/forest/manifests/1",
            timeout=10,
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        ).status_code
        == 200
    )


@pytest.mark.integration
def test_verify_task_replays_the_recipe(api):
    status, task = api("POST", "tasks", body={"kind": "verify", "ref": "lr"})
    assert status == 202 and task["kind"] == "verify" and task["ref"].startswith("lr:")
    task = wait_for_task(api, task["id"], 300)
    assert task["state"] == "succeeded", task["error"]
    assert task["result"]["ok"] is True and task["progress"] == 1


def test_a_failed_task_says_why_and_cancelling_it_keeps_its_state(api):
    status, task = api("POST", "tasks", body={"kind": "verify", "ref": "forest"})
    assert status == 202
    failed = wait_for_task(api, task["id"], 60)
    assert failed["state"] == "failed" and "has no recipe to verify" in failed["error"]
    assert api("DELETE", "tasks", task["id"]) == (200, failed)


@pytest.mark.integration
def test_model_servers_stop_when_the_jupyter_server_stops(template, tmp_path):
    port, token = free_port(), "test-token"
    environment = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    jupyter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            f"--port={port}",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.root_dir={tmp_path}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.jpserver_extensions={{'{EXTENSION}': True}}",
            f"--NotebookDeploy.store={template}",
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url, headers = f"http://127.0.0.1:{port}/{NAMESPACE}", {"Authorization": f"token {token}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/version", headers=headers, timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and jupyter.poll() is None, "the Jupyter server did not start"
            time.sleep(0.2)
        response = requests.post(f"{url}/servers", json={"ref": "customers"}, headers=headers, timeout=120)
        assert response.status_code == 201, response.text
        pid = response.json()["pid"]
        jupyter.send_signal(signal.SIGTERM)
        assert jupyter.wait(60) == 0
        deadline = time.monotonic() + 15
        while process_exists(pid):
            assert time.monotonic() < deadline, f"the model server {pid} outlived the Jupyter server"
            time.sleep(0.1)
    finally:
        if jupyter.poll() is None:
            jupyter.kill()
            jupyter.wait()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
