"""Drift monitoring of a served model: a sliding window of live inputs and predictions compared with the
reference statistics stored in the bundle (``GET /monitor/drift`` and Prometheus gauges), and the optional
prediction log.

The request path only appends to ring buffers (one per feature, the last ``drift_window`` rows). The
statistics (see ``notebook_deploy.drift``) are computed when ``/monitor/drift`` or ``/metrics`` is read, and
every few seconds in the background when new rows came, off the event loop; an unchanged window is not
computed twice. A feature is flagged when its PSI is above ``drift_threshold``; with fewer than
``drift_min_rows`` rows in the window nothing is flagged and the status says "insufficient data".

With several workers each has its own window of the traffic it answers. ``/monitor/drift`` reports the
window of the worker that answered; the gauges are written by every worker and ``/metrics`` shows the
largest value over live workers (multiprocess mode ``livemax``): drift seen by any worker shows. A worker
sets its gauges only once its window holds ``drift_min_rows`` rows, so a nearly empty window cannot
dominate the maximum with noise.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import queue
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import drift as statistics
from ..errors import ServeError
from ..schema import concat_rows, dumps, take_rows, to_jsonable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .metrics import Metrics
    from .served import ServedModel

log = logging.getLogger("notebook_deploy.serving")

INSUFFICIENT = "insufficient data"
NO_REFERENCE = (
    "this bundle has no reference statistics: capture with reference=X_train "
    "(notebook_deploy.capture(model, sample=..., reference=X_train)) to monitor drift"
)
REFRESH_SECONDS = 5.0
LOG_BACKUPS = 3
LOG_QUEUE = 10_000
PREDICTION_PREFIX = "prediction:"


def install_monitoring(served: ServedModel, metrics: Metrics) -> None:
    """Watch the predictions from the first one: the drift window and gauges and, if the settings ask for
    it, the prediction log (``/monitor/drift`` is among app.py's service routes)."""
    reference = served.bundle.reference
    monitor = served.drift = DriftMonitor(served, metrics, reference) if reference is not None else None
    if monitor is not None:
        served.predictor.observers.append(monitor.observe)
        metrics.before_exposition.append(monitor.report)
        served.every(REFRESH_SECONDS, lambda: asyncio.to_thread(monitor.report), "computing drift statistics")
    settings = served.settings
    if settings.prediction_log and settings.prediction_log_sample > 0:
        prediction_log = PredictionLog(
            _log_path(settings.prediction_log, settings.workers),
            served.bundle.name,
            served.bundle.version,
            sample=settings.prediction_log_sample,
            max_bytes=settings.prediction_log_max_bytes,
        )
        served.predictor.observers.append(prediction_log.observe)
        served.shutdown.append(prediction_log.aclose)


# -- the window -----------------------------------------------------------------------------------------
class Features:
    """The last ``size`` rows of one set of features (the model's inputs, or its predictions), kept as the
    requests' own data and turned into per-feature arrays only when statistics are computed: the request
    path pays one ``deque.append`` (measured: per-feature ring buffers cost 55 µs a request for 20
    features, a third of the whole request). Only the event loop extends it; ``snapshot``, from another
    thread, copies the deque in one step (atomic under the GIL), so neither needs a lock."""

    def __init__(self, references: list[dict[str, Any]], size: int, single: str = "0") -> None:
        self.references = {r["name"]: r for r in references}
        self.single = single
        self.size = size
        self._chunks: collections.deque[Any] = collections.deque()
        self._held = 0  # rows in _chunks; at most one chunk more than size

    def extend(self, data: Any) -> None:
        self._chunks.append(data)
        self._held += len(data)
        while self._held - len(self._chunks[0]) >= self.size:
            self._held -= len(self._chunks.popleft())

    def snapshot(self) -> tuple[int, dict[str, np.ndarray]]:
        """The window's row count and its values per feature: float64 (missing as NaN) for numeric
        features, objects for categorical ones."""
        chunks = list(self._chunks)
        if not chunks:
            return 0, {name: np.empty(0) for name in self.references}
        data = concat_rows(chunks)
        data = take_rows(data, max(0, len(data) - self.size), len(data))
        columns, _ = statistics.columns_of(data, self.single)
        values = {}
        for name, column in columns:
            reference = self.references.get(name)
            if reference is not None:
                numeric = reference["kind"] == statistics.NUMERIC
                values[name] = statistics.as_numeric(column) if numeric else np.asarray(column, dtype=object)
        return len(data), values


class _Gauges:
    """The drift gauges of one worker, in the app's registry."""

    def __init__(self, registry: CollectorRegistry, model: dict[str, str]) -> None:
        from prometheus_client import Gauge

        labels = ["model", "version", "feature"]
        self.psi = Gauge(
            "notebook_deploy_drift_psi",
            "Population stability index of a feature's live window against the "
            "reference (predictions as feature=prediction:NAME); largest over workers",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.ks = Gauge(
            "notebook_deploy_drift_ks",
            "Kolmogorov-Smirnov statistic of a numeric feature's live window against "
            "the reference; largest over workers",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.detected = Gauge(
            "notebook_deploy_drift_detected",
            "1 where a feature's PSI is above the drift threshold, else 0; largest over workers",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.rows = Gauge(
            "notebook_deploy_drift_window_rows",
            "Rows in the drift windows, summed over workers",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        ).labels(**model)


class DriftMonitor:
    """The sliding window of one worker, its drift report and the gauges it sets."""

    def __init__(self, served: ServedModel, metrics: Metrics, reference: dict[str, Any]) -> None:
        settings = served.settings
        self.bundle = served.bundle
        self.reference = reference
        self.size = int(settings.drift_window)
        self.threshold = float(settings.drift_threshold)
        self.min_rows = int(settings.drift_min_rows)
        self.inputs = Features(reference["features"], self.size)
        predictions = reference.get("predictions")
        self.method = predictions["method"] if predictions else None
        self.outputs = (
            Features(predictions["features"], self.size, single=predictions["method"]) if predictions else None
        )
        self._compute = threading.Lock()
        self._changes = 0
        self._report: tuple[int, dict[str, Any]] | None = None
        self._model = {"model": self.bundle.name, "version": self.bundle.version}
        self._metrics = metrics

    @functools.cached_property
    def _gauges(self) -> _Gauges:
        """The drift gauges, made (and prometheus_client imported) when the first report, under
        ``_compute``, sets them."""
        return _Gauges(self._metrics.registry, self._model)

    # -- the request path -------------------------------------------------------------------------
    def observe(self, method: str, model_input: Any, model_output: Any) -> None:
        self.inputs.extend(model_input)
        if self.outputs is not None and method == self.method:
            self.outputs.extend(model_output)
        self._changes += 1

    # -- statistics -------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The drift report of the current window, computed only if rows came since the last one."""
        with self._compute:
            changes = self._changes
            if self._report is not None and self._report[0] == changes:
                return self._report[1]
            rows, inputs = self.inputs.snapshot()
            outputs = self.outputs.snapshot() if self.outputs is not None else None
            report = self._build(rows, inputs, outputs)
            self._set_gauges(report)
            self._report = (changes, report)
            return report

    def largest_psi(self) -> float | None:
        """The largest PSI of the last report computed (in the background, every few seconds), over the
        predictions and the inputs whose windows hold enough rows; None before there is one."""
        with self._compute:
            report = self._report[1] if self._report is not None else None
        if report is None:
            return None
        groups = [report] + ([report["predictions"]] if report["predictions"] is not None else [])
        found = [
            entry["psi"]
            for group in groups
            if group["status"] == "ok"
            for entry in group["features"].values()
            if entry["psi"] is not None
        ]
        return max(found, default=None)

    def _build(
        self, rows: int, inputs: dict[str, np.ndarray], outputs: tuple[int, dict[str, np.ndarray]] | None
    ) -> dict[str, Any]:
        enough = rows >= self.min_rows
        features = self._compare(self.inputs.references, inputs, enough)
        report: dict[str, Any] = {
            "model": self.bundle.name,
            "version": self.bundle.version,
            "status": "ok" if enough else INSUFFICIENT,
            "message": (
                f"{rows} rows in the window; features with a PSI above {self.threshold} are flagged"
                if enough
                else f"{rows} rows in the window: at least {self.min_rows} are needed before drift is flagged"
            ),
            "window": {"rows": rows, "size": self.size, "min_rows": self.min_rows},
            "threshold": self.threshold,
            "reference": {"source": self.reference["source"], "rows": self.reference["rows"]},
            "features": features,
            "drifted": [name for name, entry in features.items() if entry["drifted"]],
            "predictions": None,
        }
        if outputs is not None and self.outputs is not None:
            output_rows, values = outputs
            output_enough = output_rows >= self.min_rows
            compared = self._compare(self.outputs.references, values, output_enough)
            report["predictions"] = {
                "method": self.method,
                "rows": output_rows,
                "status": "ok" if output_enough else INSUFFICIENT,
                "features": compared,
                "drifted": [name for name, entry in compared.items() if entry["drifted"]],
            }
        return report

    def _compare(
        self, references: dict[str, dict[str, Any]], values: dict[str, np.ndarray], enough: bool
    ) -> dict[str, dict[str, Any]]:
        result = {}
        for name, reference in references.items():
            entry: dict[str, Any] = {"kind": reference["kind"], **statistics.compare(reference, values[name])}
            entry["drifted"] = (entry["psi"] > self.threshold) if enough and entry["psi"] is not None else None
            result[name] = entry
        return result

    def _set_gauges(self, report: dict[str, Any]) -> None:
        gauges = self._gauges
        gauges.rows.set(report["window"]["rows"])
        groups = [("", report["status"], report["features"])]
        if report["predictions"] is not None:
            predictions = report["predictions"]
            groups.append((PREDICTION_PREFIX, predictions["status"], predictions["features"]))
        for prefix, status, features in groups:
            if status != "ok":
                continue
            for name, entry in features.items():
                labels = dict(self._model, feature=prefix + name)
                if entry["psi"] is not None:
                    gauges.psi.labels(**labels).set(entry["psi"])
                if entry["ks"] is not None:
                    gauges.ks.labels(**labels).set(entry["ks"])
                gauges.detected.labels(**labels).set(1 if entry["drifted"] else 0)


_NUMBER = {"type": ["number", "null"]}
_FEATURE_SCHEMA = {
    "type": "object",
    "required": ["kind", "psi", "ks", "ks_pvalue", "drifted"],
    "properties": {
        "kind": {"type": "string", "enum": [statistics.NUMERIC, statistics.CATEGORICAL]},
        "psi": _NUMBER,
        "ks": _NUMBER,
        "ks_pvalue": _NUMBER,
        "drifted": {"type": ["boolean", "null"]},
    },
}
_STATUS = {"type": "string", "enum": ["ok", INSUFFICIENT]}
REPORT_SCHEMA = {
    "type": "object",
    "required": [
        "model",
        "version",
        "status",
        "message",
        "window",
        "threshold",
        "reference",
        "features",
        "drifted",
        "predictions",
    ],
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "string"},
        "status": _STATUS,
        "message": {"type": "string"},
        "window": {
            "type": "object",
            "required": ["rows", "size", "min_rows"],
            "properties": {"rows": {"type": "integer"}, "size": {"type": "integer"}, "min_rows": {"type": "integer"}},
        },
        "threshold": {"type": "number"},
        "reference": {
            "type": "object",
            "required": ["source", "rows"],
            "properties": {"source": {"type": "string"}, "rows": {"type": "integer"}},
        },
        "features": {"type": "object", "additionalProperties": _FEATURE_SCHEMA},
        "drifted": {"type": "array", "items": {"type": "string"}},
        "predictions": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["method", "rows", "status", "features", "drifted"],
                    "properties": {
                        "method": {"type": "string"},
                        "rows": {"type": "integer"},
                        "status": _STATUS,
                        "features": {"type": "object", "additionalProperties": _FEATURE_SCHEMA},
                        "drifted": {"type": "array", "items": {"type": "string"}},
                    },
                },
            ]
        },
    },
}


