"""Several versions and several models in one server (serving/router.py): canary share, sticky callers,
shadows that cannot hurt, the version header, per-model routes, merged metrics, the CLI's options."""

from __future__ import annotations

import asyncio
import math
import os
import time

import numpy as np
import pytest
import requests
from cli_server import cli_server
from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from served_metrics import predictions_counted
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.cli import cli
from notebook_deploy.serving.deployment import Deployment
from notebook_deploy.serving.router import VERSION_HEADER, VersionRouter
from notebook_deploy.serving.settings import ServeSettings

ROWS = [[5.1, 3.5, 1.4, 0.2]]


class _Shadow:
    """Answers zeros; raises or sleeps when ``$ND_TEST_SHADOW`` says so (set only after capture)."""

    def predict(self, rows):
        mode = os.environ.get("ND_TEST_SHADOW", "")
        if mode == "raise":
            raise RuntimeError("the shadow fails")
        if mode == "sleep":
            time.sleep(0.2)
        return np.zeros(len(rows), dtype=int)


@pytest.fixture(scope="module")
def flowers(forest, iris, session_store):
    """Two versions of the model "flowers" (stable, canary), a shadow of it, and another model, "petals"."""
    X, y = iris
    stable = nd.capture(forest, name="flowers", sample=X[:5], store=session_store)
    other = RandomForestClassifier(n_estimators=3, random_state=1).fit(X, y)
    canary = nd.capture(other, name="flowers", sample=X[:5], store=session_store)
    shadow = nd.capture(_Shadow(), name="flowers", sample=X[:5], store=session_store)
    petals = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="petals", sample=X[:5], store=session_store)
    return stable, canary, shadow, petals


def _client(deployment: Deployment, seed: int | None = 0) -> TestClient:
    return TestClient(VersionRouter(deployment, ServeSettings(), seed=seed))


def test_the_canary_gets_its_share_of_requests(flowers):
    stable, canary, _, _ = flowers
    count, share = 2000, 0.10
    with _client(Deployment((stable,), ((canary, share * 100),)), seed=None) as client:
        answers = [client.post("/predict", json={"instances": ROWS}) for _ in range(count)]
    assert {a.status_code for a in answers} == {200}
    versions = [a.headers[VERSION_HEADER] for a in answers]
    assert set(versions) == {stable.ref, canary.ref}
    # A 99% interval of the binomial count (normal approximation; n*p = 200 is large enough).
    spread = 2.5758 * math.sqrt(count * share * (1 - share))
    assert abs(versions.count(canary.ref) - count * share) <= spread


def test_a_sticky_header_keeps_each_caller_on_one_version(flowers):
    stable, canary, _, _ = flowers
    deployment = Deployment((stable,), ((canary, 50),), sticky_header="X-User")
    reached: dict[str, set[str]] = {}
    with _client(deployment, seed=None) as client:
        for _ in range(3):
            for user in range(40):
                answer = client.post("/predict", json={"instances": ROWS}, headers={"X-User": f"user-{user}"})
                reached.setdefault(f"user-{user}", set()).add(answer.headers[VERSION_HEADER])
    assert all(len(versions) == 1 for versions in reached.values())
    assert set().union(*reached.values()) == {stable.ref, canary.ref}


@pytest.mark.parametrize("mode", ["raise", "sleep"])
def test_a_shadow_changes_no_answer_and_records_its_own(flowers, forest, monkeypatch, mode):
    stable, _, shadow, _ = flowers
    monkeypatch.setenv("ND_TEST_SHADOW", mode)
    count = 8
    with _client(Deployment((stable,), shadow=(shadow,))) as client:
        answers = [client.post("/predict", json={"instances": ROWS}) for _ in range(count)]
        bad = client.post("/predict", json={"instances": [["not a number"] * 4]})
        deadline = time.monotonic() + 60
        while (seen := _requests_of(client, shadow.version)) < count + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [a.status_code for a in answers] == [200] * count
    assert all(a.json() == {"predictions": forest.predict(np.array(ROWS)).tolist()} for a in answers)
    assert {a.headers[VERSION_HEADER] for a in answers} == {stable.ref}
    assert bad.status_code == 422 and bad.headers[VERSION_HEADER] == stable.ref
    assert seen == count + 1  # the shadow got every copy, and its metrics counted each


