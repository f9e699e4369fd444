"""Replay recorded traffic against a candidate version, in this process, before it takes that traffic.

A server started with ``--prediction-log`` writes one JSON line per row: the row as the model received
it, the method, and what the model answered (``serving/drift.PredictionLog``). ``replay`` sends each
recorded row, one request at a time as it arrived, through the candidate's own request schema and
method, and compares the answer with the recorded one: labels exactly, scores within a tolerance. A row
the candidate's schema refuses (a renamed column, a narrowed type) counts as a disagreement that names
the refusal. When the version that answered is in the store (or ``baseline`` names one), it is timed on
the same rows in the same run, so the two latencies are side by side. No server is started.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import display
from .api import load
from .bundle import Bundle
from .capturing.footprint import latency_ms
from .errors import NotebookDeployError
from .methods import resolve_methods
from .schema import to_jsonable
from .store import Store

RTOL = 1e-6
ATOL = 1e-9
# A refused row or a changed label is as far apart as answers get.
APART = math.inf


class ReplayError(NotebookDeployError):
    """A prediction log that cannot be replayed: missing, empty, or not a prediction log."""


@dataclass(frozen=True)
class Record:
    """One logged row: what the model received and what it answered, by which version and method."""

    method: str
    input: Any
    output: Any
    model: str
    version: str


@dataclass(frozen=True)
class Disagreement:
    """A row where the candidate's answer departs from the recorded one, and by how much."""

    line: int  # the row's place in the log (1-based, over every file read)
    method: str
    input: Any
    recorded: Any
    answered: Any  # the candidate's answer, or the message of what it refused
    distance: float  # the largest absolute difference of the scores; APART for labels and refusals


@dataclass
class MethodReplay:
    """What the replay of one method's rows found."""

    method: str
    rows: int = 0
    agreed: int = 0
    refused: int = 0
    labels: bool = True  # every recorded answer is a label (compared exactly), not a score
    confusion: Counter[tuple[Any, Any]] = field(default_factory=Counter)  # (recorded, answered) → rows
    candidate_seconds: list[float] = field(default_factory=list)
    baseline_seconds: list[float] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agreed / self.rows if self.rows else 1.0


@dataclass
class Replay:
    """The result of ``replay``: agreement per method, latencies side by side, the rows that differ most."""

    candidate: str
    baseline: str | None
    recorded: list[str]  # the model:version refs that answered in the log
    methods: dict[str, MethodReplay]
    worst: list[Disagreement]
    skipped_lines: int
    rtol: float
    atol: float

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.methods.values())

    @property
    def agreement(self) -> float:
        """The share of replayed rows whose answer agreed with the recorded one."""
        return sum(m.agreed for m in self.methods.values()) / self.rows if self.rows else 1.0

    def _rows(self) -> list[tuple[str, str]]:
        rows = [
            ("candidate", self.candidate),
            ("recorded", ", ".join(self.recorded)),
            ("rows", f"{self.rows}" + (f" ({self.skipped_lines} log lines unreadable)" if self.skipped_lines else "")),
            (
                "agreement",
                f"{self.agreement:.2%} (labels exactly, scores within rtol {self.rtol:g}, atol {self.atol:g})",
            ),
        ]
        for m in self.methods.values():
            refused = f", {m.refused} refused by the schema" if m.refused else ""
            rows.append((m.method, f"{m.agreed}/{m.rows} agree ({m.agreement:.2%}){refused}"))
            rows.append((f"{m.method} latency", _latencies(m, self.baseline)))
            if m.labels and m.confusion:
                rows.append((f"{m.method} recorded → answered", _confusion(m.confusion)))
        for d in self.worst:
            distance = "label" if d.distance == APART else f"{d.distance:.3g}"
            rows.append(
                (
                    f"line {d.line}",
                    f"{d.method}: recorded {display.shorten(d.recorded)}, answered {display.shorten(d.answered)} ({distance}) "
                    f"for {display.shorten(d.input, 50)}",
                )
            )
        return rows

    def __str__(self) -> str:
        return display.text_table(f"Replay against {self.candidate}", self._rows())

    def _repr_html_(self) -> str:
        return display.html_table(f"Replay against {self.candidate}", self._rows())

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "baseline": self.baseline,
            "recorded": self.recorded,
            "rows": self.rows,
            "agreement": self.agreement,
            "skipped_lines": self.skipped_lines,
            "methods": {
                m.method: {
                    "rows": m.rows,
                    "agreed": m.agreed,
                    "refused": m.refused,
                    "labels": m.labels,
                    "confusion": [[r, a, n] for (r, a), n in sorted(m.confusion.items(), key=str)],
                    "candidate_ms": _percentiles(m.candidate_seconds),
                    "baseline_ms": _percentiles(m.baseline_seconds) if m.baseline_seconds else None,
                }
                for m in self.methods.values()
            },
            "worst": [
                {
                    "line": d.line,
                    "method": d.method,
                    "input": d.input,
                    "recorded": d.recorded,
                    "answered": d.answered,
                    "distance": None if d.distance == APART else d.distance,
                }
                for d in self.worst
            ],
        }


