"""Automatic rollback of canaries (serving/rollback.py): a canary that fails a fifth of its requests, is
much slower than the stable version, or drifts far more than it, is taken out of rotation, logged and
audited; a healthy one stays."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import notebook_deploy as nd
from notebook_deploy import audit
from notebook_deploy.cli import cli
from notebook_deploy.serving.deployment import Deployment
from notebook_deploy.serving.router import VERSION_HEADER, VersionRouter
from notebook_deploy.serving.settings import ServeSettings

MOST = 2000  # requests sent at most, whatever happens


class _FailsOnAFifth:
    """Answers zeros, and raises on rows whose first value is 100 or more and a multiple of 5: a fifth of
    the requests the test sends (the stored sample, flowers, is below 100)."""

    def predict(self, rows):
        if any(row[0] >= 100 and int(row[0]) % 5 == 0 for row in np.asarray(rows)):
            raise RuntimeError("injected failure")
        return np.zeros(len(rows), dtype=int)


class _Slow:
    """Answers zeros after 30 ms (the stable forest answers in about one)."""

    def predict(self, rows):
        time.sleep(0.03)
        return np.zeros(len(rows), dtype=int)


@pytest.fixture(scope="module")
def canaries(forest, iris, session_store):
    """Versions of "judged": the stable forest, a canary that fails a fifth of requests, a slow one."""
    models = (forest, _FailsOnAFifth(), _Slow())
    return tuple(nd.capture(model, name="judged", sample=iris[0][:5], store=session_store) for model in models)


def _run(stable, canary, settings: ServeSettings, until_rolled_back: bool = True):
    """Send requests (row i: [100 + i, 3.5, 1.4, 0.2]) until the canary is rolled back and 200 more have
    been answered, or ``MOST``: the (status, version) of each and the metadata at the end."""
    router = VersionRouter(Deployment((stable,), ((canary, 50),)), settings, seed=0)
    answers, rolled_back_at = [], None
    with TestClient(router) as client:
        for i in range(MOST):
            answer = client.post("/predict", json={"instances": [[100.0 + i, 3.5, 1.4, 0.2]]})
            answers.append((answer.status_code, answer.headers[VERSION_HEADER]))
            if rolled_back_at is None and router.groups["judged"].rolled_back:
                rolled_back_at = i
            if rolled_back_at is not None and i - rolled_back_at >= 200:
                break
        metadata = client.get("/metadata").json()
    return answers, rolled_back_at, metadata


def test_a_canary_failing_a_fifth_of_requests_is_rolled_back_and_audited(canaries, tmp_path):
    stable, failing, _ = canaries
    log = tmp_path / "audit.log"
    settings = ServeSettings(rollback_error_rate=0.05, rollback_min_requests=50, audit_log=str(log))
    answers, at, metadata = _run(stable, failing, settings)
    assert at is not None
    before, after = answers[: at + 1], answers[at + 1 :]
    assert {status for status, version in answers if version == stable.ref} == {200}  # the stable never failed
    assert {status for status, version in before if version == failing.ref} == {200, 500}
    assert len(after) == 200 and set(after) == {(200, stable.ref)}  # only the stable answers after
    (entry,) = metadata
    assert entry["version"] == stable.version
    (rolled,) = entry["rolled_back"]
    assert rolled["model"] == failing.ref and "error rate" in rolled["reason"]
    (line,) = [e for e in audit.read(log) if e["event"] == "rollback"]
    assert (line["canary"], line["stable"]) == (failing.ref, stable.ref)
    assert line["error_rate"] > 0.05 and line["stable_error_rate"] == 0


def test_a_canary_much_slower_than_the_stable_version_is_rolled_back(canaries, tmp_path):
    stable, _, slow = canaries
    settings = ServeSettings(rollback_latency_ratio=5, rollback_min_requests=30, audit_log=str(tmp_path / "a.log"))
    answers, at, metadata = _run(stable, slow, settings)
    assert at is not None and {status for status, _ in answers} == {200}
    assert "p99 latency" in metadata[0]["rolled_back"][0]["reason"]


def test_a_healthy_canary_stays(canaries, tmp_path):
    stable, _, _ = canaries
    healthy = nd.capture(_FailsOnAFifth(), name="judged", sample=[[5.1, 3.5, 1.4, 0.2]], store=None)
    settings = ServeSettings(rollback_error_rate=0.05, rollback_min_requests=50, audit_log=str(tmp_path / "a.log"))
    router = VersionRouter(Deployment((stable,), ((healthy, 50),)), settings, seed=0)
    with TestClient(router) as client:
        answers = [client.post("/predict", json={"instances": [[1.0 + i % 50, 3.5, 1.4, 0.2]]}) for i in range(300)]
        metadata = client.get("/metadata").json()
    assert {a.status_code for a in answers} == {200}
    assert {a.headers[VERSION_HEADER] for a in answers} == {stable.ref, healthy.ref}
    assert [m["role"] for m in metadata] == ["stable", "canary"] and "rolled_back" not in metadata[0]


def test_rollback_thresholds_need_a_canary(canaries, session_store):
    stable, _, _ = canaries
    result = CliRunner().invoke(
        cli, ["--store", str(session_store.root), "serve", stable.ref, "--rollback-error-rate", "0.05"]
    )
    assert result.exit_code == 2 and "'--rollback-error-rate': judges canaries: it needs --canary" in result.output
    drift = ["--store", str(session_store.root), "serve", stable.ref, "--rollback-drift", "0"]
    result = CliRunner().invoke(cli, drift)
    assert result.exit_code == 2 and "'--rollback-drift': judges canaries" in result.output


def _logistic(shift: float, seed: int, store) -> nd.Bundle:
    """A model of "drifting" trained, and given its drift reference, on four features around ``shift``."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = rng.normal(shift, 1.0, (500, 4))
    y = (X.sum(axis=1) > 4 * shift).astype(int)
    model = LogisticRegression().fit(X, y)
    return nd.capture(model, name="drifting", sample=X[:5], reference=X, store=store)