def test_copies_to_shadows_wait_until_no_caller_is_answered_and_run_one_at_a_time(flowers):
    stable, _, shadow, _ = flowers
    router = VersionRouter(Deployment((stable,), shadow=(shadow,)), ServeSettings())
    group = router.groups["flowers"]
    started: list[int] = []
    release = asyncio.Event()

    async def copy(number: int) -> int:
        started.append(number)
        await release.wait()
        return 200

    async def scenario() -> list[list[int]]:
        seen = []
        with router.answering(group, group.stable, inference=True):  # a caller's request under way
            router.copy(group.shadows[0], lambda: copy(1))
            router.copy(group.shadows[0], lambda: copy(2))
            await asyncio.sleep(0.05)
            seen.append(list(started))  # nothing ran beside the caller's request
        await asyncio.sleep(0.05)
        seen.append(list(started))  # the first copy runs once the server is idle, the second waits its turn
        release.set()
        await asyncio.gather(*router.shadow_tasks)
        seen.append(list(started))
        return seen

    assert asyncio.run(scenario()) == [[], [1], [1, 2]]


def test_a_body_over_the_limit_is_refused_and_not_copied_to_the_shadow(flowers):
    stable, _, shadow, _ = flowers
    settings = ServeSettings(max_body_bytes=1024)
    with TestClient(VersionRouter(Deployment((stable,), shadow=(shadow,)), settings)) as client:
        chunked = client.post("/predict", content=iter([b"[" * 800, b"[" * 800]))
        declared = client.post("/predict", content=b"[" * 2000)
        assert _requests_of(client, shadow.version) == 0
    assert (chunked.status_code, declared.status_code) == (413, 413)
    assert chunked.headers[VERSION_HEADER] == declared.headers[VERSION_HEADER] == stable.ref


def _requests_of(client: TestClient, version: str) -> float:
    families = text_string_to_metric_families(client.get("/metrics").text)
    requests_family = next(f for f in families if f.name == "notebook_deploy_requests")
    return sum(
        s.value
        for s in requests_family.samples
        if s.name.endswith("_total") and s.labels["version"] == version and s.labels["endpoint"] == "/predict"
    )


def test_every_answer_names_its_version_even_an_error(flowers):
    stable, canary, _, _ = flowers
    with _client(Deployment((stable,), ((canary, 50),))) as client:
        answers = [client.post("/predict", json={"instances": [[1.0, 2.0]]}) for _ in range(20)]
        pinned = client.post(
            f"/v2/models/flowers/versions/{canary.version}/infer",
            json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": ROWS[0]}]},
        )
        docs = client.get("/docs")
    assert {a.status_code for a in answers} == {422}
    assert {a.headers[VERSION_HEADER] for a in answers} == {stable.ref, canary.ref}
    assert pinned.status_code == 200 and pinned.headers[VERSION_HEADER] == canary.ref
    assert pinned.json()["model_version"] == canary.version
    assert docs.status_code == 200 and docs.headers[VERSION_HEADER] == stable.ref


def test_a_version_query_reaches_that_versions_drift_and_docs(flowers):
    stable, canary, shadow, _ = flowers
    with _client(Deployment((stable,), ((canary, 50),), (shadow,))) as client:
        answers = {v.ref: client.get(f"/monitor/drift?version={v.version}") for v in (stable, canary, shadow)}
        plain = client.get("/monitor/drift")
        docs = client.get(f"/openapi.json?version={canary.version}")
        unknown = client.get("/monitor/drift?version=0000")
    assert {ref: (a.status_code, a.headers[VERSION_HEADER]) for ref, a in answers.items()} == {
        ref: (200, ref) for ref in answers
    }
    assert plain.headers[VERSION_HEADER] == stable.ref
    assert docs.status_code == 200 and docs.headers[VERSION_HEADER] == canary.ref
    assert unknown.status_code == 404
    assert "model 'flowers' has no version '0000' here" in unknown.json()["detail"]
    assert canary.version in unknown.json()["detail"] and shadow.version in unknown.json()["detail"]


