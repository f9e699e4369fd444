"""Several versions of a model as one Ray Serve application (targets.ray.deploy with canary=, shadow=,
sticky_header=): the canary's share, sticky callers, and a shadow that raises, on a real local Ray Serve,
split as the local server splits them (serving/split.py)."""

from __future__ import annotations

import math

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import notebook_deploy as nd
from notebook_deploy.errors import SettingError
from notebook_deploy.serving.router import VERSION_HEADER
from notebook_deploy.targets import ray as nd_ray


def _fails_on_large_flowers(rows):
    """Passes rows on, or raises when the first row's first feature is over 6.5 cm: the fitting rows and
    the stored sample (iris' first rows) pass, the rows the tests send (from row 50) make it raise."""
    if rows[0][0] > 6.5:
        raise RuntimeError("the shadow fails")
    return rows


@pytest.fixture(scope="module")
def versions(iris, session_store):
    """Three versions of "blooms": stable, canary, and a shadow whose model raises on the rows sent."""
    X, y = iris
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    stable = nd.capture(forest, name="blooms", sample=X[:5], store=session_store)
    canary = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="blooms", sample=X[:5], store=session_store)
    # capture ships this module's function by value: the replicas do not have the tests on their path
    shadow_model = make_pipeline(FunctionTransformer(_fails_on_large_flowers), LogisticRegression(max_iter=500)).fit(
        X, y
    )
    shadow = nd.capture(shadow_model, name="blooms", sample=X[:5], store=session_store)
    return stable, canary, shadow


@pytest.fixture(scope="module")
def on_ray(cluster, versions, session_store):
    stable, canary, shadow = versions
    deployment = nd_ray.deploy(
        stable,
        canary=[f"{canary.ref}=10"],
        shadow=[shadow.ref],
        sticky_header="X-User",
        ray_actor_options={"num_cpus": 0.25},
        store=session_store,
    )
    yield deployment
    if deployment.status() != "DELETED":
        deployment.delete()


# The scope of a GET /metrics sent to a version's replica as the ingress forwards requests.
_GET_METRICS = {
    "method": "GET",
    "path": "/metrics",
    "raw_path": b"/metrics",
    "root_path": "",
    "query_string": b"",
    "headers": [],
    "http_version": "1.1",
    "scheme": "http",
}


def _answers(deployment, rows, count, **headers):
    with requests.Session() as session:
        return [
            session.post(f"{deployment.url}/predict", json={"instances": rows}, headers=headers, timeout=30)
            for _ in range(count)
        ]


@pytest.mark.integration
def test_the_canary_gets_its_share_and_the_raising_shadow_changes_no_answer(on_ray, versions, iris):
    stable, canary, shadow = versions
    rows = iris[0][50:52].tolist()
    count, share = 1000, 0.10
    answers = _answers(on_ray, rows, count)
    assert {a.status_code for a in answers} == {200}
    by_version = {stable.ref: stable, canary.ref: canary}
    versions_seen = [a.headers[VERSION_HEADER] for a in answers]
    assert set(versions_seen) == {stable.ref, canary.ref}
    for answer in answers:  # each the answer of the version it names, never the shadow's
        assert answer.json() == {"predictions": by_version[answer.headers[VERSION_HEADER]].predict(rows).tolist()}
    # A 99% interval of the binomial count (normal approximation; n*p = 100 is large enough).
    spread = 2.5758 * math.sqrt(count * share * (1 - share))
    assert abs(versions_seen.count(canary.ref) - count * share) <= spread
    # the shadow got copies, and failed on them (its model raises in the replicas)
    from ray import serve

    handle = serve.get_deployment_handle(f"blooms-{shadow.version}", app_name=on_ray.name)
    status, _, body = handle.answer.remote(_GET_METRICS, b"").result()
    assert status == 200
    failed = [
        sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == "notebook_deploy_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("status", "").startswith("5")
    ]
    assert sum(failed) > 0


@pytest.mark.integration
def test_sticky_callers_never_switch_and_other_routes_reach_the_stable_version(on_ray, versions, iris):
    stable, canary, _ = versions
    rows = iris[0][50:51].tolist()
    reached: dict[str, set[str]] = {}
    for user in range(60):
        for answer in _answers(on_ray, rows, 3, **{"X-User": f"user-{user}"}):
            reached.setdefault(f"user-{user}", set()).add(answer.headers[VERSION_HEADER])
    assert all(len(seen) == 1 for seen in reached.values())
    metadata = requests.get(f"{on_ray.url}/metadata", timeout=30)
    assert metadata.headers[VERSION_HEADER] == stable.ref and metadata.json()["version"] == stable.version


def test_canary_and_shadow_are_checked_before_ray_is_reached(versions, forest_bundle, session_store):
    stable, canary, _ = versions
    with pytest.raises(SettingError, match="canary: .*percent must be from 0 to 100"):
        nd_ray.deploy(stable, canary=[f"{canary.ref}=120"], store=session_store)
    with pytest.raises(SettingError, match="is not a version of a model served here"):
        nd_ray.deploy(stable, shadow=[forest_bundle.ref], store=session_store)
    with pytest.raises(SettingError, match="sticky_header: .*needs --canary"):
        nd_ray.deploy(stable, sticky_header="X-User", store=session_store)
