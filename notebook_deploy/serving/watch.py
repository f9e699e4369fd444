"""Watching a running server from outside: its own ``/metrics`` (and ``/monitor/drift``) sampled into a
time series per version, and the Vega-Lite charts of it that the JupyterLab sidebar and the notebook
panel both show.

A ``Monitor`` scrapes the Prometheus text, parsed with prometheus_client's parser, and turns the change
of the counters and histograms between two scrapes into a point per version: requests per second, the
share of 5xx answers, p50 and p99 latency (interpolated within the histogram's buckets, as Prometheus'
``histogram_quantile`` does) and the mean rows per batched model call. The monitor's own scrapes
(``/metrics``, ``/monitor/drift``) and the health probes are left out of the counts. Drift is the
server's PSI gauges per version and feature, with the threshold from ``/monitor/drift``. The charts are
defined here once (``charts``) as Vega-Lite v5 specs with their data inline.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import requests

from ..errors import ServeError

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
VEGA_LITE_MIME = "application/vnd.vegalite.v5+json"
UNWATCHED_ENDPOINTS = frozenset({"/metrics", "/monitor/drift", "/healthz", "/readyz"})
HISTORY = 900  # points kept (one per version and scrape): ten minutes of three versions at two seconds
MIN_INTERVAL = 1.0  # seconds between scrapes, however many viewers ask
CHART_WIDTH = 260
CHART_HEIGHT = 120


class _Getter(Protocol):
    url: str

    def get(self, path: str, timeout: float = 60) -> requests.Response: ...


@dataclass
class _Totals:
    """One version's counters at one scrape (cumulative since the server started)."""

    requests: float = 0.0
    errors: float = 0.0
    latency: dict[float, float] = field(default_factory=dict)  # bucket upper bound -> cumulative count
    batch_sum: float = 0.0
    batch_count: float = 0.0


@dataclass
class Scrape:
    """What one read of ``/metrics`` and ``/monitor/drift`` found, at ``time`` (seconds since the epoch)."""

    time: float
    totals: dict[str, _Totals]
    psi: dict[str, dict[str, float]]  # version -> feature -> PSI
    threshold: float | None
    drift_message: str


def parse_metrics(text: str) -> tuple[dict[str, _Totals], dict[str, dict[str, float]]]:
    """The per-version totals and PSI gauges in a Prometheus exposition ``text``."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: collections.defaultdict[str, _Totals] = collections.defaultdict(_Totals)
    psi: collections.defaultdict[str, dict[str, float]] = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            version = labels.get("version")
            if version is None or labels.get("endpoint") in UNWATCHED_ENDPOINTS:
                continue
            name, value = sample.name, sample.value
            if name == "notebook_deploy_requests_total":
                totals[version].requests += value
                if labels["status"].startswith("5"):
                    totals[version].errors += value
            elif name == "notebook_deploy_request_duration_seconds_bucket":
                bound = float(labels["le"])
                latency = totals[version].latency
                latency[bound] = latency.get(bound, 0.0) + value
            elif name == "notebook_deploy_batch_size_sum":
                totals[version].batch_sum += value
            elif name == "notebook_deploy_batch_size_count":
                totals[version].batch_count += value
            elif name == "notebook_deploy_drift_psi":
                psi[version][labels["feature"]] = value
    return dict(totals), dict(psi)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a histogram given as cumulative counts by upper bound, interpolated linearly
    within its bucket as Prometheus' ``histogram_quantile`` does; None when it counted nothing. Written
    here because prometheus_client computes no quantiles."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the open top bucket: its lower edge, as Prometheus answers
            return lower + (bound - lower) * (rank - below) / (count - below) if count > below else bound
        lower, below = bound, count
    return lower


def point(before: _Totals, after: _Totals, seconds: float) -> dict[str, float | None]:
    """The rates of one version between two scrapes ``seconds`` apart."""
    answered = after.requests - before.requests
    latency = {bound: count - before.latency.get(bound, 0.0) for bound, count in after.latency.items()}
    calls = after.batch_count - before.batch_count
    p50, p99 = quantile(0.5, latency), quantile(0.99, latency)
    return {
        "requests_per_second": answered / seconds,
        "error_rate": (after.errors - before.errors) / answered if answered > 0 else None,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "batch_rows": (after.batch_sum - before.batch_sum) / calls if calls > 0 else None,
    }


class Monitor:
    """The time series of one running server, sampled from its own metrics by ``refresh``.

    ``server`` is a handle with ``url`` and ``get`` (``Server``, ``BundleClient``): its API key, if any,
    must be an admin's, as ``/metrics`` and ``/monitor/drift`` ask."""

    def __init__(self, server: _Getter, history: int = HISTORY, min_interval: float = MIN_INTERVAL) -> None:
        self.server = server
        self.min_interval = min_interval
        self.points: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self.last: Scrape | None = None
        self._lock = threading.Lock()

    def scrape(self) -> Scrape:
        """Read the server's metrics and drift report now."""
        now = time.time()
        totals, psi = parse_metrics(self._text("/metrics"))
        drift = self.server.get("/monitor/drift", timeout=30)
        if drift.status_code == 200:
            report = drift.json()
            threshold, message = float(report["threshold"]), str(report["message"])
        elif drift.status_code == 404:  # no reference statistics: the server's answer says how to get them
            threshold, message = None, _detail(drift)
        else:
            raise self._refused("/monitor/drift", drift)
        return Scrape(now, totals, psi, threshold, message)

    def refresh(self) -> dict[str, Any]:
        """Scrape (unless the last scrape is under ``min_interval`` old), add a point per version, and
        return ``charts()``."""
        with self._lock:
            last = self.last
            if last is None or time.time() - last.time >= self.min_interval:
                scrape = self.scrape()
                if last is not None:
                    self._add_points(last, scrape)
                self.last = scrape
            return self.charts()

    def _add_points(self, before: Scrape, after: Scrape) -> None:
        seconds = after.time - before.time
        stamp = datetime.fromtimestamp(after.time, timezone.utc).isoformat(timespec="milliseconds")
        for version, totals in sorted(after.totals.items()):
            rates = point(before.totals.get(version, _Totals()), totals, seconds)
            self.points.append({"time": stamp, "version": version, **rates})

    def charts(self) -> dict[str, Any]:
        """The Vega-Lite specs of every chart, and what they were made from."""
        scrape = self.last
        bars = [
            {"version": version, "feature": feature, "psi": value}
            for version, features in sorted((scrape.psi if scrape else {}).items())
            for feature, value in sorted(features.items())
        ]
        threshold = scrape.threshold if scrape else None
        points = list(self.points)
        return {
            "url": self.server.url,
            "updated": None if scrape is None else datetime.fromtimestamp(scrape.time, timezone.utc).isoformat(),
            "points": len(points),
            "drift": {"threshold": threshold, "message": scrape.drift_message if scrape else ""},
            "charts": {
                "requests": requests_chart(points),
                "latency": latency_chart(points),
                "errors": errors_chart(points),
                "batches": batch_chart(points),
                "drift": drift_chart(bars, threshold),
            },
        }

    def _text(self, path: str) -> str:
        response = self.server.get(path, timeout=30)
        if response.status_code != 200:
            raise self._refused(path, response)
        return response.text

    def _refused(self, path: str, response: requests.Response) -> ServeError:
        hint = " (it needs an admin key: start the monitor with one)" if response.status_code in (401, 403) else ""
        return ServeError(f"{self.server.url}{path} answered {response.status_code}{hint}: {_detail(response)}")


