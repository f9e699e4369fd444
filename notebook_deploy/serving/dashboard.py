"""A Grafana dashboard for the Prometheus metrics a server exports, per model and per version.

Made here rather than kept as a hand-edited JSON file so that the drift threshold it marks is the
server's own default, and so that ``notebook-deploy dashboard`` prints what this version exports.
``tests/test_dashboard.py`` scrapes a real server's ``/metrics`` and checks that every query names a
metric that is there. Import it in Grafana (Dashboards → New → Import) and pick the Prometheus data
source that scrapes the servers.
"""

from __future__ import annotations

from typing import Any

from .settings import ServeSettings

_MODEL = 'model=~"$model"'
_DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
_WINDOW = "$__rate_interval"


def grafana_dashboard(drift_threshold: float | None = None) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schema 39): traffic, errors, latency, batching, queues,
    and per-feature drift with ``drift_threshold`` (the server's default when None) marked."""
    threshold = ServeSettings().drift_threshold if drift_threshold is None else drift_threshold
    panels = [
        _timeseries(
            "Requests per second, by version",
            f"sum by (version) (rate(notebook_deploy_requests_total{{{_MODEL}}}[{_WINDOW}]))",
            "reqps",
            (0, 0),
        ),
        _timeseries(
            "Error rate (5xx share), by version",
            f'sum by (version) (rate(notebook_deploy_requests_total{{{_MODEL}, status=~"5.."}}[{_WINDOW}])) / '
            f"sum by (version) (rate(notebook_deploy_requests_total{{{_MODEL}}}[{_WINDOW}]))",
            "percentunit",
            (12, 0),
        ),
        _timeseries(
            "Latency p50 and p99, by version",
            [
                (
                    f"histogram_quantile({q}, sum by (le, version) "
                    f"(rate(notebook_deploy_request_duration_seconds_bucket{{{_MODEL}}}[{_WINDOW}])))",
                    f"p{round(q * 100)} {{{{version}}}}",
                )
                for q in (0.5, 0.99)
            ],
            "s",
            (0, 8),
        ),
        _timeseries(
            "Rows per batched model call, by version",
            f"sum by (version) (rate(notebook_deploy_batch_size_sum{{{_MODEL}}}[{_WINDOW}])) / "
            f"sum by (version) (rate(notebook_deploy_batch_size_count{{{_MODEL}}}[{_WINDOW}]))",
            "short",
            (12, 8),
        ),
        _timeseries(
            "Requests in flight and queued",
            [
                (f"sum by (version) (notebook_deploy_requests_in_flight{{{_MODEL}}})", "in flight {{version}}"),
                (f"sum by (version) (notebook_deploy_queue_depth{{{_MODEL}}})", "queued {{version}}"),
            ],
            "short",
            (0, 16),
        ),
        {
            "type": "bargauge",
            "title": f"Drift: PSI per feature (drifted above {threshold:g})",
            "gridPos": {"x": 12, "y": 16, "w": 12, "h": 8},
            "datasource": _DATASOURCE,
            "targets": [
                {
                    "refId": "A",
                    "expr": f"max by (feature) (notebook_deploy_drift_psi{{{_MODEL}}})",
                    "legendFormat": "{{feature}}",
                    "instant": True,
                }
            ],
            "options": {"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True},
            "fieldConfig": {
                "defaults": {
                    "min": 0,
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "green", "value": None}, {"color": "red", "value": threshold}],
                    },
                },
                "overrides": [],
            },
        },
    ]
    for number, panel in enumerate(panels, 1):
        panel["id"] = number
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "title": "notebook-deploy",
        "uid": "notebook-deploy",
        "tags": ["notebook-deploy"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [
                {
                    "name": "model",
                    "label": "model",
                    "type": "query",
                    "datasource": _DATASOURCE,
                    "query": "label_values(notebook_deploy_model_info, model)",
                    "includeAll": True,
                    "multi": True,
                    "refresh": 2,
                }
            ]
        },
        "panels": panels,
    }


def _timeseries(title: str, queries: str | list[tuple[str, str]], unit: str, where: tuple[int, int]) -> dict[str, Any]:
    """A time series panel of half the width; one query is drawn per version."""
    targets = [(queries, "{{version}}")] if isinstance(queries, str) else queries
    return {
        "type": "timeseries",
        "title": title,
        "gridPos": {"x": where[0], "y": where[1], "w": 12, "h": 8},
        "datasource": _DATASOURCE,
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }
