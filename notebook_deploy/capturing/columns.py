"""Which columns of a table a model does not use, found from the fitted pipeline and confirmed by a probe.

A ColumnTransformer with ``remainder="drop"`` (or a ``"drop"`` entry) ignores columns the training frame
had; the served schema should not make every request send them. The fitted pipeline names the
candidates; the model itself decides: each candidate is changed in the sample, and only a column whose
change leaves every method's output exactly as it was is made optional (filled with a sample value when
a request leaves it out).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..schema import BOOL, FLOAT, INT, Column, Schema, TableSchema, differences, to_jsonable


def probe_unused_columns(schema: Schema, model: Any, model_input: Any, calls: list[Callable[[Any], Any]]) -> Schema:
    """``schema`` with the columns ``model`` provably ignores marked optional."""
    if not isinstance(schema, TableSchema) or not calls:
        return schema
    candidates = set(unused_by_pipeline(model, schema.labels))
    if not candidates:
        return schema
    expected = _outputs(calls, model_input)
    if expected is None:
        return schema
    columns = tuple(
        replace(c, optional=True, fill=to_jsonable(model_input[c.key].iloc[0]))
        if c.key in candidates and _ignored(c, model_input, calls, expected)
        else c
        for c in schema.columns
    )
    return replace(schema, columns=columns)


def unused_by_pipeline(model: Any, labels: list[Any]) -> list[Any]:
    """The labels a fitted ColumnTransformer at the head of ``model`` (a pipeline, a search) drops; for a
    statsmodels result, every column (a formula's frame holds the response and columns the formula does not
    name, and the model does not say which terms read which column: the probe tells)."""
    if type(model).__module__.startswith("statsmodels"):
        return list(labels)
    step = getattr(model, "best_estimator_", model)
    while hasattr(step, "steps") and step.steps:
        step = step.steps[0][1]
    fitted = getattr(step, "transformers_", None)
    if not isinstance(fitted, list):
        return []
    used: set[int] = set()
    for _, transformer, selected in fitted:
        if not (isinstance(transformer, str) and transformer == "drop"):
            used |= _positions(selected, labels)
    return [label for i, label in enumerate(labels) if i not in used]


def _positions(selected: Any, labels: list[Any]) -> set[int]:
    """The positions among ``labels`` of a ColumnTransformer's column selection (labels, indices, mask, slice)."""
    indices = np.arange(len(labels))
    if isinstance(selected, slice):
        if all(isinstance(v, (int, type(None))) for v in (selected.start, selected.stop)):
            return set(indices[selected].tolist())
        start = labels.index(selected.start) if selected.start is not None else 0
        stop = labels.index(selected.stop) + 1 if selected.stop is not None else len(labels)
        return set(range(start, stop))
    values = [selected] if np.isscalar(selected) else list(selected)
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return {i for i, keep in enumerate(values) if keep}
    found = set()
    for value in values:
        if isinstance(value, (int, np.integer)) and -len(labels) <= value < len(labels):  # sklearn: a position
            found.add(int(indices[value]))
        elif value in labels:
            found.add(labels.index(value))
        else:  # a selection not understood: count every column as used rather than guess
            return set(indices.tolist())
    return found


def _ignored(column: Column, model_input: Any, calls: list[Callable[[Any], Any]], expected: list[Any]) -> bool:
    """Whether changing ``column`` in every sample row leaves all outputs as they were."""
    values = model_input[column.key]
    if column.kind == BOOL:
        changed = ~values
    elif column.kind in (FLOAT, INT):
        changed = values + 1
    else:
        changed = values.iloc[np.roll(np.arange(len(values)), 1)].set_axis(values.index)
        if changed.equals(values):
            return False  # one value in every row: no change to probe with
    probe = model_input.copy()
    probe[column.key] = changed
    outputs = _outputs(calls, probe)
    return outputs is not None and not any(
        differences(e, o, "probe", rtol=1e-12, atol=0) for e, o in zip(expected, outputs)
    )


def _outputs(calls: list[Callable[[Any], Any]], data: Any) -> list[Any] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return [to_jsonable(call(data)) for call in calls]
        except Exception:  # noqa: BLE001 - a model that fails on the changed column uses it
            return None