def _detail(response: requests.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]


# -- the charts -------------------------------------------------------------------------------------------
def _over_time(
    points: Iterable[dict[str, Any]], fields: dict[str, str], title: str, axis: str, number_format: str
) -> dict[str, Any]:
    """A line chart of ``fields`` (field -> the name a legend gives it) over time, a colour per version
    and a dash per field when there are several."""
    values = [
        {"time": p["time"], "version": p["version"], "series": name, "value": p[key]}
        for p in points
        for key, name in fields.items()
        if p[key] is not None
    ]
    encoding: dict[str, Any] = {
        "x": {"field": "time", "type": "temporal", "title": None, "axis": {"format": "%H:%M:%S"}},
        "y": {"field": "value", "type": "quantitative", "title": axis, "axis": {"format": number_format}},
        "color": {"field": "version", "type": "nominal", "title": "version"},
        "tooltip": [
            {"field": "time", "type": "temporal", "format": "%H:%M:%S"},
            {"field": "version", "type": "nominal"},
            {"field": "series", "type": "nominal"},
            {"field": "value", "type": "quantitative", "format": number_format},
        ],
    }
    if len(fields) > 1:
        encoding["strokeDash"] = {"field": "series", "type": "nominal", "title": None}
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": title,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": encoding,
    }


def requests_chart(points: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Requests per second by version."""
    return _over_time(points, {"requests_per_second": "requests/s"}, "Requests per second", "requests/s", ".3~s")


def latency_chart(points: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """p50 and p99 latency by version, in milliseconds."""
    return _over_time(points, {"p50_ms": "p50", "p99_ms": "p99"}, "Latency p50 and p99", "ms", ".3~s")


def errors_chart(points: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The share of 5xx answers by version."""
    return _over_time(points, {"error_rate": "5xx share"}, "Error rate (5xx share)", "share", ".1%")


def batch_chart(points: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean rows per batched model call by version."""
    return _over_time(points, {"batch_rows": "rows/call"}, "Rows per model call", "rows", ".3~s")


def drift_chart(bars: list[dict[str, Any]], threshold: float | None) -> dict[str, Any]:
    """Each feature's PSI as a bar per version, with the drift threshold as a red rule."""
    bar = {
        "mark": "bar",
        "encoding": {
            "x": {"field": "feature", "type": "nominal", "title": None, "sort": None},
            "xOffset": {"field": "version", "type": "nominal"},
            "y": {"field": "psi", "type": "quantitative", "title": "PSI"},
            "color": {"field": "version", "type": "nominal", "title": "version"},
            "tooltip": [
                {"field": "feature", "type": "nominal"},
                {"field": "version", "type": "nominal"},
                {"field": "psi", "type": "quantitative", "format": ".3f"},
            ],
        },
    }
    layers: list[dict[str, Any]] = [bar]
    if threshold is not None:
        layers.append(
            {
                "data": {"values": [{"threshold": threshold}]},
                "mark": {"type": "rule", "color": "#d62728", "strokeDash": [4, 3], "strokeWidth": 2},
                "encoding": {
                    "y": {"field": "threshold", "type": "quantitative"},
                    "tooltip": [{"field": "threshold", "type": "quantitative", "title": "drift threshold"}],
                },
            }
        )
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": "Drift (PSI) by feature" + (f", threshold {threshold:g}" if threshold is not None else ""),
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "data": {"values": bars},
        "layer": layers,
    }