def test_two_models_each_under_its_name(flowers, forest, iris):
    stable, _, _, petals = flowers
    tensor = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": ROWS[0]}]}
    with _client(Deployment((stable, petals))) as client:
        by_name = {name: client.post(f"/v2/models/{name}/infer", json=tensor) for name in ("flowers", "petals")}
        tf = client.post("/v1/models/petals:predict", json={"instances": ROWS})
        unnamed = client.post("/predict", json={"instances": ROWS})
        unknown = client.post("/v2/models/roses/infer", json=tensor)
        metadata = client.get("/metadata").json()
        ready = client.get("/readyz")
    assert {name: a.headers[VERSION_HEADER] for name, a in by_name.items()} == {
        "flowers": stable.ref,
        "petals": petals.ref,
    }
    assert by_name["flowers"].json()["outputs"][0]["data"] == forest.predict(np.array(ROWS)).tolist()
    assert by_name["petals"].json()["model_name"] == "petals"
    assert tf.status_code == 200 and tf.headers[VERSION_HEADER] == petals.ref
    assert unnamed.status_code == 404
    assert "flowers, petals" in unnamed.json()["detail"] and "/v2/models/NAME/infer" in unnamed.json()["detail"]
    assert unknown.status_code == 404 and "roses" in unknown.json()["error"]
    assert [(m["name"], m["version"], m["role"]) for m in metadata] == [
        ("flowers", stable.version, "stable"),
        ("petals", petals.version, "stable"),
    ]
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_metrics_merge_every_version_into_one_exposition(flowers):
    stable, canary, _, _ = flowers
    with _client(Deployment((stable,), ((canary, 50),))) as client:
        for _ in range(30):
            client.post("/predict", json={"instances": ROWS})
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert text.count("# TYPE notebook_deploy_requests_total counter") == 1
    counted = {
        s.labels["version"]: s.value
        for s in families["notebook_deploy_requests"].samples
        if s.name.endswith("_total") and s.labels["endpoint"] == "/predict"
    }
    assert set(counted) == {stable.version, canary.version} and sum(counted.values()) == 30
    info = {s.labels["version"] for s in families["notebook_deploy_model_info"].samples}
    assert info == {stable.version, canary.version}


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--canary", "flowers"], "is not REF=PERCENT"),
        (["--canary", "flowers:{canary}=150"], "from 0 to 100"),
        (["--canary", "flowers:{canary}=ten"], "is not a percent"),
        (["--canary", "flowers:0000dead=10"], "flowers:0000dead does not load"),
        (["--canary", "petals=10"], "is not a version of a model served here (flowers)"),
        (["--shadow", "petals"], "is not a version of a model served here (flowers)"),
        (["--sticky-header", "X-User"], "it needs --canary"),
    ],
)
def test_the_serve_options_are_checked(flowers, session_store, arguments, fragment):
    _, canary, _, _ = flowers
    arguments = [a.format(canary=canary.version) for a in arguments]
    result = CliRunner().invoke(
        cli, ["--store", str(session_store.root), "serve", f"flowers:{flowers[0].version}", *arguments]
    )
    assert result.exit_code == 2, result.output
    assert fragment in result.output


@pytest.mark.integration
def test_a_real_server_of_two_workers_splits_requests_by_the_canary(flowers, session_store, tmp_path):
    stable, canary, _, _ = flowers
    with cli_server(session_store.root, stable.ref, "--canary", f"{canary.ref}=30", "--workers", "2") as served:
        count, share = 400, 0.30
        with requests.Session() as session:
            versions = [
                session.post(served.url + "/predict", json={"instances": ROWS}, timeout=30).headers[VERSION_HEADER]
                for _ in range(count)
            ]
        expected = {canary.version: versions.count(canary.ref), stable.version: versions.count(stable.ref)}
        deadline = time.monotonic() + 30  # the other worker's counts reach /metrics within a second or so
        while (counted := predictions_counted(served.url)) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
    assert set(versions) == {stable.ref, canary.ref}
    spread = 2.5758 * math.sqrt(count * share * (1 - share))
    assert abs(versions.count(canary.ref) - count * share) <= spread
    assert counted == expected  # both workers' metrics, each version's, in one exposition
