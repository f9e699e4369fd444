"""The generated ASGI app, driven in-process through Starlette's TestClient."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from models import FragileModel
from readiness import wait_until_ready

import notebook_deploy as nd
from notebook_deploy.keys import KeyStore


def test_predictions_over_http_equal_in_process(forest_client, forest, iris):
    X = iris[0][::7]
    for method in ("predict", "predict_proba", "predict_log_proba"):
        response = forest_client.post(f"/{method}", json={"instances": X.tolist()})
        assert response.status_code == 200, response.text
        expected = getattr(forest, method)(X)
        got = np.asarray(response.json()["predictions"], dtype=float)
        got[np.isnan(got)] = -np.inf  # JSON has no infinity: log(0) travels as null
        np.testing.assert_array_equal(got, expected)


def test_a_pandas_pipeline_takes_rows_as_objects_or_lists(pipeline_client, pipeline, customers):
    frame = customers[0].head(30)
    expected = pipeline.predict_proba(frame).tolist()
    as_objects = pipeline_client.post("/predict_proba", json={"instances": frame.to_dict(orient="records")})
    as_lists = pipeline_client.post("/predict_proba", json={"instances": frame.values.tolist()})
    assert as_objects.json()["predictions"] == expected
    assert as_lists.json()["predictions"] == expected


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b"[[1, 2, 3, 4]]", 422, '{"instances": [row, ...]}'),
        (b'{"rows": [[1, 2, 3, 4]]}', 422, '{"instances": [row, ...]}'),
        (b'{"instances": []}', 422, "empty"),
        (b'{"instances": [[1, 2, 3]]}', 422, "row 0 has shape [3], expected [4]"),
        (b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}', 422, "row 1 has shape [5], expected [4]"),
        (
            b'{"instances": [[1, 2, "three", 4]]}',
            422,
            'row 0, position 2: expected a number or null, got a string "three"',
        ),
        (b'{"instances": [[1, 2, "3", 4]]}', 422, "expected a number"),
        (b'{"instances": [1, 2, 3, 4]}', 422, "row 0: expected a list of shape [4]"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(forest_client, body, status, fragment):
    response = forest_client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert forest_client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"age": 30, "income": 50.0}, "row 0: missing feature 'city'"),
        ({"age": 30, "income": 50.0, "city": "rome", "zip": 1}, "unknown feature 'zip'"),
        ({"age": "thirty", "income": 50.0, "city": "rome"}, "row 0, feature 'age': expected an integer"),
        ({"age": 30, "income": "high", "city": "rome"}, "row 0, feature 'income': expected a number"),
        ({"age": 30, "income": 50.0, "city": 7}, "row 0, feature 'city': expected a string"),
        ([30, 50.0], "row 0 has 2 values, expected 3"),
    ],
)
def test_table_errors_name_the_feature(pipeline_client, row, fragment):
    response = pipeline_client.post("/predict", json={"instances": [row]})
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


@pytest.fixture(scope="module")
def small_limit_client(forest_bundle):
    with TestClient(nd.create_app(forest_bundle, max_body_bytes=64 * 1024)) as client:
        yield client


def test_oversized_bodies_are_refused_declared_or_streamed(small_limit_client):
    forest_client = small_limit_client
    big = orjson.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]] * 10_000})
    assert len(big) > 64 * 1024
    declared = forest_client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "limit is 65536 bytes" in declared.json()["detail"]

    def chunks():
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = forest_client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert forest_client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200


def test_a_model_that_raises_gets_a_json_500_without_its_text_and_serving_goes_on(store, caplog):
    bundle = nd.capture(FragileModel(), name="fragile", sample=np.ones((2, 2)), store=store)
    with TestClient(nd.create_app(bundle)) as client:
        failed = client.post("/predict", json={"instances": [[-1.0, 2.0]]})
        assert failed.status_code == 500
        assert failed.json() == {
            "detail": "the model's predict raised an error; the server's log has it (serve with "
            "--debug-errors to return it to callers)"
        }
        assert "ValueError: negative values are not supported" in caplog.text  # the log keeps it
        assert client.post("/predict", json={"instances": [[1.0, 2.0]]}).json() == {"predictions": [3.0]}
    with TestClient(nd.create_app(bundle, debug_errors=True)) as client:
        failed = client.post("/predict", json={"instances": [[-1.0, 2.0]]})
        assert failed.json() == {"detail": "the model's predict raised ValueError: negative values are not supported"}


def test_string_labels_and_health_endpoints(store, iris):
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    bundle = nd.capture(DecisionTreeClassifier(random_state=0).fit(X, labels), name="named", sample=X[:5], store=store)
    with TestClient(nd.create_app(bundle)) as client:
        assert client.post("/predict", json={"instances": X[:2].tolist()}).json() == {
            "predictions": ["setosa", "setosa"]
        }
        assert client.get("/healthz").json() == {"status": "ok"}
        assert wait_until_ready(client) == {"ready": True, "model": bundle.ref, "sample_check": "match"}
        meta = client.get("/metadata").json()
        assert (meta["name"], meta["version"]) == ("named", bundle.version)
        assert meta["schema"]["outputs"]["predict"]["kind"] == "str"


def test_readyz_answers_503_until_the_model_has_answered_its_sample(forest_bundle, iris, monkeypatch):
    from notebook_deploy.serving import core

    entered, release = threading.Event(), threading.Event()
    check_sample = core._check_sample

    def held(bundle, model):  # the background sample check, held until the test releases it
        entered.set()
        assert release.wait(30)
        return check_sample(bundle, model)

    monkeypatch.setattr(core, "_check_sample", held)
    with TestClient(nd.create_app(forest_bundle)) as client:
        assert entered.wait(30)
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {
            "ready": False,
            "model": forest_bundle.ref,
            "reason": "the model is still running its stored sample",
        }
        assert client.get("/healthz").status_code == 200  # alive all along
        release.set()
        assert wait_until_ready(client) == {"ready": True, "model": forest_bundle.ref, "sample_check": "match"}


def test_a_loaded_model_leaves_the_framework_grpc_and_prometheus_unimported(forest_bundle):
    """The start of a server pays only for what answers its first predictions: FastAPI, Starlette and
    pydantic are imported when the app's routes are built (in the background, StartingApp), gRPC with a
    gRPC port, prometheus_client when metrics are first folded (a second in) or drift gauges are made."""
    later = ["fastapi", "starlette", "pydantic", "grpc", "prometheus_client"]
    script = (
        "import sys\n"
        "from notebook_deploy.serving.core import load_served\n"
        f"load_served({str(forest_bundle.path)!r})\n"  # no reference statistics, no gRPC port
        f"print([m for m in {later!r} if m in sys.modules])\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


STARTING = """
import asyncio, json, sys, threading