@pytest.mark.parametrize("canary_shift", [0.0, 3.0])
def test_a_canary_trained_on_data_unlike_the_traffic_is_rolled_back_for_drift(canary_shift, session_store, tmp_path):
    """Traffic like the stable version's reference: a canary whose reference sits 3 standard deviations
    away drifts far more than the stable version, and is rolled back; one trained like it stays."""
    stable, canary = _logistic(0.0, 0, session_store), _logistic(canary_shift, 1, session_store)
    log = tmp_path / "audit.log"
    settings = ServeSettings(rollback_drift=0.2, rollback_min_requests=50, audit_log=str(log))
    router = VersionRouter(Deployment((stable,), ((canary, 50),)), settings, seed=0)
    rows = np.random.default_rng(7).normal(0.0, 1.0, (MOST, 4))
    # Drift reports are computed every 5 s in the background: traffic goes on for three of them past the
    # rows the windows need (the healthy canary), or until the rollback (at most a minute).
    start = time.monotonic()
    with TestClient(router) as client:
        for row in itertools.cycle(rows):
            assert client.post("/predict", json={"instances": [row.tolist()]}).status_code == 200
            elapsed = time.monotonic() - start
            if router.groups["drifting"].rolled_back or elapsed > (60 if canary_shift else 16):
                break
        rolled_back = router.groups["drifting"].rolled_back
    if canary_shift == 0.0:
        assert rolled_back == []
        return
    (rolled,) = rolled_back
    assert rolled["model"] == canary.ref and rolled["reason"].startswith("drift: largest PSI")
    assert rolled["psi"] - rolled["stable_psi"] > 0.2
    (line,) = [e for e in audit.read(log) if e["event"] == "rollback"]
    assert line["canary"] == canary.ref and line["psi"] == rolled["psi"]
