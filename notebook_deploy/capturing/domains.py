"""Which float values a model takes, found by trying them at capture.

A schema inferred from a sample knows a feature is a float, not whether the model accepts a missing
value (many scikit-learn estimators raise on NaN) or a huge one (trees compute in float32, so 1e300
overflows). Calling the model on one sample row with such a value answers it; the server then refuses
those values with a 422 naming the row and feature, before the model runs, instead of a 500 from
inside the model.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..schema import FLOAT, Domain, Schema, TableSchema, take_rows

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Magnitudes tried in turn; the first the model takes is the domain's limit (none if it takes 1e300).
_LIMITS = (1e300, FLOAT32_MAX, 1e15)


def probe_domains(schema: Schema, model_input: Any, calls: list[Callable[[Any], Any]]) -> Schema:
    """``schema`` with the float domain of each feature (or of the tensor) set by trying values."""
    row = take_rows(model_input, 0, 1)
    if isinstance(schema, TableSchema):
        columns = tuple(
            replace(column, domain=_probe(functools.partial(_with_column, row, column.key), calls))
            if column.kind == FLOAT
            else column
            for column in schema.columns
        )
        return replace(schema, columns=columns)
    if schema.kind != FLOAT:
        return schema
    return replace(schema, domain=_probe(lambda value: _filled(row, value), calls))


def _probe(make: Callable[[float], Any], calls: list[Callable[[Any], Any]]) -> Domain:
    nullable = _accepts(make(np.nan), calls)
    for limit in _LIMITS:
        if _accepts(make(limit), calls) and _accepts(make(-limit), calls):
            return Domain(nullable, None if limit == _LIMITS[0] else limit)
    return Domain(nullable, None)


def _accepts(data: Any, calls: list[Callable[[Any], Any]]) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in calls:
            try:
                call(data)
            except Exception:  # noqa: BLE001 - refusing the value is what is being probed
                return False
    return True


def _filled(row: np.ndarray, value: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.full_like(row, value)


def _with_column(row: Any, name: Any, value: float) -> Any:
    changed = row.copy()
    with np.errstate(over="ignore"):  # in a float32 column, 1e300 becomes inf, as the server would make it
        changed[name] = np.array([value], dtype=changed[name].dtype)
    return changed