def read_log(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Record], int]:
    """The records of the prediction log files ``paths``, in order, and how many lines were unreadable
    (a line cut short by a crash, say); a file that holds no record at all is refused."""
    records: list[Record] = []
    skipped = 0
    for path in paths:
        try:
            lines = Path(path).read_bytes().splitlines()
        except OSError as error:
            raise ReplayError(f"cannot read the prediction log {path}: {error.strerror or error}") from None
        before = len(records)
        for line in lines:
            try:
                entry = json.loads(line)
                records.append(
                    Record(entry["method"], entry["input"], entry["output"], entry["model"], entry["version"])
                )
            except (ValueError, KeyError, TypeError):
                skipped += 1
        if len(records) == before:
            raise ReplayError(
                f"{path} holds no prediction log line ({len(lines)} lines read); a server writes one with "
                "'notebook-deploy serve REF --prediction-log PATH'"
            )
    return records, skipped


def replay(
    log: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    against: str | Bundle,
    baseline: str | Bundle | None = None,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    worst: int = 5,
    limit: int | None = None,
) -> Replay:
    """Send the rows recorded in ``log`` (a prediction log file, or several: rotated ones oldest first)
    to the candidate ``against``, in this process, and report how its answers agree with the recorded ones.

    The baseline timed beside it is ``baseline``, or else the version that answered in the log when the
    store has it. ``limit`` replays only the last rows; ``worst`` says how many disagreeing rows to show.
    """
    paths = [log] if isinstance(log, (str, os.PathLike)) else list(log)
    records, skipped = read_log(paths)
    if limit is not None:
        records = records[-limit:]
    store = store if isinstance(store, Store) else Store(store)
    candidate = load(against, store)
    base = load(baseline, store) if baseline is not None else _recorded_bundle(records, store)
    return replay_records(records, candidate, base, rtol=rtol, atol=atol, worst=worst, skipped_lines=skipped)


