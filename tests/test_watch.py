"""The monitoring view's core (serving/watch.py): a real server's metrics sampled into per-version series,
and the Vega-Lite charts made of them; and the notebook's MonitorWidget, which shows the same charts."""

from __future__ import annotations

import collections
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import notebook_deploy as nd
from notebook_deploy.errors import ServeError, ServerStoppedError
from notebook_deploy.keys import KeyStore
from notebook_deploy.serving import watch
from notebook_deploy.serving.client import BundleClient

ROOT = Path(__file__).resolve().parent.parent


def test_quantile_interpolates_within_buckets_as_prometheus_does():
    # 10 below 0.1, 10 more up to 0.2: the median is the top of the first bucket, p75 halfway up the second
    buckets = {0.1: 10.0, 0.2: 20.0, math.inf: 20.0}
    assert watch.quantile(0.5, buckets) == pytest.approx(0.1)
    assert watch.quantile(0.75, buckets) == pytest.approx(0.15)
    assert watch.quantile(0.99, {0.1: 0.0, math.inf: 5.0}) == 0.1  # the open top bucket: its lower edge
    assert watch.quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None


@pytest.fixture(scope="module")
def served(forest, iris, tmp_path_factory):
    store = nd.Store(tmp_path_factory.mktemp("watch-store"))
    bundle = nd.capture(forest, name="watched", sample=iris[0][:5], reference=iris[0], store=store)
    with nd.serve(bundle, drift_min_rows=50) as server:
        yield server


def _send(server, rows, times: int) -> None:
    for _ in range(times):
        assert server.post("predict", {"instances": rows}).status_code == 200


@pytest.mark.integration
def test_a_real_server_is_sampled_into_points_and_charts(served, iris):
    X = np.asarray(iris[0])
    shifted = X[:100].copy()
    shifted[:, 2] += 3  # petal length far from the reference: feature "2" drifts
    monitor = watch.Monitor(served, min_interval=0)
    first = monitor.refresh()
    assert first["points"] == 0 and first["charts"]["requests"]["data"]["values"] == []
    _send(served, shifted.tolist(), 20)
    time.sleep(0.3)
    second = monitor.refresh()
    values = second["charts"]["requests"]["data"]["values"]
    assert [v["version"] for v in values] == [served.bundle.version]
    (row,) = monitor.points
    # 20 requests over the interval between the two scrapes, none of the monitor's own counted
    interval = 20 / row["requests_per_second"]
    assert 0.3 <= interval < 30
    assert row["error_rate"] == 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    latency = second["charts"]["latency"]["data"]["values"]
    assert {v["series"] for v in latency} == {"p50", "p99"}
    drift = second["charts"]["drift"]
    bars = {b["feature"]: b["psi"] for b in drift["data"]["values"]}
    assert bars["2"] > 0.2  # the shifted feature is above the threshold
    assert drift["layer"][1]["data"]["values"] == [{"threshold": 0.2}]
    assert second["drift"]["threshold"] == 0.2
    _send(served, X[:10].tolist(), 3)
    third = monitor.refresh()
    assert len(third["charts"]["requests"]["data"]["values"]) == 2  # the series grows by a point a scrape


@pytest.mark.integration
def test_a_refused_request_is_no_error(served):
    monitor = watch.Monitor(served, min_interval=0)
    monitor.refresh()
    assert served.post("predict", {"instances": [[1, 2]]}).status_code == 422
    monitor.refresh()
    assert monitor.points[-1]["error_rate"] == 0


@pytest.mark.integration
def test_scrapes_closer_than_the_interval_are_one(served):
    monitor = watch.Monitor(served, min_interval=60)
    monitor.refresh()
    monitor.refresh()
    assert len(monitor.points) == 0


@pytest.mark.integration
def test_a_server_without_reference_says_how_to_get_one(forest, store):
    bundle = nd.capture(forest, name="no-reference", store=store)  # no sample: no reference either
    with nd.serve(bundle) as server:
        charts = watch.Monitor(server).refresh()
    assert charts["drift"]["threshold"] is None and "reference=X_train" in charts["drift"]["message"]
    assert len(charts["charts"]["drift"]["layer"]) == 1  # no threshold rule without a threshold


@pytest.mark.integration
def test_a_server_that_needs_a_key_is_refused_with_what_to_do(forest_bundle, tmp_path):
    keys = KeyStore(tmp_path / "keys.json", audit_log=tmp_path / "audit.log")
    predict_key, _ = keys.create("predict", "client")
    admin_key, _ = keys.create("admin", "ops")
    with nd.serve(forest_bundle, auth=True, keys_file=str(tmp_path / "keys.json"), api_key=predict_key) as server:
        with pytest.raises(ServeError, match="answered 403.*admin key"):
            watch.Monitor(server).refresh()
    with nd.serve(forest_bundle, auth=True, keys_file=str(tmp_path / "keys.json"), api_key=admin_key) as server:
        assert watch.Monitor(server).refresh()["url"] == server.url


