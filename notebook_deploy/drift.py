"""Drift statistics: what a model's inputs and predictions looked like at capture (the *reference*), and
how far a window of live data has moved from it. Pure NumPy: no pandas import, nothing of Jupyter or serving.

Features are the columns of a table, the columns of a 2-D array (named ``"0"``, ``"1"``, ...), the one value
of one-value rows (``"0"``), or, for arrays whose rows have several axes, each position of a row
(``"0,0"``, ``"0,1"``, ...) as long as a row has at most ``MAX_FEATURES`` values (images are not monitored
value by value: the reference notes it). Each feature is

- *numeric* (floats, dates, integers with more than ``FEW_VALUES`` distinct values): ``BINS`` quantile bins
  of the reference with their proportions, for the PSI, and up to ``KS_POINTS`` reference quantiles, for
  the Kolmogorov-Smirnov statistic;
- *categorical* (strings, booleans, categories, integers with few distinct values): the proportion of
  each of the ``MAX_CATEGORIES`` most common categories, the rest counted as one "other" category.
  KS is not defined for categories.

Missing values (null, NaN, NaT) are one more bin of their own in the PSI and are left out of KS.

**PSI** (population stability index) is ``sum((a - e) * ln(a / e))`` over the bins, ``e`` the reference
proportions and ``a`` the live ones. Both are smoothed with half a count per bin, so that an empty bin gives
a finite value and a small window is not flagged by chance. Rule of thumb: below 0.1 no change, 0.1-0.2 a
moderate one, above 0.2 a significant one.

**KS** is the largest distance between the live values' empirical CDF and the reference's. The reference
keeps at most ``KS_POINTS`` (1000) of its values: all of them when it has no more, else its quantiles at
``(i + 0.5) / 1000``, so the statistic is exact for small references and within about 0.001 of the exact
one for large ones. Its p-value is the asymptotic Kolmogorov distribution with Stephens' small-sample
correction, over the reference's true row count and the window's.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from .schema import is_dataframe

FORMAT = 1
NUMERIC, CATEGORICAL = "numeric", "categorical"
BINS = 10
KS_POINTS = 1000
MAX_CATEGORIES = 50
FEW_VALUES = 20
MAX_FEATURES = 256
PSEUDO_COUNT = 0.5


# -- features of data -----------------------------------------------------------------------------------
def columns_of(data: Any, single: str = "0") -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """The features of ``data`` (a DataFrame, a Series or an array-like whose first axis is the row) as
    ``(name, 1-D array)`` pairs, and notes on what could not be taken. A one-value-a-row input's only
    feature is named ``single``."""
    if is_dataframe(data):
        return [(str(name), data[name].to_numpy()) for name in data.columns], []
    if type(data).__module__.startswith("pandas") and hasattr(data, "to_numpy"):
        data = data.to_numpy()
    array = np.asarray(data)
    if array.ndim == 0:
        return [], ["the data has no rows: a single value"]
    if array.ndim == 1:
        return [(single, array)], []
    flat = array.reshape(len(array), -1)
    if flat.shape[1] > MAX_FEATURES:
        return [], [
            f"rows of shape {list(array.shape[1:])} have {flat.shape[1]} values, more than {MAX_FEATURES}: "
            "their values are not monitored one by one"
        ]
    return list(zip(_position_names(tuple(array.shape[1:])), flat.T)), []


@functools.lru_cache(maxsize=64)
def _position_names(shape: tuple[int, ...]) -> list[str]:
    if len(shape) == 1:
        return [str(i) for i in range(shape[0])]
    return [",".join(str(i) for i in index) for index in np.ndindex(*shape)]


def infer_kind(values: np.ndarray) -> str | None:
    """``NUMERIC``, ``CATEGORICAL``, or None for values that are neither numbers nor categories."""
    code = values.dtype.kind
    if code == "b":
        return CATEGORICAL
    if code in "iu":
        return CATEGORICAL if len(np.unique(values)) <= FEW_VALUES else NUMERIC
    if code in "fmM":
        return NUMERIC
    present = [v for v in values.tolist() if not _is_missing(v)]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        integral = all(float(v).is_integer() for v in present)
        return CATEGORICAL if integral and len(set(present)) <= FEW_VALUES else NUMERIC
    if all(isinstance(v, (str, bool, int, float)) for v in present):
        return CATEGORICAL
    return None


def as_numeric(values: np.ndarray) -> np.ndarray:
    """Values as float64, missing ones NaN; dates and durations as seconds."""
    code = values.dtype.kind
    if code in "fiub":
        return values.astype(np.float64, copy=False)
    if code in "mM":
        unit = "datetime64[ns]" if code == "M" else "timedelta64[ns]"
        exact = values.astype(unit)
        result = exact.view(np.int64).astype(np.float64) / 1e9
        result[np.isnat(exact)] = np.nan
        return result
    result = np.full(len(values), np.nan)
    for i, value in enumerate(values.tolist()):
        if not _is_missing(value):
            try:
                result[i] = float(value)
            except (TypeError, ValueError):
                pass  # not a number: counted as missing
    return result


def category_key(value: Any) -> str | None:
    """The text a category is stored under (None for a missing value): strings as they are, booleans as
    ``true``/``false``, integral numbers without a decimal point."""
    if _is_missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def category_counts(values: np.ndarray) -> tuple[Counter[str], int]:
    """How often each category occurs among ``values``, and how many are missing."""
    counts: Counter[str] = Counter()
    pairs: Iterable[tuple[Any, int]]
    if values.dtype.kind in "biuf":
        uniques, numbers = np.unique(values, return_counts=True)
        pairs = zip(uniques.tolist(), numbers.tolist())
    else:
        items = values.tolist()
        try:
            pairs = Counter(items).items()
        except TypeError:  # unhashable values (lists, dicts): counted by their text
            pairs = Counter(category_key(v) for v in items).items()
    missing = 0
    for value, number in pairs:
        key = category_key(value)
        if key is None:
            missing += number
        else:
            counts[key] += number
    return counts, missing


# -- reference statistics -------------------------------------------------------------------------------
def describe(data: Any, single: str = "0") -> tuple[list[dict[str, Any]], list[str]]:
    """The reference statistics of every feature of ``data``, and notes on features left out."""
    columns, notes = columns_of(data, single)
    features = []
    for name, values in columns:
        kind = infer_kind(values)
        if kind is None:
            notes.append(f"feature {name!r} is not monitored: its values are neither numbers nor categories")
            continue
        features.append(numeric_reference(name, values) if kind == NUMERIC else categorical_reference(name, values))
    return features, notes


def numeric_reference(name: str, values: np.ndarray) -> dict[str, Any]:
    """Quantile bins and their proportions (PSI), and KS points, of a numeric feature."""
    numbers = as_numeric(np.asarray(values))
    present = np.sort(numbers[~np.isnan(numbers)])
    count = len(present)
    if count:
        edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
        proportions = _bin_counts(edges, present) / count
        points = present if count <= KS_POINTS else np.quantile(present, (np.arange(KS_POINTS) + 0.5) / KS_POINTS)
        summary: dict[str, float | None] = {
            "mean": float(present.mean()),
            "std": float(present.std()),
            "min": float(present[0]),
            "max": float(present[-1]),
        }
    else:
        edges, proportions, points = np.array([]), np.array([1.0]), np.array([])
        summary = {"mean": None, "std": None, "min": None, "max": None}
    return {
        "name": name,
        "kind": NUMERIC,
        "count": int(len(numbers)),
        "missing": int(len(numbers) - count),
        "edges": edges.tolist(),
        "proportions": proportions.tolist(),
        "ks_points": points.tolist(),
        **summary,
    }


def categorical_reference(name: str, values: np.ndarray) -> dict[str, Any]:
    """The proportions of the most common categories of a feature, the rest as "other"."""
    counts, missing = category_counts(np.asarray(values))
    present = sum(counts.values())
    common = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]
    kept = sum(number for _, number in common)
    return {
        "name": name,
        "kind": CATEGORICAL,
        "count": present + missing,
        "missing": missing,
        "categories": [key for key, _ in common],
        "proportions": [number / present for _, number in common] if present else [],
        "other": (present - kept) / present if present else 0.0,
    }


def reference_statistics(
    inputs: Any,
    predictions: Any = None,
    *,
    method: str | None = None,
    source: str = "reference",
    rows: int | None = None,
) -> dict[str, Any]:
    """The reference of a model: statistics of its input features and, given the outputs of its
    ``method`` on those inputs, of its predictions. ``source`` says where the rows came from
    (``"reference"`` or ``"sample"``), ``rows`` how many there were before any subsampling."""
    features, notes = describe(inputs)
    document: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "rows": int(rows if rows is not None else len(inputs)),
        "features": features,
        "predictions": None,
        "notes": notes,
    }
    if predictions is not None and method is not None:
        outputs, output_notes = describe(predictions, single=method)
        document["predictions"] = {"method": method, "rows": len(predictions), "features": outputs}
        document["notes"] += [f"predictions: {note}" for note in output_notes]
    return document


def summary(reference: dict[str, Any]) -> dict[str, Any]:
    """What the manifest says of a reference."""
    predictions = reference.get("predictions")
    return {
        "source": reference["source"],
        "rows": reference["rows"],
        "features": {f["name"]: f["kind"] for f in reference["features"]},
        "predictions": predictions["method"] if predictions else None,
    }


# -- comparing live data with the reference ------------------------------------------------------------
def compare(reference: dict[str, Any], values: np.ndarray) -> dict[str, float | None]:
    """PSI, KS statistic and KS p-value of live ``values`` of one feature against its reference
    (None where not defined: KS of categories, anything of no values)."""
    result: dict[str, float | None] = {"psi": None, "ks": None, "ks_pvalue": None}
    if len(values) == 0:
        return result
    if reference["kind"] == NUMERIC:
        numbers = as_numeric(np.asarray(values))
        missing = np.isnan(numbers)
        present = numbers[~missing]
        edges = np.asarray(reference["edges"], dtype=np.float64)
        live = np.append(_bin_counts(edges, present), missing.sum())
        expected = _expected_counts(reference)
        result["psi"] = psi(expected, live)
        points = np.asarray(reference["ks_points"], dtype=np.float64)
        statistic = ks_statistic(points, present)
        if statistic is not None:
            result["ks"] = statistic
            result["ks_pvalue"] = ks_pvalue(statistic, reference["count"] - reference["missing"], len(present))
        return result
    counts, missing = category_counts(np.asarray(values))
    known = reference["categories"]
    in_known = [counts.get(key, 0) for key in known]
    other = sum(counts.values()) - sum(in_known)
    result["psi"] = psi(_expected_counts(reference), np.array([*in_known, other, missing], dtype=np.float64))
    return result


def psi(expected: Any, actual: Any) -> float:
    """The population stability index of bin counts ``actual`` against bin counts ``expected`` (counts,
    not proportions: each is smoothed with ``PSEUDO_COUNT`` per bin)."""
    e = _smoothed(np.asarray(expected, dtype=np.float64))
    a = _smoothed(np.asarray(actual, dtype=np.float64))
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(reference: np.ndarray, live: np.ndarray) -> float | None:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    reference = np.sort(np.asarray(reference, dtype=np.float64))
    live = np.sort(np.asarray(live, dtype=np.float64))
    if not len(reference) or not len(live):
        return None
    points = np.concatenate([reference, live])
    gap = np.searchsorted(reference, points, side="right") / len(reference) - np.searchsorted(
        live, points, side="right"
    ) / len(live)
    return float(np.max(np.abs(gap)))


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """The asymptotic two-sided p-value of a KS statistic of samples of ``n`` and ``m`` values."""
    if n <= 0 or m <= 0:
        return 1.0
    root = math.sqrt(n * m / (n + m))
    return kolmogorov_sf((root + 0.12 + 0.11 / root) * statistic)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution K (the limit of sqrt(n) times the KS statistic)."""
    if x <= 0:
        return 1.0
    if x < 1.18:  # the series in exp(-1/x²) converges fast for small x
        terms = sum(math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * x * x)) for k in range(1, 8))
        return float(min(1.0, max(0.0, 1 - math.sqrt(2 * math.pi) / x * terms)))
    terms = sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101))
    return float(min(1.0, max(0.0, 2 * terms)))


