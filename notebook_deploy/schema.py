"""Input and output schemas inferred from a sample, and the conversions between JSON rows and model data.

Two shapes of data are known:

- a *tensor*: a NumPy array whose first axis is the row (``TensorSchema``: dtype and per-row shape);
- a *table*: a pandas DataFrame with named, typed columns (``TableSchema``).

Rows beyond numbers and text (images, bytes, chat messages: what foundation models take) are a tensor of
one object a row, of one of the ``OBJECT_KINDS``; each kind says once how it is told apart in a sample,
its JSON Schema, and (images and bytes) how raw bytes become the model's value and back. In JSON, bytes
travel as base64 text; the protocols that carry raw bytes hand them to ``TensorSchema.decode_raw``.

``decode`` turns the ``instances`` of a request into the exact type the model was captured with and
raises ``InputError`` naming the row and feature that does not fit; ``encode`` goes the other way.
The checks are vectorised with NumPy; rows are only walked one by one to word an error message.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .errors import InputError

# Element kinds, shared by tensors and table columns.
FLOAT, INT, BOOL, STR, CATEGORY, DATETIME, ANY = (
    "float",
    "int",
    "bool",
    "str",
    "category",
    "datetime",
    "any",
)

IMAGE, BYTES, CHAT = "image", "bytes", "chat"

_JSON_TYPES: dict[str, dict[str, Any]] = {
    FLOAT: {"type": ["number", "null"]},
    INT: {"type": "integer"},
    BOOL: {"type": "boolean"},
    STR: {"type": ["string", "null"]},
    DATETIME: {"type": ["string", "null"], "format": "date-time"},
    ANY: {},
    IMAGE: {
        "type": "string",
        "contentEncoding": "base64",
        "contentMediaType": "image/*",
        "description": "an image file (PNG, JPEG, WebP...), base64-encoded",
    },
    BYTES: {"type": "string", "contentEncoding": "base64", "description": "bytes (a file), base64-encoded"},
    CHAT: {
        "type": "array",
        "minItems": 1,
        "description": "a conversation: messages with a role and a content",
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
        },
    },
}


def chat_json_schema() -> dict[str, Any]:
    """The JSON Schema of a conversation (``is_chat``), for the API documents that take one."""
    return dict(_JSON_TYPES[CHAT])


def takes_bytes(schema: Schema) -> bool:
    """Whether rows of ``schema`` are bytes on the wire (images, bytes): sent as files or raw bodies too."""
    kind = OBJECT_KINDS.get(schema.kind) if isinstance(schema, TensorSchema) else None
    return kind is not None and kind.binary


@dataclass(frozen=True)
class ObjectKind:
    """Rows the model takes as one Python object each (a PIL image, bytes, a conversation): how such a
    value is told apart in a sample, and, for the binary kinds, raw bytes to the model's value and back
    (``None``: the kind travels as JSON only)."""

    name: str
    expected: str  # what a row of the kind is, as error messages say it
    is_value: Callable[[Any], bool]
    from_bytes: Callable[[bytes], Any] | None = None
    to_bytes: Callable[[Any], bytes] | None = None

    @property
    def binary(self) -> bool:
        return self.from_bytes is not None


def _is_image(value: Any) -> bool:
    module = sys.modules.get("PIL.Image")  # a sample of images has imported PIL already
    return module is not None and isinstance(value, module.Image)


def _open_image(raw: bytes) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    image.load()  # decoded now, so that a truncated file is refused here rather than inside the model
    return image


def _lossless(image: Any) -> bytes:
    """An image as PNG, or TIFF for the modes PNG cannot hold (CMYK, YCbCr...): lossless either way, so the
    model gets back exactly the pixels of the sample."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")
    except OSError:  # "cannot write mode CMYK as PNG"
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF")
    return buffer.getvalue()


