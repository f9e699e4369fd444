"""The Open Inference Protocol over gRPC in a server of several versions and models (router.py, oip_grpc.py),
with the real tritonclient.grpc client: the canary's share, sticky callers, pinned versions, shadows that
cannot hurt, two models by name, keys, and versions switched while the server runs."""

from __future__ import annotations

import math
import os
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from readiness import wait_until_ready
from registries import free_port
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from tritonclient.utils import InferenceServerException

import notebook_deploy as nd
from notebook_deploy.keys import KeyStore
from notebook_deploy.serving.deployment import Deployment
from notebook_deploy.serving.protocols import grpc_predict_v2_pb2 as pb
from notebook_deploy.serving.protocols import grpc_predict_v2_pb2_grpc as pb_grpc
from notebook_deploy.serving.protocols.oip_grpc import INFER, VERSION_KEY
from notebook_deploy.serving.router import VERSION_HEADER, VersionRouter
from notebook_deploy.serving.settings import ServeSettings

ROWS = np.array([[5.9, 3.0, 4.2, 1.5], [6.3, 2.8, 5.1, 1.5]])  # near the classes' borders: the versions differ
TENSORS = {
    "inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(ROWS.shape), "data": ROWS.ravel().tolist()}]
}
SHARE = 0.30


class _Shadow:
    """Answers zeros; raises when ``$ND_TEST_SHADOW`` says so (set only after capture)."""

    def predict(self, rows):
        if os.environ.get("ND_TEST_SHADOW") == "raise":
            raise RuntimeError("the shadow fails")
        return np.zeros(len(rows), dtype=int)

    def predict_proba(self, rows):
        return np.eye(3)[self.predict(rows)]


@pytest.fixture(scope="module")
def served(iris, session_store, tmp_path_factory):
    """One server: "flowers" (a stable version, a canary at 30%, a shadow that raises, callers kept on one
    version by X-User) and "petals", behind keys, with gRPC; its tritonclient and its raw stub."""
    X, y = iris
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    stable = nd.capture(forest, name="flowers", sample=X[:5], store=session_store)
    other = RandomForestClassifier(n_estimators=3, random_state=1).fit(X, y)
    canary = nd.capture(other, name="flowers", sample=X[:5], store=session_store)
    shadow = nd.capture(_Shadow(), name="flowers", sample=X[:5], store=session_store)
    petals = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="petals", sample=X[:5], store=session_store)
    folder = tmp_path_factory.mktemp("grpc-keys")
    keys = KeyStore(folder / "keys.json", audit_log=folder / "audit.log")
    key, _ = keys.create("admin", "tests")
    port = free_port()
    settings = ServeSettings(grpc_port=port, keys_file=str(keys.path), audit_log=str(folder / "audit.log"))
    deployment = Deployment((stable, petals), ((canary, SHARE * 100),), (shadow,), sticky_header="X-User")
    router = VersionRouter(deployment, settings, seed=0)
    headers = {"authorization": f"Bearer {key}"}
    with pytest.MonkeyPatch.context() as patch, TestClient(router, headers=headers) as http:
        patch.setenv("ND_TEST_SHADOW", "raise")  # once captured: the shadow served raises on every copy
        wait_until_ready(http)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield SimpleNamespace(
                http=http,
                client=client,
                stub=pb_grpc.GRPCInferenceServiceStub(channel),
                headers=headers,
                stable=stable,
                canary=canary,
                shadow=shadow,
                petals=petals,
                models={stable.version: forest, canary.version: other},
            )
        client.close()


def _infer(served, model="flowers", version="", user=None):
    """A ModelInfer of ROWS asking for predict_proba, with the key (and an X-User value, when given)."""
    x = triton_grpc.InferInput("input-0", list(ROWS.shape), "FP64")
    x.set_data_from_numpy(ROWS)
    headers = {**served.headers, **({"x-user": user} if user is not None else {})}
    return served.client.infer(
        model,
        [x],
        model_version=version,
        outputs=[triton_grpc.InferRequestedOutput("predict_proba")],
        headers=headers,
    )


def _answered_by(answer):
    return answer.get_response().model_version