import httpx

from notebook_deploy.serving import runner
from notebook_deploy.serving.deployment import Deployment
from notebook_deploy.serving.settings import ServeSettings
from notebook_deploy.store import Store

release = threading.Event()
build = runner._build_app

def held(served):  # the background build of FastAPI's app, held until the predictions are in
    assert release.wait(60)
    return build(served)

runner._build_app = held
keys = sys.argv[5] == "keys"
if keys:
    release.set()  # the app is built before the server starts: nothing to hold
bundle = Store(sys.argv[1]).get(sys.argv[2])
app = runner.serving_app(Deployment((bundle,)), ServeSettings(keys_file=sys.argv[3]))
rows = json.loads(sys.argv[4])

async def main():
    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = (await outbox.get())["type"]
    built_at_start = app.app is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
        first = await client.post("/predict", json={"instances": rows})
        bad = await client.post("/predict", json={"rows": rows})
        before = "fastapi" in sys.modules
        docs = asyncio.create_task(client.get("/openapi.json"))
        await asyncio.sleep(0.2)
        waiting = not docs.done()
        release.set()
        after = (await client.post("/predict", json={"instances": rows})).status_code
        paths = sorted((await docs).json()["paths"])
        metrics = (await client.get("/metrics")).text
    await inbox.put({"type": "lifespan.shutdown"})
    stopped = (await outbox.get())["type"]
    await lifespan
    counted = [line for line in metrics.splitlines() if line.startswith("notebook_deploy_requests_total") and '"/predict"' in line]
    print(json.dumps({"built_at_start": built_at_start, "after": after, "started": started, "first": [first.status_code, first.json()], "bad": [bad.status_code, bad.json()],
                      "fastapi_before": before, "waiting": waiting, "paths": paths, "counted": counted, "stopped": stopped}))

