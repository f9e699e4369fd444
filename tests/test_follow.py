"""A server that follows its tag (serving/follow.py): a real `notebook-deploy serve NAME:TAG --follow`
process under load from a pool of threads while the tag moves; a version that fails to load or to
reproduce its sample is refused and the old one serves on."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from cli_server import cli_server
from click.testing import CliRunner
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy import audit
from notebook_deploy.cli import cli
from notebook_deploy.serving.deployment import Deployment
from notebook_deploy.serving.router import VERSION_HEADER
from notebook_deploy.serving.settings import ServeSettings

ROWS = [[5.1, 3.5, 1.4, 0.2]]
THREADS, MOST_PER_THREAD = 4, 3000  # the load is bounded however long the switch takes


class _RaisesWhenTold:
    """Answers zeros; raises once ``$ND_TEST_FOLLOW_RAISE`` is set (only in the server, after capture)."""

    def predict(self, rows):
        if os.environ.get("ND_TEST_FOLLOW_RAISE"):
            raise RuntimeError("the new model fails")
        return np.zeros(len(rows), dtype=int)


@pytest.fixture(scope="module")
def versions(forest, iris, tmp_path_factory):
    """A store with versions of "flowers": the first, a retrained one, one that raises, one to damage."""
    X, y = iris
    store = nd.Store(tmp_path_factory.mktemp("follow-store"))
    first = nd.capture(forest, name="flowers", sample=X[:5], store=store)
    retrained = nd.capture(
        RandomForestClassifier(n_estimators=3, random_state=1).fit(X, y), name="flowers", sample=X[:5], store=store
    )
    raising = nd.capture(_RaisesWhenTold(), name="flowers", sample=X[:5], store=store)
    damaged = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="flowers", sample=X[:5], store=store)
    return store, first, retrained, raising, damaged


def _metadata(url: str) -> dict:
    (entry,) = requests.get(url + "/metadata", timeout=30).json()
    return entry


@pytest.mark.integration
def test_a_tag_moved_under_load_switches_without_dropping_a_request(versions):
    store, first, retrained, _, _ = versions
    store.tag(first.ref, "live")
    stop, answers, failures = threading.Event(), [], []
    lock = threading.Lock()

    def load(url: str) -> None:
        with requests.Session() as session:
            for _ in range(MOST_PER_THREAD):
                if stop.is_set():
                    return
                sent = time.monotonic()
                try:
                    answer = session.post(url + "/predict", json={"instances": ROWS}, timeout=60)
                except requests.RequestException as error:  # a request dropped or refused by the server
                    with lock:
                        failures.append(error)
                    continue
                with lock:
                    answers.append((sent, time.monotonic(), answer.status_code, answer.headers.get(VERSION_HEADER)))

    def count(version: str | None = None) -> int:
        with lock:
            return sum(1 for a in answers if version is None or a[3] == version)

    switched_seen = threading.Event()

    def slow_body():  # a request given to the old version whose body is still coming after the switch
        yield b'{"instances": '
        switched_seen.wait(300)
        yield json.dumps(ROWS).encode() + b"}"

    # quiet: cli_server reads the server's standard error only at the end, and a full pipe would stall it
    with cli_server(store.root, "flowers:live", "--follow", "--log-level", "warning") as served:
        with ThreadPoolExecutor(THREADS + 1) as pool:
            running = [pool.submit(load, served.url) for _ in range(THREADS)]
            _wait(lambda: count() >= 200)
            slow = pool.submit(requests.post, served.url + "/predict", data=slow_body(), timeout=300)
            _wait(lambda: count() >= 250)
            store.tag(retrained.ref, "live")
            _wait(lambda: count(retrained.ref) >= 200)
            switched_seen.set()
            stop.set()
            for future in running:
                future.result()
            slow_answer = slow.result()
        metadata = _metadata(served.url)
    assert (slow_answer.status_code, slow_answer.headers[VERSION_HEADER]) == (200, first.ref)
    assert failures == []  # every request sent was answered
    assert {status for _, _, status, _ in answers} == {200}
    switched = min(answered for _, answered, _, version in answers if version == retrained.ref)
    after = [version for sent, _, _, version in answers if sent > switched]
    assert after and set(after) == {retrained.ref}  # once the new version answered, only it answers
    assert count(first.ref) > 0
    assert (metadata["version"], metadata["follow"]["state"]) == (retrained.version, "switched")
    lines = [e for e in audit.read(root=store) if e["event"] == "follow"]
    assert [(e["result"], e["serving"], e["to"]) for e in lines] == [("switched", first.ref, retrained.ref)]


@pytest.mark.integration
def test_a_version_that_fails_is_refused_and_the_old_one_serves_on(versions, monkeypatch):
    store, first, _, raising, damaged = versions
    store.tag(first.ref, "checked")
    (damaged.path / "model.pkl").write_bytes((damaged.path / "model.pkl").read_bytes() + b"\0")
    monkeypatch.setenv("ND_TEST_FOLLOW_RAISE", "1")  # the server process inherits it
    with cli_server(store.root, "flowers:checked", "--follow", "--log-level", "warning") as served:
        refused = {}
        for bad in (raising, damaged):
            store.tag(bad.ref, "checked")
            _wait(lambda bad=bad: _metadata(served.url)["follow"].get("refused") == bad.ref)
            refused[bad.version] = _metadata(served.url)
            answer = requests.post(served.url + "/predict", json={"instances": ROWS}, timeout=30)
            assert answer.status_code == 200 and answer.headers[VERSION_HEADER] == first.ref
    assert {m["version"] for m in refused.values()} == {first.version}
    assert {m["follow"]["state"] for m in refused.values()} == {"failed"}
    assert "'error'" in refused[raising.version]["follow"]["reason"]
    assert "BundleIntegrityError" in refused[damaged.version]["follow"]["reason"]
    assert "model.pkl" in refused[damaged.version]["follow"]["reason"]
    assert f"{raising.ref} was not switched to, {first.ref} serves on" in served.stderr
    lines = [e for e in audit.read(root=store) if e["event"] == "follow" and e["ref"] == "flowers:checked"]
    assert [(e["result"], e["serving"], e["to"]) for e in lines] == [
        ("failed", first.ref, raising.ref),
        ("failed", first.ref, damaged.ref),
    ]


def test_follow_needs_a_tag_of_a_store(versions, tmp_path):
    store, first, _, _, _ = versions
    shutil.copytree(first.path, tmp_path / "flowers")
    result = CliRunner().invoke(cli, ["--store", str(store.root), "serve", str(tmp_path / "flowers"), "--follow"])
    assert result.exit_code == 2, result.output
    assert "is a folder, not a tag of a store" in result.output


def test_the_deployment_carries_what_it_follows_to_workers(versions):
    store, first, _, _, _ = versions
    store.tag(first.ref, "carried")
    deployment = Deployment.parse(["flowers:carried"], load=lambda ref: nd.load(ref, store), follow=True)
    assert deployment.single is None  # a followed tag is served by the router, which can switch versions
    assert Deployment.from_json(deployment.to_json()).follow == ("flowers:carried",)
    assert "--follow" in ServeSettings(follow=True).arguments()


def _wait(condition, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.integration
def test_the_python_api_follows_a_tag_too(versions):
    store, first, _, _, _ = versions
    store.tag(first.ref, "from-python")
    with nd.serve("flowers:from-python", store=store, follow=True) as server:
        metadata = _metadata(server.url)
    assert (metadata["version"], metadata["follow"]["ref"]) == (first.version, "flowers:from-python")