def is_chat(value: Any) -> bool:
    """A conversation: a non-empty list of messages, each with a text ``role`` and ``content``."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )


OBJECT_KINDS = {
    IMAGE: ObjectKind(IMAGE, "an image file (PNG, JPEG, WebP...)", _is_image, _open_image, _lossless),
    BYTES: ObjectKind(BYTES, "bytes", lambda v: isinstance(v, (bytes, bytearray)), bytes, bytes),
    CHAT: ObjectKind(CHAT, 'a list of messages {"role": ..., "content": ...}', is_chat),
}


@dataclass(frozen=True)
class Domain:
    """Which float values a model takes, as probed at capture: missing values (null, sent as NaN) and
    magnitudes up to ``limit`` (models that compute in float32 refuse what overflows it)."""

    nullable: bool = True
    limit: float | None = None

    def json_schema(self, kind: str) -> dict[str, Any]:
        item: dict[str, Any] = dict(_JSON_TYPES[kind])
        if kind == FLOAT:
            if not self.nullable:
                item["type"] = "number"
            if self.limit is not None:
                item.update(minimum=-self.limit, maximum=self.limit)
        return item

    def check(self, array: np.ndarray, feature: str | None) -> None:
        """Raise ``InputError`` at the first value of a float array outside this domain. Infinities are
        never in it: no protocol's JSON can carry them, so one that arrives (a binary tensor, gRPC, CSV's
        ``inf``) is refused on every protocol alike rather than handed to the model."""
        if self.limit is None and math.isfinite(array.sum()):
            return  # no infinity and no NaN: one pass over the values, where finding the first bad one takes two
        _refuse_first(array, np.isinf(array), "a finite number", feature)
        if not self.nullable:
            _refuse_first(array, np.isnan(array), "a number (this model does not take missing values)", feature)
        if self.limit is not None:
            _refuse_first(array, np.abs(array) > self.limit, f"a number within ±{self.limit:.6g}", feature)

    def to_dict(self) -> dict[str, Any]:
        return {"nullable": self.nullable, "limit": self.limit}


@dataclass(frozen=True)
class Column:
    """One named feature of a table: its element kind and the exact pandas dtype to rebuild.

    ``name`` is the feature's JSON key; ``label`` is the DataFrame's own column label when that is not
    this text (``read_csv(header=None)`` labels columns 0, 1, 2: their keys are "0", "1", "2"). An
    ``optional`` feature is one the model was found not to use: a request may leave it out, and it is
    then given ``fill`` (a value of the sample)."""

    name: str
    kind: str
    dtype: str
    categories: tuple[Any, ...] | None = None
    domain: Domain = Domain()
    label: int | float | bool | None = None
    optional: bool = False
    fill: Any = None

    @property
    def key(self) -> Any:
        """The column's label in the model's DataFrame."""
        return self.name if self.label is None else self.label

    def json_schema(self) -> dict[str, Any]:
        if self.kind == CATEGORY:
            item = {"enum": [*self.categories, None]} if self.categories is not None else {}
        else:
            item = self.domain.json_schema(self.kind)
        notes = []
        if self.label is not None:
            notes.append(f"the DataFrame column labelled {self.label!r} ({type(self.label).__name__})")
        if self.optional:
            notes.append(f"optional: the model does not use it (left out, it is {self.fill!r})")
        return item | ({"description": "; ".join(notes)} if notes else {})


@dataclass(frozen=True)
class TensorSchema:
    """Rows of a NumPy array: ``shape`` is the shape of one row (``()`` for one value a row)."""

    kind: str
    dtype: str
    shape: tuple[int, ...]
    domain: Domain = Domain()

    def decode(self, instances: Any) -> np.ndarray:
        """Turn JSON rows into the array the model expects, or raise ``InputError``."""
        _require_rows(instances)
        if self.kind in OBJECT_KINDS:
            return self._decode_objects(instances, OBJECT_KINDS[self.kind])
        array = _convert(_as_array(instances, self.shape), instances, self.kind, self.dtype, feature=None)
        if self.kind == FLOAT:
            self.domain.check(array, None)
        return array

    def decode_raw(self, parts: list[bytes]) -> np.ndarray:
        """Rows sent as raw bytes, one part a row (a file upload, an OIP ``BYTES`` tensor), as the model's
        values (PIL images for an image model), or ``InputError`` naming the first part that is not one."""
        kind = OBJECT_KINDS.get(self.kind)
        if kind is None or kind.from_bytes is None:
            raise InputError(f"this model takes {self.describe()}, not raw bytes: send JSON rows")
        if not parts:
            raise InputError("no rows were sent: send at least one")
        values = []
        for i, raw in enumerate(parts):
            try:
                values.append(kind.from_bytes(raw))
            except Exception as error:  # noqa: BLE001 - decoders (Pillow's) raise many types on bad bytes
                reason = str(error).split(" <")[0]  # Pillow names the BytesIO object: no news to the sender
                raise InputError(f"row {i}: not {kind.expected} ({type(error).__name__}: {reason})") from None
        return objects(values)

    def _decode_objects(self, instances: list[Any], kind: ObjectKind) -> np.ndarray:
        if kind.from_bytes is None:
            for i, row in enumerate(instances):
                if not kind.is_value(row):
                    raise InputError(f"row {i}: expected {kind.expected}, got {_describe_value(row)}")
            return objects(instances)
        return self.decode_raw([_from_base64(row, i, kind) for i, row in enumerate(instances)])

    def decode_columns(self, columns: Any) -> np.ndarray:
        """Like ``decode``, for data sent by column: an object with one entry, the rows of the tensor."""
        if not isinstance(columns, dict) or len(columns) != 1:
            raise InputError("this model takes one input tensor: send an object with exactly one entry, its rows")
        return self.decode(next(iter(columns.values())))

    def encode(self, data: Any) -> list[Any]:
        """Turn model input rows into JSON-ready rows."""
        kind = OBJECT_KINDS.get(self.kind)
        if kind is not None and kind.to_bytes is not None:
            return [base64.b64encode(kind.to_bytes(value)).decode() for value in data]
        return to_jsonable(list(data) if kind is not None else np.asarray(data))

    def example_rows(self, count: int = 2) -> list[Any]:
        """Rows made from the schema alone (no captured data): the API docs' example when keys are required."""
        return [_nested(_placeholder(self.kind, None), self.shape) for _ in range(count)]

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one row."""
        item = self.domain.json_schema(self.kind)
        for size in reversed(self.shape):
            item = {"type": "array", "items": item, "minItems": size, "maxItems": size}
        return item

    def describe(self) -> str:
        if self.kind in OBJECT_KINDS:
            return f"{self.kind} rows ({OBJECT_KINDS[self.kind].expected} each)"
        return f"{self.dtype} rows of shape {list(self.shape)}"

    def to_dict(self) -> dict[str, Any]:
        spec = {"type": "tensor", "kind": self.kind, "dtype": self.dtype, "shape": list(self.shape)}
        return spec | ({"domain": self.domain.to_dict()} if self.domain != Domain() else {})


@dataclass(frozen=True)
class TableSchema:
    """Rows of a pandas DataFrame, sent as objects keyed by feature name or as lists in column order."""

    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def labels(self) -> list[Any]:
        """The column labels of the model's DataFrame, in order (``names`` are their JSON keys)."""
        return [c.key for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if not c.optional]

    def decode(self, instances: Any) -> Any:
        """Turn JSON rows into a DataFrame with the captured columns and dtypes, or raise ``InputError``."""
        _require_rows(instances)
        return self._frame(self._columns_of(instances))

    def decode_columns(self, columns: Any) -> Any:
        """Like ``decode``, for data sent by column: ``{"feature": [value per row], ...}``."""
        if not isinstance(columns, dict):
            raise InputError(f"expected an object of columns keyed by feature name, got {_type_name(columns)}")
        names = self.names
        missing = [n for n in self.required if n not in columns]
        if missing:
            raise InputError(f"missing feature {quoted(missing)}; expected {quoted(names)}")
        unknown = sorted(str(k) for k in columns.keys() - set(names))
        if unknown:
            raise InputError(f"unknown feature {quoted(unknown)}; expected {quoted(names)}")
        given = [n for n in names if n in columns]
        for name in given:
            if not isinstance(columns[name], list):
                raise InputError(
                    f"feature '{name}': expected a list of values, one per row, got {_type_name(columns[name])}"
                )
        lengths = {len(columns[n]) for n in given}
        if len(lengths) != 1:
            raise InputError(
                "the columns have different lengths: " + ", ".join(f"'{n}': {len(columns[n])}" for n in given)
            )
        if lengths == {0}:
            raise InputError("the columns are empty: send at least one row")
        rows = lengths.pop()
        return self._frame({c.name: columns[c.name] if c.name in columns else [c.fill] * rows for c in self.columns})

    def _frame(self, values: dict[str, list[Any]]) -> Any:
        import pandas as pd

        data = {}
        for column in self.columns:
            raw = values[column.name]
            if column.kind == CATEGORY:
                data[column.key] = _categorical(raw, column)
            elif column.kind == DATETIME:
                data[column.key] = _datetimes(raw, column)
            else:
                array = _convert(_as_array(raw, ()), raw, column.kind, _numpy_dtype(column), column.name)
                if column.kind == FLOAT:
                    column.domain.check(array, column.name)
                data[column.key] = array
        frame = pd.DataFrame(data, copy=False)
        for column in self.columns:
            if str(frame[column.key].dtype) != column.dtype:
                frame[column.key] = frame[column.key].astype(column.dtype)
        return frame

    def _columns_of(self, instances: list[Any]) -> dict[str, list[Any]]:
        names = self.names
        if isinstance(instances[0], dict):
            expected = set(names)
            optional = {c.name: c.fill for c in self.columns if c.optional}
            for i, row in enumerate(instances):
                if not isinstance(row, dict):
                    raise InputError(f"row {i}: every row must be an object like row 0, got {_type_name(row)}")
                if row.keys() != expected:
                    missing = [n for n in names if n not in row and n not in optional]
                    if missing:
                        raise InputError(f"row {i}: missing feature {quoted(missing)}; expected {quoted(names)}")
                    unknown = sorted(str(k) for k in row.keys() - expected)
                    if unknown:
                        raise InputError(f"row {i}: unknown feature {quoted(unknown)}; expected {quoted(names)}")
            if optional:
                return {n: [row.get(n, optional.get(n)) for row in instances] for n in names}
            return {n: [row[n] for row in instances] for n in names}
        for i, row in enumerate(instances):
            if not isinstance(row, list):
                raise InputError(
                    f"row {i}: expected an object keyed by feature name or a list of {len(names)} values, "
                    f"got {_type_name(row)}"
                )
            if len(row) != len(names):
                raise InputError(f"row {i} has {len(row)} values, expected {len(names)}: {quoted(names)}")
        return {n: list(col) for n, col in zip(names, zip(*instances))}

    def encode(self, data: Any) -> list[Any]:
        """Turn a DataFrame into JSON-ready rows (objects keyed by feature name)."""
        return to_jsonable(data)

    def example_rows(self, count: int = 2) -> list[Any]:
        """Rows made from the schema alone (no captured data): the API docs' example when keys are required."""
        return [{c.name: _placeholder(c.kind, c.categories) for c in self.columns} for _ in range(count)]

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one row: an object keyed by feature name, or a list in column order."""
        return {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {c.name: c.json_schema() for c in self.columns},
                    "required": self.required,
                    "additionalProperties": False,
                },
                {
                    "type": "array",
                    "prefixItems": [c.json_schema() for c in self.columns],
                    "minItems": len(self.columns),
                    "maxItems": len(self.columns),
                },
            ]
        }

    def describe(self) -> str:
        text = "table of " + ", ".join(f"{c.name}: {c.dtype}" for c in self.columns)
        labelled = [c for c in self.columns if c.label is not None]
        if labelled:
            text += (
                f" (the JSON keys {quoted([c.name for c in labelled])} stand for the DataFrame's column "
                f"labels {', '.join(repr(c.label) for c in labelled)})"
            )
        optional = [c.name for c in self.columns if c.optional]
        if optional:
            text += f"; {quoted(optional)} may be left out of an object row: the model does not use them"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "table",
            "columns": [
                {"name": c.name, "kind": c.kind, "dtype": c.dtype}
                | ({"categories": list(c.categories)} if c.categories is not None else {})
                | ({"domain": c.domain.to_dict()} if c.domain != Domain() else {})
                | ({"label": c.label} if c.label is not None else {})
                | ({"optional": True, "fill": c.fill} if c.optional else {})
                for c in self.columns
            ],
        }


Schema = TensorSchema | TableSchema


def infer_schema(data: Any) -> Schema:
    """Infer the schema of rows of ``data`` (an array-like or a pandas DataFrame)."""
    if is_dataframe(data):
        if len(set(map(str, data.columns))) != len(data.columns):
            raise InputError(f"the sample's column labels {list(data.columns)!r} are not unique as text: rename them")
        return TableSchema(tuple(_column_of(name, data.iloc[:, i]) for i, name in enumerate(data.columns)))
    array = np.asarray(data)
    if array.ndim == 0:
        raise InputError("a sample must have rows: got a single value; wrap it in a list")
    kind = _kind_of_array(array)
    dtype = "object" if kind in (STR, ANY) else str(array.dtype)
    return TensorSchema(kind=kind, dtype=dtype, shape=tuple(array.shape[1:]))


def schema_from_dict(spec: dict[str, Any]) -> Schema:
    """Rebuild a schema from its ``to_dict`` form (as stored in bundle.json)."""
    if spec["type"] == "tensor":
        return TensorSchema(spec["kind"], spec["dtype"], tuple(spec["shape"]), Domain(**spec.get("domain", {})))
    return TableSchema(
        tuple(
            Column(
                c["name"],
                c["kind"],
                c["dtype"],
                tuple(c["categories"]) if "categories" in c else None,
                Domain(**c.get("domain", {})),
                c.get("label"),
                c.get("optional", False),
                c.get("fill"),
            )
            for c in spec["columns"]
        )
    )


def as_rows(sample: Any) -> Any:
    """Normalise a user-given sample to a NumPy array or a DataFrame, the two shapes a schema knows."""
    if is_dataframe(sample) or isinstance(sample, np.ndarray):
        return sample
    if type(sample).__module__.startswith("pandas") and hasattr(sample, "to_numpy"):
        return sample.to_numpy()
    if type(sample).__module__ == "torch" and hasattr(sample, "detach"):  # a torch.Tensor
        return sample.detach().cpu().numpy()
    if isinstance(sample, (list, tuple)) and sample and all(isinstance(r, dict) for r in sample):
        import pandas as pd

        return pd.DataFrame.from_records(sample)
    if isinstance(sample, (list, tuple)) and _object_kind(sample) is not None:
        return objects(sample)  # NumPy would read images' pixels, make bytes fixed-width, chats a grid
    if isinstance(sample, (list, tuple)):
        return np.asarray(sample)
    raise InputError(
        f"cannot use a {type(sample).__name__} as a sample: pass a NumPy array, a pandas DataFrame, "
        "a torch tensor or a list of rows"
    )


def head(data: Any, rows: int) -> Any:
    """The first ``rows`` rows of an array or DataFrame."""
    return data.iloc[:rows] if is_dataframe(data) else data[:rows]


def take_rows(data: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of model input or output, keeping its type."""
    return data.iloc[start:stop] if hasattr(data, "iloc") else data[start:stop]