@pytest.mark.integration
def test_a_stopped_server_says_so(forest_bundle):
    server = nd.serve(forest_bundle)
    server.stop()
    with pytest.raises(ServerStoppedError, match="has stopped"):
        watch.Monitor(server).refresh()


def test_the_sidebar_tests_draw_the_charts_these_builders_make():
    # labextension/src/__tests__/monitor-charts.json feeds the Jest tests of the monitor view; its charts
    # must be what the builders make of its points, so that the sidebar is tested on the real specs.
    fixture = json.loads((ROOT / "labextension/src/__tests__/monitor-charts.json").read_text())
    points, bars = fixture["points"], fixture["bars"]
    assert fixture["charts"] == {
        "requests": watch.requests_chart(points),
        "latency": watch.latency_chart(points),
        "errors": watch.errors_chart(points),
        "batches": watch.batch_chart(points),
        "drift": watch.drift_chart(bars, fixture["threshold"]),
    }


@pytest.mark.integration
def test_the_notebook_widget_shows_the_same_charts_and_refreshes_live(served, iris):
    from notebook_deploy.jupyter.monitor import MonitorWidget

    widget = MonitorWidget(served, interval=0.2)
    assert "not read yet" in repr(widget)
    widget.refresh()
    assert [o["data"][watch.VEGA_LITE_MIME]["title"] for o in widget.output.outputs][0] == "Requests per second"
    assert len(widget.output.outputs) == 5
    widget.monitor.min_interval = 0
    widget.live.value = True
    try:
        deadline = time.monotonic() + 30
        while widget.answer is None or widget.answer["points"] < 2:
            _send(served, np.asarray(iris[0])[:5].tolist(), 2)
            assert time.monotonic() < deadline, repr(widget)
            time.sleep(0.1)
    finally:
        widget.live.value = False
    widget.monitor.min_interval = 3600  # no more reads: the charts stay those of the points now
    widget.refresh()
    spec = widget.output.outputs[0]["data"][watch.VEGA_LITE_MIME]
    assert spec == watch.requests_chart(list(widget.monitor.points))  # the sidebar's chart, made by the same code
    assert f"monitor of {served.url}:" in repr(widget) and "points" in repr(widget)
    widget.close()


@pytest.mark.integration
def test_the_notebook_widget_says_when_its_server_stopped(forest_bundle):
    from notebook_deploy.jupyter.monitor import MonitorWidget

    server = nd.serve(forest_bundle)
    widget = MonitorWidget(server)
    server.stop()
    widget.live.value = True
    deadline = time.monotonic() + 10
    while widget.live.value:  # Live turns itself off on a failure
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "has stopped" in repr(widget) and "has stopped" in widget.status.value


class _FailsOnFirstAbove:
    """Answers zeros, and raises (a 500) for a request with a first value above ``limit``."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def predict(self, rows):
        if (np.asarray(rows)[:, 0] > self.limit).any():
            raise RuntimeError("injected failure")
        return np.zeros(len(rows), dtype=int)


@pytest.mark.integration
def test_a_canary_gets_its_own_line_in_every_chart(forest, iris, store, tmp_path):
    X, y = iris
    stable = nd.capture(forest, name="two", sample=X[:5], reference=X, store=store)
    other = nd.capture(_FailsOnFirstAbove(7.5), name="two", sample=X[:5], store=store)
    ready = tmp_path / "ready.json"
    command = [sys.executable, "-m", "notebook_deploy", "--store", str(store.root), "serve", stable.ref]
    command += ["--canary", f"{other.ref}=50", "--port", "0", "--ready-file", str(ready), "--drift-min-rows", "20"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        client = BundleClient(stable, json.loads(ready.read_text())["url"])
        monitor = watch.Monitor(client, min_interval=0)
        monitor.refresh()
        statuses = collections.Counter()
        for i in range(40):
            rows = np.asarray(X)[:5].copy()
            rows[:, 0] += 3 * (i % 2)  # every other request: a first value above 7.5, which the canary fails
            statuses[client.post("predict", {"instances": rows.tolist()}).status_code] += 1
        charts = monitor.refresh()["charts"]
        client.close()
    finally:
        process.terminate()
        process.wait(30)
    for name in ("requests", "latency", "errors", "batches"):
        assert {v["version"] for v in charts[name]["data"]["values"]} == {stable.version, other.version}, name
    shares = {v["version"]: v["value"] for v in charts["requests"]["data"]["values"]}
    assert all(share > 0 for share in shares.values())
    errors = {v["version"]: v["value"] for v in charts["errors"]["data"]["values"]}
    assert statuses[500] > 0 and errors[stable.version] == 0 and 0 < errors[other.version] < 1, (statuses, errors)
    # drift per version: each compares its own window with its own reference (the canary's is its sample)
    assert {bar["version"] for bar in charts["drift"]["data"]["values"]} == {stable.version, other.version}
