"""Background tasks (push, verify) with progress and cancel, and the registry of local servers: the core
that the notebook panel and the Jupyter server extension both drive."""

from __future__ import annotations

import threading

import pytest
import requests
from images import push_test_base
from registries import Registry as RealRegistry

from notebook_deploy.errors import ServerStoppedError
from notebook_deploy.image.registry import Registry
from notebook_deploy.serving.process import Servers
from notebook_deploy.tasks import CANCELLED, FAILED, SUCCEEDED, Task, Tasks

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(tmp_path):
    with RealRegistry("none", tmp_path / "registry") as real:
        base = push_test_base(Registry(real.host, scheme="http", credentials=None), tmp_path)
        yield real, base


def test_a_push_task_reports_every_layer_and_ends_at_one(registry, forest_bundle, session_store):
    real, base = registry
    seen: list[float] = []
    task = Tasks(session_store).push(
        forest_bundle.ref,
        f"{real.host}/models/forest:1",
        base=base,
        backend="daemonless",
        watch=lambda t: seen.append(t.progress),
    )
    assert task.wait(300), task
    assert task.state == SUCCEEDED, task.error
    data = task.to_dict()
    assert data["progress"] == 1.0 and data["result"]["digest"].startswith("sha256:")
    assert data["layers"] and all(layer["done"] == layer["total"] for layer in data["layers"])
    assert any(0 < p < 1 for p in seen) or len(data["layers"]) > 1
    assert data["message"].startswith("pushed ")


def test_a_cancelled_push_stops_and_tags_nothing(registry, forest_bundle, session_store):
    real, base = registry
    started = threading.Event()
    tasks = Tasks(session_store)

    def cancel_at_first_layer(task: Task) -> None:
        if task.layers and not started.is_set():
            started.set()
            task.cancel()

    task = tasks.push(
        forest_bundle.ref,
        f"{real.host}/models/forest:cancelled",
        base=base,
        backend="daemonless",
        watch=cancel_at_first_layer,
    )
    assert task.wait(300)
    assert task.state == CANCELLED and "cancelled" in task.error
    tags = requests.get(f"{real.url}/v2/models/forest/tags/list", timeout=10)
    assert tags.status_code == 404 or "cancelled" not in (tags.json().get("tags") or [])
    assert tasks.get(task.id) is task and tasks.list() == [task]


def test_a_failing_task_says_why(forest_bundle, session_store):
    task = Tasks(session_store).push(forest_bundle.ref, "not a reference", backend="daemonless")
    assert task.wait(60)
    assert task.state == FAILED and task.error and task.progress == 0.0


def test_servers_start_list_and_stop(forest_bundle, session_store):
    servers = Servers(session_store)
    server = servers.start(forest_bundle.ref)
    try:
        assert [s.id for s in servers.list()] == [server.id]
        data = servers.get(server.id).to_dict()
        assert data["status"] == "running" and data["url"].startswith("http://127.0.0.1:")
        assert data["ref"] == forest_bundle.ref and "predict" in data["methods"]
    finally:
        servers.stop(server.id)
    assert servers.get(server.id).to_dict()["status"] == "stopped"
    with pytest.raises(ServerStoppedError, match="has stopped"):
        server.post("predict", {"instances": [[1, 2, 3, 4]]})
    with pytest.raises(KeyError):
        servers.get("0")