def _expected_counts(reference: dict[str, Any]) -> np.ndarray:
    present = reference["count"] - reference["missing"]
    proportions = list(reference["proportions"])
    if reference["kind"] == CATEGORICAL:
        proportions.append(reference["other"])
    return np.array([*(p * present for p in proportions), reference["missing"]], dtype=np.float64)


def _bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).astype(np.float64)


def _smoothed(counts: np.ndarray) -> np.ndarray:
    return (counts + PSEUDO_COUNT) / (counts.sum() + PSEUDO_COUNT * len(counts))


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")


# -- the reference of a capture -------------------------------------------------------------------------
MAX_REFERENCE_ROWS = 100_000
MAX_PREDICTION_ROWS = 10_000
WEAK_REFERENCE_ROWS = 100


def capture_reference(
    data: Any, schema: Any, predict: Any = None, method: str | None = None, source: str = "reference"
) -> dict[str, Any]:
    """The reference statistics of ``data`` (rows of the model's input, as an array or a DataFrame that fits
    ``schema``) and of ``predict``'s outputs on them. Larger data is subsampled, deterministically, to
    ``MAX_REFERENCE_ROWS`` rows for the features and ``MAX_PREDICTION_ROWS`` for the predictions. Raises
    ``ValueError`` if ``data`` does not have the schema's features."""
    data = _conform(data, schema)
    total = len(data)
    data = _subsample(data, MAX_REFERENCE_ROWS)
    predictions, notes = None, []
    if predict is not None:
        try:
            predictions = predict(_subsample(data, MAX_PREDICTION_ROWS))
        except Exception as error:  # noqa: BLE001 - the reference of the inputs is still worth having
            notes.append(
                f"predictions are not monitored: {method} failed on the reference ({type(error).__name__}: {error})"
            )
    document = reference_statistics(data, predictions, method=method, source=source, rows=total)
    document["notes"] += notes
    return document


def _conform(data: Any, schema: Any) -> Any:
    names = getattr(schema, "labels", None)
    if names is not None:  # a table
        if not is_dataframe(data):
            raise ValueError(
                f"expected a DataFrame with the columns {', '.join(map(str, names))}, got a {type(data).__name__}"
            )
        missing = [n for n in names if n not in data.columns]
        if missing:
            raise ValueError(f"the columns {', '.join(map(repr, missing))} of the sample are missing")
        if not len(data):
            raise ValueError("it has no rows")
        return data[names]
    array = np.asarray(data)
    if array.ndim == 0 or tuple(array.shape[1:]) != tuple(schema.shape):
        raise ValueError(f"rows of shape {list(array.shape[1:])}, the sample's have shape {list(schema.shape)}")
    if not len(array):
        raise ValueError("it has no rows")
    return array


def _subsample(data: Any, limit: int) -> Any:
    if len(data) <= limit:
        return data
    rows = np.sort(np.random.default_rng(0).choice(len(data), limit, replace=False))
    return data.iloc[rows] if hasattr(data, "iloc") else data[rows]