def concat_rows(parts: list[Any]) -> Any:
    """Join model inputs of one schema into one batch: arrays along the first axis, DataFrames and lists
    by rows."""
    if isinstance(parts[0], list):
        return [row for part in parts for row in part]
    if is_dataframe(parts[0]):
        import pandas as pd

        return pd.concat(parts, ignore_index=True)
    return np.concatenate(parts)


def differences(expected: Any, actual: Any, where: str, rtol: float, atol: float) -> list[str]:
    """Where ``actual`` departs from ``expected`` (JSON values): labels exactly, numbers within tolerance."""
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: expected {len(expected)} values, got {len(actual)}"]
        found: list[str] = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            label = f"{where}, row {i}" if where.count(",") == 0 else f"{where}[{i}]"
            found += differences(e, a, label, rtol, atol)
        return found
    if isinstance(expected, dict) and isinstance(actual, dict):  # a pipeline's rows: {"label", "score"}
        if expected.keys() != actual.keys():
            return [f"{where}: expected the keys {sorted(expected)}, got {sorted(actual)}"]
        return [d for key in expected for d in differences(expected[key], actual[key], f"{where}[{key!r}]", rtol, atol)]
    numbers = (int, float)
    if isinstance(expected, numbers) and isinstance(actual, numbers) and not isinstance(expected, bool):
        if math.isclose(expected, actual, rel_tol=rtol, abs_tol=atol):
            return []
    elif expected == actual:
        return []
    return [f"{where}: expected {expected!r}, got {actual!r}"]


