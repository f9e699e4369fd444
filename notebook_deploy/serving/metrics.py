"""Prometheus metrics of a server, with the model's name and version as labels, right across workers.

With one worker the metrics live in the process. With several, each worker writes its values to files in
``$PROMETHEUS_MULTIPROC_DIR`` (set by the runner before the workers start) and ``/metrics`` sums them, as
prometheus_client's multiprocess mode does; gauges of live values are summed over live workers.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from . import auth

if TYPE_CHECKING:
    from .app import ServedModel

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Metrics:
    """The server's metrics, the middleware that counts requests, and the ``/metrics`` route."""

    def __init__(self, served: "ServedModel") -> None:
        self.served = served
        self.registry = CollectorRegistry()
        model = {"model": served.bundle.name, "version": served.bundle.version}
        labels = list(model)
        self.requests = Counter(
            "notebook_deploy_requests", "Requests answered, by route and HTTP status",
            [*labels, "endpoint", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "notebook_deploy_request_duration_seconds", "Time from request to answer, by route",
            [*labels, "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "notebook_deploy_batch_size", "Rows per model call made by the batcher",
            [*labels, "method"], buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge(
            "notebook_deploy_requests_in_flight", "Requests being answered",
            labels, registry=self.registry, multiprocess_mode="livesum",
        ).labels(**model)
        self.queue_depth = Gauge(
            "notebook_deploy_queue_depth", "Inference requests accepted and not yet answered",
            labels, registry=self.registry, multiprocess_mode="livesum",
        ).labels(**model)
        Gauge(
            "notebook_deploy_model_info", "The model served: always 1, with its name and version as labels",
            labels, registry=self.registry, multiprocess_mode="max",
        ).labels(**model).set(1)
        self._model = model
        self.before_exposition: list[Callable[[], Any]] = []  # run before each /metrics answer (drift gauges)
        self._requests: dict[tuple[str, int], Any] = {}
        self._latencies: dict[str, Any] = {}
        served.predictor.batch_observers.append(
            lambda method, rows: self.batch_size.labels(**model, method=method).observe(rows)
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app`` so that every HTTP request is counted and timed (as ``app.add_middleware`` wants)."""
        in_flight = self.in_flight

        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            status = 500
            start = time.perf_counter()

            async def send_status(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            in_flight.inc()
            try:
                await app(scope, receive, send_status)
            finally:
                self.record(scope, status, start)

        return counted

    def record(self, scope: dict[str, Any], status: int, start: float) -> None:
        """Count a request that ``in_flight.inc()`` announced and that was answered with ``status``; its
        route is ``scope["route"]`` (or ``unmatched``) and it started at ``start`` (``perf_counter``)."""
        self.in_flight.dec()
        self.queue_depth.set(self.served.predictor.pending)
        route = scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        key = (endpoint, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(**self._model, endpoint=endpoint, status=str(status))
        counter.inc()
        timer = self._latencies.get(endpoint)
        if timer is None:
            timer = self._latencies[endpoint] = self.latency.labels(**self._model, endpoint=endpoint)
        timer.observe(time.perf_counter() - start)

    def add_routes(self) -> None:
        async def metrics() -> Response:
            return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)

        self.served.route(
            "/metrics", metrics, access=auth.ADMIN, methods=["GET"], response_class=Response,
            summary="Prometheus metrics: requests, latency, batch sizes, queue depth, drift",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format, summed over every worker when there are several."""
        for hook in self.before_exposition:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a failing hook must not take the metrics down
                logging.getLogger("notebook_deploy.serving").exception("updating metrics before exposition failed")
        if os.environ.get(MULTIPROCESS_VARIABLE):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
