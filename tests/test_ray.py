"""notebook_deploy.targets.ray: bundles as Ray Serve applications on a local Ray instance, which answer
exactly as the app in-process does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import requests

from notebook_deploy.errors import InputError, ServeError
from notebook_deploy.targets import ray as nd_ray


@pytest.fixture(scope="module")
def forest_on_ray(cluster, forest_bundle):
    deployment = nd_ray.deploy(forest_bundle, num_replicas=2, ray_actor_options={"num_cpus": 0.5})
    yield deployment
    if deployment.status() != "DELETED":
        deployment.delete()


@pytest.fixture(scope="module")
def pipeline_on_ray(cluster, pipeline_bundle):
    autoscaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 3}
    deployment = nd_ray.deploy(pipeline_bundle, autoscaling=autoscaling)
    yield deployment
    if deployment.status() != "DELETED":
        deployment.delete()


def _same_answers(deployment, client, calls):
    """Each call, (method, path, JSON body or raw bytes), answered alike by Ray Serve and in-process."""
    for method, path, body in calls:
        options = {"data": body} if isinstance(body, bytes) else {"json": body}
        remote = requests.request(method, deployment.url + path, timeout=30, **options)
        local = client.request(method, path, **({} if body is None else options))
        assert (remote.status_code, remote.json()) == (local.status_code, local.json()), (method, path)


@pytest.mark.integration
def test_forest_answers_as_in_process(forest_on_ray, forest_bundle, forest_client, iris):
    X = iris[0][::9]
    assert forest_on_ray.url.endswith("/forest")
    np.testing.assert_array_equal(forest_on_ray.predict(X), forest_bundle.predict(X))
    np.testing.assert_array_equal(forest_on_ray.predict(X, "predict_proba"), forest_bundle.predict(X, "predict_proba"))
    tensor = {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(X.shape), "data": X.tolist()}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    _same_answers(
        forest_on_ray,
        forest_client,
        [
            ("POST", "/predict", {"instances": X.tolist()}),
            ("POST", "/predict_proba", {"instances": X.tolist()}),
            ("POST", "/predict", {"instances": [[1.0, 2.0]]}),  # 422, the same message
            ("POST", "/predict", {"rows": []}),
            ("POST", "/predict", b"{not json"),  # 400
            ("GET", "/readyz", None),
            ("GET", "/v2/health/ready", None),
            ("GET", "/v2/models/forest", None),
            ("POST", "/v2/models/forest/infer", tensor),
            ("POST", "/v2/models/forest/infer", {"inputs": []}),
        ],
    )
    with pytest.raises(InputError, match="row 0 has shape"):
        forest_on_ray.predict([[1.0, 2.0]])
    # the same documented routes; Ray Serve's route prefix only adds the document's server URL
    remote_document = requests.get(f"{forest_on_ray.url}/openapi.json", timeout=30).json()
    assert remote_document["servers"] == [{"url": "/forest"}]
    assert remote_document["paths"] == forest_client.get("/openapi.json").json()["paths"]


@pytest.mark.integration
def test_two_replicas_and_their_options(forest_on_ray):
    assert forest_on_ray.replicas() == {"RUNNING": 2}
    config = forest_on_ray.config()
    assert (config["num_replicas"], config["ray_actor_options"]["num_cpus"]) == (2, 0.5)
    assert config["max_ongoing_requests"] == 64  # the app's max_batch_size, so batches can fill
    assert "2 running" in str(forest_on_ray) and "http://127.0.0.1:" in forest_on_ray._repr_html_()
    assert repr(forest_on_ray).startswith(
        f"<RayDeployment {forest_on_ray.bundle.ref} as Ray Serve application 'forest'"
    )


@pytest.mark.integration
def test_a_dataframe_pipeline_with_autoscaling(pipeline_on_ray, pipeline_bundle, pipeline_client, customers):
    frame = customers[0].head(30)
    np.testing.assert_array_equal(pipeline_on_ray.predict(frame), pipeline_bundle.predict(frame))
    np.testing.assert_array_equal(
        pipeline_on_ray.predict(frame, "predict_proba"), pipeline_bundle.predict(frame, "predict_proba")
    )
    rows = json.loads(frame.to_json(orient="records"))
    columns = [
        {"name": "age", "datatype": "INT64", "shape": [len(frame)], "data": frame["age"].tolist()},
        {"name": "income", "datatype": "FP64", "shape": [len(frame)], "data": frame["income"].tolist()},
        {"name": "city", "datatype": "BYTES", "shape": [len(frame)], "data": frame["city"].tolist()},
    ]
    _same_answers(
        pipeline_on_ray,
        pipeline_client,
        [
            ("POST", "/predict", {"instances": rows}),
            ("POST", "/predict", {"instances": [{**rows[0], "income": "high"}]}),  # 422 naming row and feature
            ("POST", "/v2/models/customers/infer", {"inputs": columns}),
            ("GET", "/v2/health/ready", None),
        ],
    )
    autoscaling = pipeline_on_ray.config()["autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"], autoscaling["target_ongoing_requests"]) == (
        1,
        2,
        3,
    )
    assert pipeline_on_ray.replicas() == {"RUNNING": 1}


@pytest.mark.integration
def test_the_cli_deploys_for_longer_than_it_runs_and_deletes(cluster, forest_bundle, session_store, iris):
    command = [
        sys.executable,
        "-m",
        "notebook_deploy",
        "--store",
        str(session_store.root),
        "ray",
        "forest",
        "--address",
        cluster,
        "--name",
        "forest-cli",
        "--num-cpus",
        "0.5",
        "--autoscale",
        "1:2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    url = next(line.split()[-1] for line in done.stdout.splitlines() if line.strip().startswith("url"))
    assert url.endswith("/forest-cli")
    answer = requests.post(f"{url}/predict", json={"instances": iris[0][:3].tolist()}, timeout=30)
    assert answer.json() == {"predictions": forest_bundle.predict(iris[0][:3]).tolist()}
    done = subprocess.run(
        [*command[:7], "--address", cluster, "--name", "forest-cli", "--delete"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Deleted the Ray Serve application forest-cli" in done.stdout
    assert requests.post(f"{url}/predict", json={"instances": iris[0][:3].tolist()}, timeout=30).status_code == 404


@pytest.mark.integration
def test_delete_removes_the_application(forest_on_ray, iris):
    forest_on_ray.delete()
    assert forest_on_ray.status() == "DELETED" and forest_on_ray.replicas() == {}
    assert requests.get(f"{forest_on_ray.url}/healthz", timeout=30).status_code == 404
    with pytest.raises(ServeError, match="no application named 'forest'"):
        nd_ray.delete("forest")


def test_options_that_ray_serve_provides_otherwise_are_refused(forest_bundle):
    with pytest.raises(ServeError, match="workers does not apply on Ray Serve: use num_replicas="):
        nd_ray.deploy(forest_bundle, workers=2)


def test_the_replicas_environment_can_install_the_lock(forest_bundle):
    assert nd_ray.replica_environment(forest_bundle, None, False) == {}
    environment = nd_ray.replica_environment(forest_bundle, {"pip": ["orjson"], "env_vars": {"A": "1"}}, True)
    assert environment == {"pip": ["orjson", *forest_bundle.lock()], "env_vars": {"A": "1"}}
    assert any(line.startswith("scikit-learn==") for line in environment["pip"])


def test_importing_the_target_does_not_import_ray():
    code = "import sys, notebook_deploy.targets.ray; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