def to_jsonable(value: Any) -> Any:
    """Convert model data (NumPy, pandas, scalars) into plain JSON values; NaN becomes ``None``."""
    return orjson.loads(dumps(value))


def dumps(value: Any) -> bytes:
    """Serialise model data to JSON bytes, fast, with NumPy and pandas values encoded natively."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):  # object or string arrays, which orjson does not take natively
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if is_dataframe(value):
        return value.to_dict(orient="records")
    module = type(value).__module__
    if module.startswith("pandas"):
        if hasattr(value, "isoformat"):
            return None if value != value else value.isoformat()  # NaT is not equal to itself
        if hasattr(value, "tolist"):
            return value.tolist()
        if value is _pandas_na():
            return None
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, float) or hasattr(value, "__float__"):
        return float(value)
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def _pandas_na() -> Any:
    import pandas as pd

    return pd.NA


def is_dataframe(value: Any) -> bool:
    """A pandas DataFrame, told without importing pandas (it may not be installed)."""
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _column_of(name: Any, series: Any) -> Column:
    kind, dtype, categories = _kind_of_series(series)
    return Column(str(name), kind, dtype, categories, label=_label(name))


def _label(name: Any) -> int | float | bool | None:
    """A column label that is not text, as a JSON value (None for text: the name is the label)."""
    if isinstance(name, str):
        return None
    if isinstance(name, np.generic):
        name = name.item()
    if isinstance(name, (int, float, bool)):
        return name
    raise InputError(
        f"the sample's column label {name!r} is a {type(name).__name__}: only text and number labels can be "
        "served; rename the columns (df.columns = [str(c) for c in df.columns]) before fitting"
    )


def _kind_of_series(series: Any) -> tuple[str, str, tuple[Any, ...] | None]:
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return CATEGORY, "category", tuple(to_jsonable(dtype.categories.to_numpy()))
    for test, kind in (
        (pd.api.types.is_bool_dtype, BOOL),
        (pd.api.types.is_integer_dtype, INT),
        (pd.api.types.is_float_dtype, FLOAT),
        (pd.api.types.is_datetime64_any_dtype, DATETIME),
    ):
        if test(dtype):
            return kind, str(dtype), None
    values = series.dropna()
    return (STR if all(isinstance(v, str) for v in values) else ANY), str(dtype), None


def _kind_of_array(array: np.ndarray) -> str:
    code = array.dtype.kind
    if code == "f":
        return FLOAT
    if code in "iu":
        return INT
    if code == "b":
        return BOOL
    if code in "US":
        return STR
    if code == "M":
        return DATETIME
    if code == "O" and all(isinstance(v, str) or v is None for v in array.ravel()):
        return STR
    kind = _object_kind(array) if code == "O" and array.ndim == 1 else None
    return ANY if kind is None else kind


def _object_kind(values: Any) -> str | None:
    """The ``OBJECT_KINDS`` kind of all of ``values``, if they have one."""
    for kind in OBJECT_KINDS.values():
        if len(values) and all(kind.is_value(v) for v in values):
            return kind.name
    return None


def objects(values: Any) -> np.ndarray:
    """A one-dimensional object array of ``values``, one element each, whatever they are (lists too)."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _from_base64(row: Any, index: int, kind: ObjectKind) -> bytes:
    """The bytes of a row sent as base64 text (a ``data:`` URL's too, as browsers make them)."""
    if not isinstance(row, str):
        raise InputError(f"row {index}: expected {kind.expected} as base64 text, got {_describe_value(row)}")
    if row.startswith("data:") and "," in row:
        row = row.split(",", 1)[1]
    try:
        return base64.b64decode(row, validate=True)
    except ValueError as error:  # binascii.Error, or text that is not ASCII
        raise InputError(f"row {index}: expected {kind.expected} as base64 text; it is not base64 ({error})") from None


