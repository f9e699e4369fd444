"""The Grafana dashboard: every query names a metric that a real server's /metrics exports."""

from __future__ import annotations

import copy
import json
import re

from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import notebook_deploy as nd
from notebook_deploy.cli import cli
from notebook_deploy.serving.dashboard import grafana_dashboard

METRIC = re.compile(r"\b(notebook_deploy_\w+)")
SELECTED = re.compile(r"([A-Za-z_:][\w:]*)\s*[{\[]")  # a metric name before a {selector} or [range]


def queries(dashboard: dict) -> list[str]:
    found = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return found + [v["query"] for v in dashboard["templating"]["list"]]


def unknown_metrics(dashboard: dict, exported: set[str]) -> list[str]:
    """The metric names in the dashboard's queries that ``exported`` lacks, and selected names that are
    not notebook-deploy's."""
    names = {name for query in queries(dashboard) for name in METRIC.findall(query)}
    selected = {name for query in queries(dashboard) for name in SELECTED.findall(query)}
    return sorted((names - exported) | {n for n in selected if not n.startswith("notebook_deploy_")})


def test_every_query_names_a_metric_the_server_exports(pipeline, customers, store):
    frame, _ = customers
    bundle = nd.capture(pipeline, name="customers", sample=frame.head(), reference=frame, store=store)
    rows = frame.iloc[:150].to_dict(orient="records")
    with TestClient(nd.create_app(bundle, batching=True, drift_min_rows=10)) as client:
        for start in range(0, 150, 10):
            assert client.post("/predict", json={"instances": rows[start : start + 10]}).status_code == 200
        assert client.post("/predict", json={"instances": [{"age": "old"}]}).status_code == 422
        text = client.get("/metrics").text
    exported = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    assert "notebook_deploy_drift_psi" in exported and "notebook_deploy_batch_size_count" in exported
    dashboard = grafana_dashboard()
    assert len(queries(dashboard)) >= 8
    assert unknown_metrics(dashboard, exported) == []

    broken = copy.deepcopy(dashboard)  # the same check catches a renamed metric and a foreign one
    broken["panels"][0]["targets"][0]["expr"] = "rate(notebook_deploy_request_total[5m]) + up{job='x'}"
    assert unknown_metrics(broken, exported) == ["notebook_deploy_request_total", "up"]


def test_the_drift_threshold_is_marked_and_the_command_prints_the_dashboard():
    default = grafana_dashboard()
    drift = default["panels"][-1]
    steps = drift["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == nd.ServeSettings().drift_threshold and "0.2" in drift["title"]
    assert grafana_dashboard(0.3)["panels"][-1]["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.3
    assert sorted(p["id"] for p in default["panels"]) == list(range(1, len(default["panels"]) + 1))
    printed = CliRunner().invoke(cli, ["dashboard", "--drift-threshold", "0.3"])
    assert printed.exit_code == 0 and json.loads(printed.output) == grafana_dashboard(0.3)
