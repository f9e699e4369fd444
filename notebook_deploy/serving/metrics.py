"""Prometheus metrics of a server, with the model's name and version as labels, right across workers.

With one worker the metrics live in the process. With several, each worker writes its values to files in
``$PROMETHEUS_MULTIPROC_DIR`` (set by the runner before the workers start) and ``/metrics`` sums them, as
prometheus_client's multiprocess mode does; gauges of live values are summed over live workers.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Histogram

    from .served import ServedModel

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

FLUSH_SECONDS = 1.0
FLUSH_EVERY_REQUESTS = 10_000  # bounds what is held between flushes when requests come fast

# prometheus_client's CONTENT_TYPE_LATEST, written here so that the route's declaration does not import it
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class _Instruments:
    """The prometheus_client metrics of one app, in their own registry."""

    def __init__(self, model: dict[str, str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        labels = list(model)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "notebook_deploy_requests",
            "Requests answered, by route and HTTP status",
            [*labels, "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "notebook_deploy_request_duration_seconds",
            "Time from request to answer, by route",
            [*labels, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "notebook_deploy_batch_size",
            "Rows per model call made by the batcher",
            [*labels, "method"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "notebook_deploy_requests_in_flight",
            "Requests being answered",
            labels,
            registry=self.registry,
            multiprocess_mode="livesum",
        ).labels(**model)
        self.queue_depth = Gauge(
            "notebook_deploy_queue_depth",
            "Inference requests accepted and not yet answered",
            labels,
            registry=self.registry,
            multiprocess_mode="livesum",
        ).labels(**model)
        Gauge(
            "notebook_deploy_model_info",
            "The model served: always 1, with its name and version as labels",
            labels,
            registry=self.registry,
            multiprocess_mode="max",
        ).labels(**model).set(1)


class Metrics:
    """The server's metrics, the middleware that counts HTTP requests (``count``: gRPC calls), and the
    ``/metrics`` route."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served
        served.metrics = self  # where the gRPC service counts its calls
        self._model = {"model": served.bundle.name, "version": served.bundle.version}
        self._instruments: _Instruments | None = None
        self._making = threading.Lock()
        self.before_exposition: list[Callable[[], Any]] = []  # run before each /metrics answer (drift gauges)
        # Requests and batches are tallied in plain Python and folded into prometheus_client before each
        # answer to /metrics and once a second (``flush``): its counters, histograms and gauges each take a
        # lock per update, which cost about 5 µs of a request's 100 in-process. So prometheus_client is
        # first needed (and imported) by the first flush, a second after the server starts, not before.
        self.in_flight = 0
        self._counts: defaultdict[tuple[str, int], int] = defaultdict(int)
        self._durations: defaultdict[str, list[float]] = defaultdict(list)
        self._batches: defaultdict[str, list[float]] = defaultdict(list)
        self._unflushed = 0
        # Flushed once a second, so that other workers' /metrics see this one's counts, and at the end.
        served.every(FLUSH_SECONDS, self._flush_job, "flushing metrics")
        served.shutdown.append(self._flush_job)
        served.predictor.batch_observers.append(self._on_batch)

    @property
    def instruments(self) -> _Instruments:
        """The Prometheus metrics, made (and prometheus_client imported) on first use: by the event loop's
        flush or by a drift report in a worker thread, whichever comes first."""
        with self._making:
            if self._instruments is None:
                self._instruments = _Instruments(self._model)
            return self._instruments

    @property
    def registry(self) -> CollectorRegistry:
        """The registry of this app's metrics, where other parts (drift) add theirs."""
        return self.instruments.registry

    def _on_batch(self, method: str, rows: int) -> None:
        self._batches[method].append(rows)
        self._unflushed += 1

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app`` so that every HTTP request is counted and timed (as ``app.add_middleware`` wants)."""

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

            self.in_flight += 1
            try:
                await app(scope, receive, send_status)
            finally:
                self.record(scope, status, start)

        return counted

    def record(self, scope: Mapping[str, Any], status: int, start: float) -> None:
        """Count an HTTP request that ``in_flight += 1`` announced and that was answered with ``status``; its
        route is ``scope["route"]`` (or ``unmatched``) and it started at ``start`` (``perf_counter``)."""
        route = scope.get("route")
        self.count(route.path if route is not None else "unmatched", status, start)

    def count(self, endpoint: str, status: int, start: float) -> None:
        """Count a request to ``endpoint`` (a route, or a gRPC method) that ``in_flight += 1`` announced, answered
        with ``status`` (the HTTP status; a gRPC call's is the one the same answer has over REST)."""
        self.in_flight -= 1
        self._counts[endpoint, status] += 1
        self._durations[endpoint].append(time.perf_counter() - start)
        self._unflushed += 1
        if self._unflushed >= FLUSH_EVERY_REQUESTS:
            self.flush()

    def flush(self) -> None:
        """Fold the requests and batches tallied since the last flush into the Prometheus metrics, and set
        the gauges."""
        instruments = self.instruments
        instruments.in_flight.set(self.in_flight)
        instruments.queue_depth.set(self.served.predictor.pending)
        counts, durations, batches = self._counts, self._durations, self._batches
        self._counts, self._durations, self._batches = defaultdict(int), defaultdict(list), defaultdict(list)
        self._unflushed = 0
        for (endpoint, status), count in counts.items():
            instruments.requests.labels(**self._model, endpoint=endpoint, status=str(status)).inc(count)
        for endpoint, seconds in durations.items():
            _observe_all(instruments.latency.labels(**self._model, endpoint=endpoint), seconds)
        for method, sizes in batches.items():
            _observe_all(instruments.batch_size.labels(**self._model, method=method), sizes)

    async def _flush_job(self) -> None:
        self.flush()

    def add_gpu_memory(self, read: Callable[[], Mapping[str, int]]) -> None:
        """Report ``read()``, bytes of GPU memory held by tensors by GPU index, as
        ``notebook_deploy_gpu_memory_bytes`` at every scrape (a server on ``cuda``)."""
        gauge: Any = None

        def update() -> None:
            nonlocal gauge
            if gauge is None:
                from prometheus_client import Gauge

                gauge = Gauge(
                    "notebook_deploy_gpu_memory_bytes",
                    "GPU memory held by tensors, by GPU",
                    [*self._model, "gpu"],
                    registry=self.registry,
                    multiprocess_mode="livesum",
                )
            for gpu, used in read().items():
                gauge.labels(**self._model, gpu=gpu).set(used)

        self.before_exposition.append(update)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format, summed over every worker when there are several."""
        for hook in self.before_exposition:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a failing hook must not take the metrics down
                logging.getLogger("notebook_deploy.serving").exception("updating metrics before exposition failed")
        self.flush()
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if os.environ.get(MULTIPROCESS_VARIABLE):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _observe_all(histogram: Histogram, amounts: list[float]) -> None:
    """``histogram.observe`` each of ``amounts``, taking each bucket's lock once rather than once per amount.

    prometheus_client has no bulk observe; this adds to the same per-bucket values (``_buckets``, not
    cumulative) and ``_sum`` that ``observe`` does, which works alike in one process and in multiprocess
    mode. ``tests/test_metrics.py`` checks it against ``observe``."""
    bounds = histogram._upper_bounds  # noqa: SLF001 - see the docstring
    per_bucket = [0] * len(bounds)
    for amount in amounts:
        per_bucket[bisect.bisect_left(bounds, amount)] += 1
    histogram._sum.inc(sum(amounts))  # noqa: SLF001
    for bucket, count in zip(histogram._buckets, per_bucket):  # noqa: SLF001
        if count:
            bucket.inc(count)