def _numpy_dtype(column: Column) -> str:
    """The NumPy dtype that carries a column's values before pandas casts them ("Int64" → "int64")."""
    if column.kind in (FLOAT, INT, BOOL):
        try:
            return str(np.dtype(column.dtype))
        except TypeError:  # a pandas extension dtype: Int64, Float32, boolean
            return {"boolean": "bool"}.get(column.dtype, column.dtype.lower())
    return "object"


def _require_rows(instances: Any) -> None:
    if not isinstance(instances, list):
        raise InputError(f'"instances" must be a list of rows, got {_type_name(instances)}')
    if not instances:
        raise InputError('"instances" is empty: send at least one row')


def _as_array(rows: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    """``np.asarray`` of the rows, checked against the per-row shape, with an error naming the first bad row."""
    try:
        array = np.asarray(rows)
    except (ValueError, TypeError):  # ragged rows
        array = None
    if array is not None and array.shape == (len(rows), *shape):
        return array
    for i, row in enumerate(rows):
        found = _shape_of(row)
        if found != shape:
            if not shape:
                raise InputError(f"row {i}: expected a single value, got {_describe_value(row)}")
            if found is None or len(found) != len(shape):
                raise InputError(f"row {i}: expected a list of shape {list(shape)}, got {_describe_value(row)}")
            raise InputError(f"row {i} has shape {list(found)}, expected {list(shape)}")
    raise InputError(f"rows do not form an array of row shape {list(shape)}")


def _shape_of(value: Any) -> tuple[int, ...] | None:
    """The shape of a nested list, or None where its rows are ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = {_shape_of(v) for v in value}
    if len(inner) != 1:
        return None
    shape = inner.pop()
    return None if shape is None else (len(value), *shape)


def _convert(array: np.ndarray, rows: list[Any], kind: str, dtype: str, feature: str | None) -> np.ndarray:
    """Cast ``array`` (``np.asarray(rows)``) to ``dtype``, refusing values of the wrong kind.

    The common case is one dtype check; ``rows`` is walked only when NumPy's guess is not already right.
    """
    code = array.dtype.kind
    if kind == FLOAT:
        if code in "fiub":
            return array.astype(dtype, copy=False)
        _check(rows, lambda v: v is None or _is_number(v), "a number or null", feature)
        try:
            return np.array(rows, dtype=dtype)  # null becomes NaN
        except OverflowError:
            _check(rows, lambda v: v is None or _fits_float(v), "a number within ±1.8e308", feature)
            raise
    if kind == INT:
        info = np.iinfo(dtype)
        if code == "b" or (code in "iu" and (not array.size or info.min <= array.min() and array.max() <= info.max)):
            return array.astype(dtype, copy=False)
        _check(
            rows,
            lambda v: _is_number(v) and (isinstance(v, int) or v.is_integer()) and info.min <= v <= info.max,
            f"an integer (from {info.min} to {info.max})",
            feature,
        )
        return np.array(rows, dtype=dtype)
    if kind == BOOL:
        if code != "b":
            _check(rows, lambda v: isinstance(v, bool), "true or false", feature)
        return array
    if kind == STR:  # checked even when NumPy made strings: it turns ["a", 5] into ["a", "5"]
        _check(rows, lambda v: v is None or isinstance(v, str), "a string or null", feature)
    return array if code == "O" else np.array(rows, dtype=object)


def _placeholder(kind: str, categories: tuple[Any, ...] | None) -> Any:
    """A value of ``kind`` that says nothing about any captured row."""
    if kind == CATEGORY and categories:
        return to_jsonable(categories[0])  # the categories are in the published schema already
    return {
        FLOAT: 0.0,
        INT: 0,
        BOOL: False,
        DATETIME: "2024-01-01T00:00:00",
        IMAGE: _ONE_PIXEL_PNG,
        BYTES: "AAAA",
        CHAT: [{"role": "user", "content": "text"}],
    }.get(kind, "text")


# A 1x1 white PNG, base64: the docs' example image when the captured sample may not be shown.
_ONE_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"


def _nested(value: Any, shape: tuple[int, ...]) -> Any:
    for size in reversed(shape):
        value = [value] * size
    return value


def _refuse_first(array: np.ndarray, bad: np.ndarray, expected: str, feature: str | None) -> None:
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    value = array[index]
    got = (
        "null"
        if np.isnan(value)
        else "Infinity"
        if value > 0
        else "-Infinity"
        if np.isinf(value)
        else repr(float(value))
    )
    raise InputError(f"{_where(index, feature)}: expected {expected}, got {got}")


def _where(index: tuple[int, ...], feature: str | None) -> str:
    """Where a value is in a request: its row, and its feature or position within the row."""
    where = f"row {index[0]}" + (f", feature '{feature}'" if feature is not None else "")
    if feature is None and len(index) > 1:
        where += ", position " + ",".join(str(i) for i in index[1:])
    return where


def _check(rows: list[Any], ok: Any, expected: str, feature: str | None) -> None:
    """Raise an InputError at the first element of ``rows`` that ``ok`` refuses."""
    for index, value in _walk(rows):
        if not ok(value):
            raise InputError(f"{_where(index, feature)}: expected {expected}, got {_describe_value(value)}")


def _walk(value: Any, index: tuple[int, ...] = ()) -> Any:
    if isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*index, i))
    else:
        yield index, value


def _categorical(values: list[Any], column: Column) -> Any:
    import pandas as pd

    known = set(column.categories or ())
    for i, value in enumerate(values):
        if value is not None and value not in known:
            raise InputError(
                f"row {i}, feature '{column.name}': unknown category {_describe_value(value)}; "
                f"known: {quoted(list(column.categories or ()))}"
            )
    return pd.Categorical(values, categories=list(column.categories or ()))


def _datetimes(values: list[Any], column: Column) -> Any:
    import pandas as pd

    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise InputError(
                f"row {i}, feature '{column.name}': expected a date-time string, got {_describe_value(value)}"
            )
    try:
        return pd.to_datetime(values, format="ISO8601").astype(column.dtype)
    except (ValueError, TypeError) as error:
        for i, value in enumerate(values):
            try:
                pd.to_datetime([value], format="ISO8601").astype(column.dtype)
            except (ValueError, TypeError):
                raise InputError(
                    f"row {i}, feature '{column.name}': {value!r} is not a date-time of this feature's kind "
                    f"({column.dtype}): send ISO 8601 text such as '2024-01-31T12:00:00'"
                ) from None
        raise InputError(f"feature '{column.name}': {error}") from None


def _fits_float(value: float) -> bool:
    try:
        float(value)  # a Python int beyond 1.8e308 does not
    except OverflowError:
        return False
    return True


def _is_number(value: Any) -> bool:
    # JSON true and false count as 1 and 0 where numbers go: NumPy casts them so on the vectorised path,
    # and refusing them there would cost a scan of every value of every request.
    return isinstance(value, (int, float))


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _describe_value(value: Any) -> str:
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:  # an integer beyond 64 bits
        text = str(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_type_name(value)} {text}"


def quoted(names: list[Any]) -> str:
    """Names as error messages list them: 'a', 'b'."""
    return ", ".join(f"'{n}'" for n in names)