asyncio.run(main())
"""


@pytest.mark.parametrize("keys", [False, True], ids=["no-keys", "keys"])
def test_a_server_answers_predictions_while_its_app_is_built(forest_bundle, iris, tmp_path, keys):
    """A server (runner.serving_app) answers the native API's predictions, errors included and counted in the
    metrics, before FastAPI is imported; other routes wait for the app built in the background, then answer.
    With API keys every request needs the app's key check, so the app is built before the server starts."""
    keys_file = tmp_path / "keys.json"
    if keys:
        KeyStore(keys_file).create("predict")
    rows = iris[0][:2].tolist()
    store, ref = str(forest_bundle.path.parents[2]), forest_bundle.ref
    run = subprocess.run(
        [sys.executable, "-c", STARTING, store, ref, str(keys_file), orjson.dumps(rows).decode(), "keys" * keys],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    seen = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert seen["built_at_start"] is keys
    if keys:
        assert seen["first"][0] == 401 and seen["after"] == 401 and seen["fastapi_before"] is True
        return
    assert seen["after"] == 200
    assert seen["started"] == "lifespan.startup.complete" and seen["stopped"] == "lifespan.shutdown.complete"
    assert seen["first"] == [200, {"predictions": forest_bundle.predict(iris[0][:2]).tolist()}]
    assert seen["bad"][0] == 422 and "instances" in seen["bad"][1]["detail"]
    assert seen["fastapi_before"] is False
    assert seen["waiting"] is True  # /openapi.json waited for the app
    assert {"/predict", "/readyz", "/metrics", "/v2/models/{name}/infer"} <= set(seen["paths"])
    assert any('status="200"' in line and line.endswith(" 2.0") for line in seen["counted"])
    assert any('status="422"' in line and line.endswith(" 1.0") for line in seen["counted"])


def test_a_server_whose_app_fails_to_build_answers_predictions_and_a_json_500(forest_bundle, iris, caplog):
    """If building the app's routes fails (a bug), the fast lane still answers predictions; every other
    request gets a JSON 500 that says where to look, and the failure is logged once."""
    import asyncio

    import httpx

    from notebook_deploy.serving.core import StartingApp, load_served

    def broken(served):
        raise RuntimeError("no routes today")

    app = StartingApp(load_served(forest_bundle), broken)
    rows = iris[0][:2].tolist()

    async def main():
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
        await inbox.put({"type": "lifespan.startup"})
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server") as client:
            predicted = await client.post("/predict", json={"instances": rows})
            metadata = await client.get("/metadata")
            again = await client.get("/readyz")
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await lifespan
        return predicted, metadata, again

    predicted, metadata, again = asyncio.run(main())
    assert predicted.status_code == 200
    assert predicted.json() == {"predictions": forest_bundle.predict(iris[0][:2]).tolist()}
    assert metadata.status_code == again.status_code == 500
    assert metadata.json() == {"detail": "the server failed to build its routes: see its log"}
    failures = [r for r in caplog.records if "building the app's routes failed" in r.getMessage()]
    assert len(failures) == 1 and "no routes today" in str(failures[0].exc_info[1])


def test_the_metrics_content_type_is_prometheus_clients():
    from prometheus_client import CONTENT_TYPE_LATEST

    from notebook_deploy.serving.metrics import CONTENT_TYPE

    assert CONTENT_TYPE == CONTENT_TYPE_LATEST


def test_openapi_documents_each_method_with_schema_and_example(forest_client, forest_bundle):
    spec = forest_client.get("/openapi.json").json()
    assert {"/predict", "/predict_proba", "/predict_log_proba", "/healthz", "/readyz", "/metadata"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    row = body["schema"]["properties"]["instances"]["items"]
    assert (row["minItems"], row["maxItems"]) == (4, 4)
    assert body["example"] == {"instances": forest_bundle.sample["instances"]}
    assert forest_client.get("/docs").status_code == 200


def test_the_fast_lane_answers_below_a_root_path(forest_bundle, iris):
    """Mounted under a prefix (Ray Serve's route prefix sets ``root_path``), POST /predict still takes
    the fast lane."""
    app = nd.create_app(forest_bundle)
    fast = app.fast_lane.routes["/predict"]
    bodies = []

    async def counted(body: bytes) -> bytes:
        bodies.append(body)
        return await fast.answer(body)

    app.fast_lane.routes["/predict"] = replace(fast, answer=counted)
    with TestClient(app, root_path="/forest") as client:
        answer = client.post("/forest/predict", json={"instances": iris[0][:2].tolist()})
    assert answer.json() == {"predictions": forest_bundle.predict(iris[0][:2]).tolist()}
    assert len(bodies) == 1
