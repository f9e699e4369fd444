"""Prometheus metrics of a served app, in-process."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import notebook_deploy as nd


def _values(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_are_counted_by_route_and_status_with_model_labels(forest_bundle):
    with TestClient(nd.create_app(forest_bundle, batching=False)) as client:
        for _ in range(3):
            assert client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
        assert client.post("/predict", json={"instances": [[1]]}).status_code == 422
        assert (
            client.post("/predict_proba", content=b"{", headers={"content-type": "application/json"}).status_code == 400
        )
        assert client.get("/nowhere").status_code == 404
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    values = _values(response.text)
    model = {("model", forest_bundle.name), ("version", forest_bundle.version)}

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset(model | set(labels.items())))]

    assert value("notebook_deploy_requests_total", endpoint="/predict", status="200") == 3
    assert value("notebook_deploy_requests_total", endpoint="/predict", status="422") == 1
    assert value("notebook_deploy_requests_total", endpoint="/predict_proba", status="400") == 1
    assert value("notebook_deploy_requests_total", endpoint="unmatched", status="404") == 1
    assert value("notebook_deploy_request_duration_seconds_count", endpoint="/predict") == 4
    assert value("notebook_deploy_model_info") == 1
    assert value("notebook_deploy_requests_in_flight") == 1  # the /metrics request itself
    assert value("notebook_deploy_queue_depth") == 0


def test_two_apps_in_one_process_keep_their_own_metrics(forest_bundle, pipeline_bundle):
    with TestClient(nd.create_app(forest_bundle)) as first, TestClient(nd.create_app(pipeline_bundle)) as second:
        first.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert f'model="{forest_bundle.name}"' in first.get("/metrics").text
        assert f'model="{forest_bundle.name}"' not in second.get("/metrics").text


def test_folding_durations_into_a_histogram_matches_observing_each():
    from prometheus_client import CollectorRegistry, Histogram

    from notebook_deploy.serving.metrics import LATENCY_BUCKETS, _observe_all

    amounts = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 42.0, 0.0]
    folded, observed = CollectorRegistry(), CollectorRegistry()
    _observe_all(Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=folded), amounts)
    one_by_one = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=observed)
    for amount in amounts:
        one_by_one.observe(amount)

    def samples(registry):
        return [(s.name, s.labels, s.value) for m in registry.collect() for s in m.samples if s.name != "h_created"]

    assert samples(folded) == samples(observed)
    assert ("h_count", {}, len(amounts)) in samples(folded)
