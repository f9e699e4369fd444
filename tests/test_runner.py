"""Servers with several worker processes, and graceful shutdown, over real HTTP on loopback."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

import notebook_deploy as nd

pytestmark = pytest.mark.integration


class _Pid:
    """Answers with the process id of the worker that ran it, after ``$ND_TEST_DELAY`` seconds."""

    def predict(self, rows):
        time.sleep(float(os.environ.get("ND_TEST_DELAY", "0")))
        return np.full(len(rows), os.getpid())


@pytest.fixture
def pid_bundle(store):
    return nd.capture(_Pid(), name="pid", sample=np.ones((3, 2)), store=store)


def _post_all(url: str, count: int, threads: int) -> list[requests.Response]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: requests.post(url, json={"instances": [[1.0, 2.0]]}, timeout=60), range(count)))


def _samples(metrics: str, name: str, **labels: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def test_two_workers_share_the_port_and_the_metrics_add_up(pid_bundle, monkeypatch):
    monkeypatch.setenv("ND_TEST_DELAY", "0.02")
    with nd.serve(pid_bundle, workers=2, batching=False) as server:
        answers = _post_all(server.url + "/predict", 60, threads=12)
        assert {a.status_code for a in answers} == {200}
        pids = {a.json()["predictions"][0] for a in answers}
        assert len(pids) == 2 and server.pid not in pids, pids
        labels = {"model": "pid", "version": pid_bundle.version}
        # Each worker folds its counts into the shared files once a second (metrics.FLUSH_SECONDS).
        deadline = time.monotonic() + 10
        while True:
            metrics = requests.get(server.url + "/metrics").text
            counted = _samples(metrics, "notebook_deploy_requests_total", endpoint="/predict", status="200", **labels)
            if counted >= 60 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert counted == 60
    assert _samples(metrics, "notebook_deploy_request_duration_seconds_count", endpoint="/predict", **labels) == 60
    assert _samples(metrics, "notebook_deploy_model_info", **labels) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_stopping_finishes_the_requests_in_flight(pid_bundle, monkeypatch, workers):
    monkeypatch.setenv("ND_TEST_DELAY", "1.5")
    server = nd.serve(pid_bundle, workers=workers, batching=False)
    try:
        with ThreadPoolExecutor(4) as pool:
            pending = [
                pool.submit(requests.post, server.url + "/predict", json={"instances": [[1.0, 2.0]]}, timeout=60)
                for _ in range(4)
            ]
            time.sleep(0.5)  # the requests are in the model when the stop comes
            server.stop(timeout=30)
            answers = [p.result() for p in pending]
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200] * 4
    assert "Waiting for connections to close" in server.logs() or "Shutting down" in server.logs()


def test_batching_over_real_http_gives_each_request_its_rows(forest_bundle, iris):
    X = iris[0]
    with nd.serve(forest_bundle, batching=True, max_batch_size=16) as server:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda row: server.predict(row[None, :]), X))
        metrics = requests.get(server.url + "/metrics").text
    np.testing.assert_array_equal(np.concatenate(answers), forest_bundle.predict(X))
    batches = _samples(metrics, "notebook_deploy_batch_size_count", method="predict")
    assert _samples(metrics, "notebook_deploy_batch_size_sum", method="predict") == len(X)
    assert batches < len(X)