def replay_records(
    records: Sequence[Record],
    candidate: Bundle,
    baseline: Bundle | None = None,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    worst: int = 5,
    skipped_lines: int = 0,
) -> Replay:
    """Answer each of ``records`` with ``candidate`` (and time ``baseline`` on it) and compare: the
    common part of a replayed log and of ``compare``'s check on a stored sample."""
    recorded = sorted({f"{r.model}:{r.version}" for r in records})
    missing = sorted({r.method for r in records} - set(candidate.methods))
    if missing:
        raise ReplayError(
            f"the log has answers of {', '.join(missing)}, which {candidate.ref} does not have "
            f"(it has {', '.join(candidate.methods)})"
        )
    call = _caller(candidate)
    call_base = _caller(baseline) if baseline is not None else None
    methods: dict[str, MethodReplay] = {}
    found: list[Disagreement] = []
    for line, record in enumerate(records, 1):
        report = methods.setdefault(record.method, MethodReplay(record.method))
        report.rows += 1
        started = time.perf_counter()
        try:
            answered = call(record.method, record.input)
        except NotebookDeployError as error:  # the candidate's schema refused the row
            report.candidate_seconds.append(time.perf_counter() - started)
            report.refused += 1
            report.labels = report.labels and _is_label(record.output)
            found.append(Disagreement(line, record.method, record.input, record.output, f"refused: {error}", APART))
            continue
        report.candidate_seconds.append(time.perf_counter() - started)
        if call_base is not None:
            started = time.perf_counter()
            try:
                call_base(record.method, record.input)
                report.baseline_seconds.append(time.perf_counter() - started)
            except NotebookDeployError:
                pass  # the baseline's latency is a side note; its answer is the recorded one
        distance = _distance(record.output, answered, rtol, atol)
        if _is_label(record.output):
            report.confusion[(_hashable(record.output), _hashable(answered))] += 1
        else:
            report.labels = False
        if distance == 0:
            report.agreed += 1
        else:
            found.append(Disagreement(line, record.method, record.input, record.output, answered, distance))
    found.sort(key=lambda d: (-d.distance, d.line))
    base = baseline.ref if baseline is not None else None
    return Replay(candidate.ref, base, recorded, methods, found[:worst], skipped_lines, rtol, atol)


def _caller(bundle: Bundle) -> Callable[[str, Any], Any]:
    """Answer one recorded row as the server would: decode it with the bundle's schema, call the method,
    and give the row's answer as JSON values."""
    schema = bundle.input_schema
    calls = resolve_methods(bundle.model, bundle.methods)

    def call(method: str, row: Any) -> Any:
        output = to_jsonable(calls[method](schema.decode([row])))
        return output[0] if isinstance(output, list) and len(output) == 1 else output

    return call


def _recorded_bundle(records: Sequence[Record], store: Store) -> Bundle | None:
    """The version that answered in the log, when it is the only one and the store has it."""
    recorded = {f"{r.model}:{r.version}" for r in records}
    if len(recorded) != 1:
        return None
    try:
        return load(recorded.pop(), store)
    except NotebookDeployError:
        return None


def _distance(recorded: Any, answered: Any, rtol: float, atol: float) -> float:
    """0 when the answers agree; otherwise the largest absolute difference of their numbers, or APART
    when they differ in a label, a length or a type."""
    if isinstance(recorded, list) and isinstance(answered, list):
        if len(recorded) != len(answered):
            return APART
        return max((_distance(r, a, rtol, atol) for r, a in zip(recorded, answered)), default=0.0)
    if isinstance(recorded, float) or isinstance(answered, float):
        if isinstance(recorded, (int, float)) and isinstance(answered, (int, float)):
            if math.isclose(recorded, answered, rel_tol=rtol, abs_tol=atol):
                return 0.0
            return abs(recorded - answered)
        return APART
    return 0.0 if recorded == answered else APART


def _is_label(value: Any) -> bool:
    """A class label (a string, an integer, a boolean), compared exactly and counted in the confusion."""
    return isinstance(value, (str, int, bool)) or value is None


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _percentiles(seconds: list[float]) -> dict[str, float] | None:
    return latency_ms(seconds) if seconds else None


def _latencies(report: MethodReplay, baseline: str | None) -> str:
    mine = _percentiles(report.candidate_seconds)
    text = f"p50 {mine['p50']:.2f} ms, p99 {mine['p99']:.2f} ms" if mine else "-"
    theirs = _percentiles(report.baseline_seconds)
    if theirs:
        text += f"; {baseline}: p50 {theirs['p50']:.2f} ms, p99 {theirs['p99']:.2f} ms"
    return text


def _confusion(confusion: Counter[tuple[Any, Any]]) -> str:
    """``recorded→answered: rows`` pairs, the disagreeing ones first."""
    pairs = sorted(confusion.items(), key=lambda item: (item[0][0] == item[0][1], -item[1], str(item[0])))
    return ", ".join(f"{display.shorten(r)}→{display.shorten(a)}: {n}" for (r, a), n in pairs[:12])