# -- the prediction log ---------------------------------------------------------------------------------
def _log_path(path: str, workers: int) -> Path:
    """The log file of this process: ``path`` itself, or with several workers ``NAME.PID.SUFFIX`` each."""
    file = Path(path)
    if workers > 1:
        file = file.with_name(f"{file.stem}.{os.getpid()}{file.suffix}")
    return file


class PredictionLog:
    """JSON lines ``{"time", "model", "version", "method", "input", "output"}``, one per row, a ``sample``
    fraction of the rows, written by a background thread and rotated at ``max_bytes`` (``LOG_BACKUPS``
    older files: ``PATH.1`` ...). A full queue or a failing disk drops lines, never a request."""

    def __init__(self, path: Path, model: str, version: str, *, sample: float, max_bytes: int) -> None:
        self.path = Path(path)
        self.model, self.version = model, version
        self.sample = float(sample)
        self.max_bytes = int(max_bytes)
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(LOG_QUEUE)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._random = random.Random()
        self._file: Any = None
        self._size = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _open_private(self.path).close()
        except OSError as error:
            raise ServeError(f"cannot write the prediction log {self.path}: {error}") from None

    def observe(self, method: str, model_input: Any, model_output: Any) -> None:
        rows = len(model_input)
        if self.sample >= 1:
            chosen: list[int] | None = None
        elif rows == 1:
            if self._random.random() >= self.sample:
                return
            chosen = None
        else:
            chosen = [i for i in range(rows) if self._random.random() < self.sample]
            if not chosen:
                return
        self._ensure_thread()
        try:
            self._queue.put_nowait((time.time(), method, model_input, model_output, chosen))
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("the prediction log falls behind: %d requests not logged so far", self.dropped)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop the writer and close the file."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join()
        self._thread = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                while item is not None:
                    self._write(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if self._file is not None:
                    self._file.flush()
                if item is None:
                    return
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _write(self, item: tuple[float, str, Any, Any, list[int] | None]) -> None:
        when, method, model_input, model_output, chosen = item
        try:
            rows = len(model_input)
            if chosen is not None:
                model_input = _pick(model_input, chosen)
            inputs = to_jsonable(model_input)
            outputs = to_jsonable(model_output)
            per_row = isinstance(outputs, list) and len(outputs) == rows
            stamp = datetime.fromtimestamp(when, timezone.utc).isoformat()
            indexes = chosen if chosen is not None else range(rows)
            for row, index in zip(inputs, indexes):
                line = (
                    dumps(
                        {
                            "time": stamp,
                            "model": self.model,
                            "version": self.version,
                            "method": method,
                            "input": row,
                            "output": outputs[index] if per_row else outputs,
                        }
                    )
                    + b"\n"
                )
                self._append(line)
        except Exception:  # noqa: BLE001 - the log must never fail serving
            log.exception("writing the prediction log %s failed", self.path)

    def _append(self, line: bytes) -> None:
        if self._file is None:
            self._file = _open_private(self.path)
            self._size = self._file.tell()
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._size += len(line)

    def _rotate(self) -> None:
        self._file.close()
        for index in range(LOG_BACKUPS - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = _open_private(self.path)
        self._size = 0


def _open_private(path: Path) -> Any:
    """Open the prediction log for appending, readable by its owner only (0600): it holds callers' inputs
    and the model's answers. A log left readable by an older version is narrowed too."""
    handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
    os.fchmod(handle.fileno(), 0o600)
    return handle


def _pick(data: Any, indexes: list[int]) -> Any:
    if hasattr(data, "iloc"):
        return data.iloc[indexes]
    return np.asarray(data)[indexes]