def test_the_canary_gets_its_share_of_grpc_calls_and_each_answer_is_its_versions(served):
    count = 400
    answers = [_infer(served) for _ in range(count)]
    versions = [_answered_by(a) for a in answers]
    assert set(versions) == {served.stable.version, served.canary.version}
    # A 99% interval of the binomial count (normal approximation; n*p = 120 is large enough).
    spread = 2.5758 * math.sqrt(count * SHARE * (1 - SHARE))
    assert abs(versions.count(served.canary.version) - count * SHARE) <= spread
    for answer, version in zip(answers, versions):
        assert answer.get_response().model_name == "flowers"
        np.testing.assert_array_equal(answer.as_numpy("predict_proba"), served.models[version].predict_proba(ROWS))


def test_every_answer_names_its_version_in_the_metadata_errors_included(served):
    request = pb.ModelInferRequest(model_name="flowers", outputs=[{"name": "predict_proba"}])
    request.inputs.add(name="input-0", datatype="FP64", shape=ROWS.shape, contents={"fp64_contents": ROWS.ravel()})
    metadata = tuple(served.headers.items())
    named = set()
    for _ in range(20):
        response, call = served.stub.ModelInfer.with_call(request, metadata=metadata)
        ref = dict(call.trailing_metadata())[VERSION_KEY]
        assert ref == f"flowers:{response.model_version}"
        named.add(ref)
    assert named == {served.stable.ref, served.canary.ref}
    bad = pb.ModelInferRequest(model_name="flowers")
    bad.inputs.add(name="input-0", datatype="FP64", shape=[1, 2], contents={"fp64_contents": [1.0, 2.0]})
    with pytest.raises(grpc.RpcError) as raised:
        served.stub.ModelInfer(bad, metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(raised.value.trailing_metadata())[VERSION_KEY] in {served.stable.ref, served.canary.ref}


def test_a_sticky_caller_always_meets_the_same_version_as_over_rest(served):
    reached: dict[str, set[str]] = {}
    for _ in range(3):
        for user in range(40):
            reached.setdefault(f"user-{user}", set()).add(_answered_by(_infer(served, user=f"user-{user}")))
    assert all(len(versions) == 1 for versions in reached.values())
    assert set().union(*reached.values()) == {served.stable.version, served.canary.version}
    for user in range(10):  # the same split decision: a caller meets one version whichever protocol it speaks
        rest = served.http.post("/v2/models/flowers/infer", json=TENSORS, headers={"X-User": f"user-{user}"})
        assert rest.headers[VERSION_HEADER] == f"flowers:{reached[f'user-{user}'].pop()}"


def test_a_version_named_is_the_one_that_answers(served):
    for version in (served.canary.version, served.stable.version):
        answers = [_infer(served, version=version) for _ in range(10)]
        assert {_answered_by(a) for a in answers} == {version}
        np.testing.assert_array_equal(answers[0].as_numpy("predict_proba"), served.models[version].predict_proba(ROWS))
    metadata = served.client.get_model_metadata("flowers", served.canary.version, headers=served.headers)
    assert (metadata.name, list(metadata.versions)) == ("flowers", [served.canary.version])
    assert served.client.is_model_ready("flowers", served.canary.version, headers=served.headers)


@pytest.mark.parametrize(
    ("model", "version", "status", "fragments"),
    [
        ("roses", "", "StatusCode.NOT_FOUND", ["model 'roses' is not served here", "flowers, petals"]),
        ("flowers", "0000", "StatusCode.NOT_FOUND", ["model 'flowers' has no version '0000'", "its versions are"]),
        ("", "", "StatusCode.INVALID_ARGUMENT", ["several models (flowers, petals)", "model_name"]),
    ],
)
def test_an_unknown_model_or_version_or_no_name_is_refused_naming_what_is_served(
    served, model, version, status, fragments
):
    for call in (
        lambda: _infer(served, model, version),
        lambda: served.client.get_model_metadata(model, version, headers=served.headers),
        lambda: served.client.is_model_ready(model, version, headers=served.headers),
    ):
        with pytest.raises(InferenceServerException) as raised:
            call()
        assert raised.value.status() == status
        assert all(fragment in raised.value.message() for fragment in fragments), raised.value.message()
    if version:
        assert served.stable.version in raised.value.message() and served.canary.version in raised.value.message()


def test_a_shadow_that_raises_changes_no_answer_and_counts_its_copies(served):
    before = _counted(served, served.shadow.version, "500")
    count = 20
    answers = [_infer(served) for _ in range(count)]
    assert {_answered_by(a) for a in answers} <= {served.stable.version, served.canary.version}
    for answer in answers:
        expected = served.models[_answered_by(answer)].predict_proba(ROWS)
        np.testing.assert_array_equal(answer.as_numpy("predict_proba"), expected)
    deadline = time.monotonic() + 30
    while (seen := _counted(served, served.shadow.version, "500")) < before + count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen >= before + count  # each copy reached the shadow, which failed, in its own metrics
    answered = sum(_counted(served, v, "200") for v in (served.stable.version, served.canary.version))
    assert answered >= count  # the calls answered are counted in the metrics of the versions that answered


def _counted(served, version: str, status: str) -> float:
    """The gRPC inference calls ``version`` answered with ``status`` (the REST status), from /metrics."""
    families = text_string_to_metric_families(served.http.get("/metrics").text)
    return sum(
        s.value
        for f in families
        if f.name == "notebook_deploy_requests"
        for s in f.samples
        if s.name.endswith("_total")
        and (s.labels["version"], s.labels["endpoint"], s.labels["status"]) == (version, INFER, status)
    )


def test_two_models_each_answer_under_their_own_name(served, iris):
    petals = _infer(served, "petals")
    assert (petals.get_response().model_name, _answered_by(petals)) == ("petals", served.petals.version)
    expected = LogisticRegression(max_iter=500).fit(*iris).predict_proba(ROWS)
    np.testing.assert_allclose(petals.as_numpy("predict_proba"), expected)
    flowers = _infer(served, "flowers")
    assert flowers.get_response().model_name == "flowers"
    for name, version in (("petals", served.petals.version), ("flowers", served.stable.version)):
        metadata = served.client.get_model_metadata(name, headers=served.headers)
        assert (metadata.name, list(metadata.versions)) == (name, [version])
    assert served.client.is_server_ready(headers=served.headers)


def test_the_keys_apply_to_grpc_calls(served):
    x = triton_grpc.InferInput("input-0", list(ROWS.shape), "FP64")
    x.set_data_from_numpy(ROWS)
    with pytest.raises(InferenceServerException) as raised:
        served.client.infer("petals", [x])
    assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
    assert served.client.is_server_live()  # health calls are open


def test_a_version_switched_or_rolled_back_is_what_grpc_reaches(flowers_pair):
    stable, canary, replacement = flowers_pair
    port = free_port()
    router = VersionRouter(Deployment((stable,), ((canary, 50),)), ServeSettings(grpc_port=port), seed=0)
    with TestClient(router) as http:
        wait_until_ready(http)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        x = triton_grpc.InferInput("input-0", list(ROWS.shape), "FP64").set_data_from_numpy(ROWS)

        def versions() -> set[str]:
            return {client.infer("flowers", [x]).get_response().model_version for _ in range(40)}

        assert versions() == {stable.version, canary.version}
        group = router.groups["flowers"]
        (canary_version,) = [v for v in group.versions if v.bundle.version == canary.version]
        group.drop(canary_version)  # what a rollback does to the group
        assert versions() == {stable.version}
        new = router.build(replacement)
        http.portal.call(router.start, new)  # what a Follower does once the new version is ready
        old = router.switch(new)
        assert versions() == {replacement.version}
        http.portal.call(router.retire, old, 5.0)
        client.close()


@pytest.fixture(scope="module")
def flowers_pair(iris, session_store):
    """Three versions of "flowers": a stable one, a canary, and the one that replaces the stable one."""
    X, y = iris
    return tuple(
        nd.capture(LogisticRegression(C=c, max_iter=500).fit(X, y), name="flowers", sample=X[:5], store=session_store)
        for c in (1.0, 0.5, 0.2)
    )
