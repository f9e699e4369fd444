"""Reading a real server's /metrics in tests: how many requests each version answered."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def predictions_counted(url: str) -> dict[str, float]:
    """The ``/predict`` requests each version has answered, by version, from ``/metrics``."""
    metrics = requests.get(url + "/metrics", timeout=30).text
    return {
        s.labels["version"]: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "notebook_deploy_requests"
        for s in f.samples
        if s.name.endswith("_total") and s.labels["endpoint"] == "/predict"
    }
