"""Schemas: inference from a sample, JSON rows <-> model data, JSON Schema, and every refusal path."""

from __future__ import annotations

import datetime as dt

import numpy as np
import orjson
import pandas as pd
import pytest

from notebook_deploy.errors import InputError
from notebook_deploy.schema import (
    TableSchema,
    TensorSchema,
    as_rows,
    infer_schema,
    schema_from_dict,
    to_jsonable,
)

jsonschema = pytest.importorskip("jsonschema")


def wire(rows):
    """What a request body does to rows: JSON text and back."""
    return orjson.loads(orjson.dumps(rows))


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": np.array([1, -2, 3], dtype="int64"),
            "f": [1.5, np.nan, 3.25],
            "s": pd.Series(["paris", None, "oslo"], dtype="str"),
            "c": pd.Categorical(["x", "y", "x"]),
            "b": [True, False, True],
            "d": pd.to_datetime(["2024-01-01 00:00:00", "2024-02-03 04:05:06", "2024-03-01 12:00:00"]),
        }
    )


@pytest.fixture(scope="module")
def table(frame) -> TableSchema:
    return infer_schema(frame)


GOOD_ROW = {"i": 7, "f": 0.5, "s": "rome", "c": "y", "b": False, "d": "2024-05-06T07:08:09"}
NAMES = list(GOOD_ROW)


def good_list() -> list:
    return [GOOD_ROW[n] for n in NAMES]


def changed(**values) -> dict:
    return {**GOOD_ROW, **values}


def without(name: str) -> dict:
    return {k: v for k, v in GOOD_ROW.items() if k != name}


# -- inference ---------------------------------------------------------------------------------------
def test_infer_table_schema_kinds_and_dtypes(table):
    assert isinstance(table, TableSchema)
    assert table.names == NAMES
    assert [(c.kind, c.dtype) for c in table.columns] == [
        ("int", "int64"),
        ("float", "float64"),
        ("str", "str"),
        ("category", "category"),
        ("bool", "bool"),
        ("datetime", "datetime64[us]"),
    ]
    assert table.columns[3].categories == ("x", "y")


@pytest.mark.parametrize(
    "array, kind, dtype, shape",
    [
        (np.zeros((3, 4)), "float", "float64", (4,)),
        (np.zeros((3, 4), dtype="float32"), "float", "float32", (4,)),
        (np.zeros((3, 2), dtype="int64"), "int", "int64", (2,)),
        (np.zeros((2, 3, 4), dtype="float32"), "float", "float32", (3, 4)),
        (np.array([True, False]), "bool", "bool", ()),
        (np.array(["good film", "bad film"]), "str", "object", ()),
        (np.array(["good film", None], dtype=object), "str", "object", ()),
        ([[1.0, 2.0], [3.0, 4.0]], "float", "float64", (2,)),
    ],
)
def test_infer_tensor_schema(array, kind, dtype, shape):
    assert infer_schema(array) == TensorSchema(kind=kind, dtype=dtype, shape=shape)


def test_infer_schema_refuses_a_single_value():
    with pytest.raises(InputError, match="single value"):
        infer_schema(np.float64(3.0))


# -- round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "array",
    [
        np.array([[0.1, -2.5, 1e300], [np.nan, 4.0, -0.0]]),
        np.arange(12, dtype="float32").reshape(3, 4) / 7,
        np.array([[1, -2], [2**40, 0]], dtype="int64"),
        np.arange(24, dtype="float32").reshape(2, 3, 4),
        np.array([[True, False], [False, False]]),
        np.array([1.0, 2.0, 3.0]),
    ],
    ids=["float64", "float32", "int64", "float32-3d", "bool", "float64-1d"],
)
def test_tensor_round_trip(array):
    schema = infer_schema(array)
    rows = wire(schema.encode(array))
    assert isinstance(rows, list) and len(rows) == len(array)
    back = schema.decode(rows)
    assert isinstance(back, np.ndarray)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_float_tensor_nan_is_sent_as_null():
    array = np.array([[1.0, np.nan]])
    assert infer_schema(array).encode(array) == [[1.0, None]]


def test_text_round_trip():
    texts = np.array(["a good film", "", "ünïcödé ✓", "bad"])
    schema = infer_schema(texts)
    rows = wire(schema.encode(texts))
    assert rows == ["a good film", "", "ünïcödé ✓", "bad"]
    back = schema.decode(rows)
    assert back.dtype == object
    assert back.shape == (4,)
    assert back.tolist() == texts.tolist()


def test_table_round_trip_as_objects(frame, table):
    rows = wire(table.encode(frame))
    assert rows[0] == {"i": 1, "f": 1.5, "s": "paris", "c": "x", "b": True, "d": "2024-01-01T00:00:00"}
    assert rows[1]["f"] is None and rows[1]["s"] is None
    back = table.decode(rows)
    assert dict(back.dtypes.astype(str)) == dict(frame.dtypes.astype(str))
    pd.testing.assert_frame_equal(back, frame)


def test_table_round_trip_as_lists_in_column_order(frame, table):
    rows = [[row[n] for n in NAMES] for row in wire(table.encode(frame))]
    back = table.decode(rows)
    pd.testing.assert_frame_equal(back, frame)


def test_table_object_rows_in_any_key_order(frame, table):
    rows = [dict(reversed(list(row.items()))) for row in wire(table.encode(frame))]
    pd.testing.assert_frame_equal(table.decode(rows), frame)


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(pd.to_datetime(["2024-01-01 00:00", "2024-06-02 10:00"], utc=True)),
        pd.Series(pd.Categorical([3, 1, 3])),
        pd.Series(np.array([1.5, 2.5], dtype="float32")),
        pd.Series(np.array([5, 6], dtype="int32")),
    ],
    ids=["datetime-utc", "int-category", "float32", "int32"],
)
def test_table_round_trip_other_dtypes(column):
    frame = pd.DataFrame({"x": column})
    schema = infer_schema(frame)
    pd.testing.assert_frame_equal(schema.decode(wire(schema.encode(frame))), frame)


def test_datetime_with_and_without_fractional_seconds_round_trips():
    # Timestamp.isoformat() writes "...T00:00:00" for whole seconds and "...T04:05:06.250000" otherwise,
    # so encode itself produces rows of mixed ISO forms that decode has to read back.
    frame = pd.DataFrame({"d": pd.to_datetime(["2024-01-01 00:00:00", "2024-02-03 04:05:06.25"], format="ISO8601")})
    schema = infer_schema(frame)
    rows = wire(schema.encode(frame))
    pd.testing.assert_frame_equal(schema.decode(rows), frame)


def test_datetime_missing_value_round_trips_and_fits_json_schema():
    frame = pd.DataFrame({"d": pd.to_datetime(["2024-01-01", None])})
    schema = infer_schema(frame)
    rows = wire(schema.encode(frame))
    assert rows == [{"d": "2024-01-01T00:00:00"}, {"d": None}]
    pd.testing.assert_frame_equal(schema.decode(rows), frame)
    validator = jsonschema.Draft202012Validator(schema.json_schema())
    assert [e.message for row in rows for e in validator.iter_errors(row)] == []


# -- to_dict / schema_from_dict --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sample",
    [np.zeros((2, 4)), np.zeros((2, 3), dtype="int64"), np.array(["a", "b"]), np.zeros((2, 3, 4), dtype="float32")],
    ids=["float64", "int64", "text", "3d"],
)
def test_tensor_schema_dict_round_trip(sample):
    schema = infer_schema(sample)
    spec = wire(schema.to_dict())
    assert spec["type"] == "tensor"
    assert schema_from_dict(spec) == schema


def test_table_schema_dict_round_trip(frame, table):
    spec = wire(table.to_dict())
    assert spec["type"] == "table"
    assert [c["name"] for c in spec["columns"]] == NAMES
    assert spec["columns"][3]["categories"] == ["x", "y"]
    assert "categories" not in spec["columns"][0]
    rebuilt = schema_from_dict(spec)
    assert rebuilt == table
    pd.testing.assert_frame_equal(rebuilt.decode(wire(table.encode(frame))), frame)


# -- accepted edge values ---------------------------------------------------------------------------------
def test_integral_float_is_accepted_for_int_feature(table):
    back = table.decode([changed(i=3.0)])
    assert back["i"].dtype == np.dtype("int64")
    assert back["i"].tolist() == [3]


def test_integral_float_is_accepted_for_int_tensor():
    schema = infer_schema(np.zeros((1, 2), dtype="int64"))
    back = schema.decode([[3.0, 1], [4, 5]])
    assert back.dtype == np.dtype("int64")
    assert back.tolist() == [[3, 1], [4, 5]]


def test_ints_and_null_are_accepted_for_float_feature(table):
    back = table.decode([changed(f=2), changed(f=None)])
    assert back["f"].dtype == np.dtype("float64")
    assert back["f"].iloc[0] == 2.0 and np.isnan(back["f"].iloc[1])


def test_null_category_is_accepted(table):
    back = table.decode([changed(c=None)])
    assert back["c"].isna().all()
    assert list(back["c"].cat.categories) == ["x", "y"]


# -- refusals: tables ------------------------------------------------------------------------------------
TABLE_ERRORS = [
    ("list row too short", [good_list(), good_list()[:-1]], ["row 1 has 5 values, expected 6"]),
    ("list row too long", [good_list(), [*good_list(), 1]], ["row 1 has 7 values, expected 6"]),
    ("string for float", [GOOD_ROW, changed(f="abc")], ["row 1", "feature 'f'", "expected a number"]),
    ("numeric string for float", [GOOD_ROW, changed(f="1.5")], ["row 1", "feature 'f'", "expected a number", '"1.5"']),
    ("numeric string for int", [GOOD_ROW, changed(i="3")], ["row 1", "feature 'i'", "expected an integer"]),
    ("2.5 for int", [GOOD_ROW, changed(i=2.5)], ["row 1", "feature 'i'", "expected an integer", "2.5"]),
    ("null for int", [GOOD_ROW, changed(i=None)], ["row 1", "feature 'i'", "expected an integer", "null"]),
    ("number for bool", [GOOD_ROW, changed(b=1)], ["row 1", "feature 'b'", "expected true or false"]),
    ("string for bool", [GOOD_ROW, changed(b="true")], ["row 1", "feature 'b'", "expected true or false"]),
    ("null for bool", [GOOD_ROW, changed(b=None)], ["row 1", "feature 'b'", "expected true or false"]),
    ("number for str", [changed(s=None), changed(s=5)], ["row 1", "feature 's'", "expected a string"]),
    ("unknown category", [GOOD_ROW, changed(c="z")], ["row 1", "feature 'c'", "unknown category", '"z"', "'x', 'y'"]),
    (
        "unparseable datetime",
        [GOOD_ROW, changed(d="not a date")],
        ["row 1", "feature 'd'", "'not a date'", "not a date-time"],
    ),
    ("number for datetime", [GOOD_ROW, changed(d=12345)], ["row 1", "feature 'd'", "expected a date-time string"]),
    ("unknown extra feature", [GOOD_ROW, changed(extra=1)], ["row 1", "unknown feature 'extra'", "'i', 'f'"]),
    ("missing feature", [GOOD_ROW, without("b")], ["row 1", "missing feature 'b'", "expected 'i', 'f'"]),
    ("object then list", [GOOD_ROW, good_list()], ["row 1", "every row must be an object like row 0", "a list"]),
    (
        "list then object",
        [good_list(), GOOD_ROW],
        ["row 1", "keyed by feature name or a list of 6 values", "an object"],
    ),
    ("scalar row", [good_list(), 5], ["row 1", "a list of 6 values", "a number"]),
    ("string row", ["i,f,s"], ["row 0", "a list of 6 values", "a string"]),
    ("instances is an object", {"i": 1}, ['"instances" must be a list of rows', "an object"]),
    ("instances is a string", "rows", ['"instances" must be a list of rows', "a string"]),
    ("instances is null", None, ['"instances" must be a list of rows', "null"]),
    ("instances is empty", [], ['"instances" is empty']),
]


def assert_refused(schema, instances, fragments):
    with pytest.raises(InputError) as info:
        schema.decode(instances)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("instances, fragments", [case[1:] for case in TABLE_ERRORS], ids=[c[0] for c in TABLE_ERRORS])
def test_table_decode_refusals(table, instances, fragments):
    assert_refused(table, instances, fragments)


def test_number_in_string_feature_is_refused_after_a_string_row(table):
    # np.asarray(["rome", 5]) is a '<U' array, so the fast path must not take it for all strings.
    with pytest.raises(InputError, match=r"row 1, feature 's': expected a string"):
        table.decode([GOOD_ROW, changed(s=5)])


def test_mixed_iso_datetime_forms_are_read_or_refused_with_input_error(table):
    # Both are valid ISO 8601; decode must read them (or at worst raise InputError), never leak a ValueError.
    rows = [changed(d="2024-01-01"), changed(d="2024-02-03T04:05:06")]
    try:
        back = table.decode(rows)
    except InputError:
        return
    assert back["d"].tolist() == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-03 04:05:06")]


# -- refusals: tensors -----------------------------------------------------------------------------------
FLOAT4 = TensorSchema(kind="float", dtype="float64", shape=(4,))
INT2 = TensorSchema(kind="int", dtype="int64", shape=(2,))
BOOL2 = TensorSchema(kind="bool", dtype="bool", shape=(2,))
TEXT = TensorSchema(kind="str", dtype="object", shape=())
IMAGE = TensorSchema(kind="float", dtype="float32", shape=(2, 2))

TENSOR_ERRORS = [
    ("row too short", FLOAT4, [[1, 2, 3, 4], [1, 2, 3]], ["row 1 has shape [3], expected [4]"]),
    ("row too long", FLOAT4, [[1, 2, 3, 4], [1, 2, 3, 4, 5]], ["row 1 has shape [5], expected [4]"]),
    ("ragged inside a row", FLOAT4, [[1, 2, 3, 4], [1, [2], 3, 4]], ["row 1", "expected a list of shape [4]"]),
    ("scalar row", FLOAT4, [[1, 2, 3, 4], 5], ["row 1", "expected a list of shape [4]", "a number 5"]),
    ("string row", FLOAT4, [[1, 2, 3, 4], "abcd"], ["row 1", "expected a list of shape [4]", "a string"]),
    ("too deep", FLOAT4, [[[1], [2], [3], [4]]], ["row 0", "expected a list of shape [4]"]),
    ("string for float", FLOAT4, [[1, 2, 3, 4], [1, "x", 3, 4]], ["row 1, position 1", "expected a number", '"x"']),
    ("numeric string", FLOAT4, [[1, 2, 3, 4], [1, 2, "1.5", 4]], ["row 1, position 2", "expected a number", '"1.5"']),
    ("all numeric strings", FLOAT4, [["1", "2", "3", "4"]], ["row 0, position 0", "expected a number", '"1"']),
    ("2.5 for int", INT2, [[1, 2], [2.5, 1]], ["row 1, position 0", "expected an integer", "2.5"]),
    ("null for int", INT2, [[1, 2], [3, None]], ["row 1, position 1", "expected an integer", "null"]),
    ("numeric string for int", INT2, [[1, 2], [3, "4"]], ["row 1, position 1", "expected an integer"]),
    ("number for bool", BOOL2, [[True, False], [True, 0]], ["row 1, position 1", "expected true or false"]),
    ("wrong inner shape", IMAGE, [[[1, 2], [3, 4]], [[1, 2], [3]]], ["row 1"]),
    ("list for text", TEXT, ["fine", ["not", "fine"]], ["row 1", "expected a single value", "a list"]),
    ("number for text", TEXT, [None, 5], ["row 1", "expected a string", "a number 5"]),
    ("instances is an object", FLOAT4, {"instances": []}, ['"instances" must be a list of rows', "an object"]),
    ("instances is a number", FLOAT4, 3, ['"instances" must be a list of rows', "a number"]),
    ("instances is empty", FLOAT4, [], ['"instances" is empty']),
]


@pytest.mark.parametrize(
    "schema, instances, fragments", [case[1:] for case in TENSOR_ERRORS], ids=[c[0] for c in TENSOR_ERRORS]
)
def test_tensor_decode_refusals(schema, instances, fragments):
    assert_refused(schema, instances, fragments)


def test_number_in_text_input_is_refused_after_a_string_row():
    # np.asarray(["fine", 5]) stringifies the 5; a text model must not be handed an int.
    with pytest.raises(InputError, match=r"row 1: expected a string"):
        TEXT.decode(["fine", 5])


@pytest.mark.parametrize(
    "schema, instances, expected",
    [
        (INT2, [[True, 2]], [[1, 2]]),
        (INT2, [[True, False]], [[1, 0]]),
        (INT2, [[1, 2], [False, 3]], [[1, 2], [0, 3]]),
        (FLOAT4, [[True, 1.5, 2, 3]], [[1.0, 1.5, 2.0, 3.0]]),
    ],
    ids=["int-first", "int-all-bool", "int-later-row", "float"],
)
def test_booleans_count_as_one_and_zero_where_numbers_go(schema, instances, expected):
    # One rule whatever the neighbouring values: NumPy's casting on the vectorised path.
    decoded = schema.decode(instances)
    assert decoded.dtype == np.dtype(schema.dtype)
    assert decoded.tolist() == expected


# -- JSON Schema ------------------------------------------------------------------------------------------
def errors_of(schema, row) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema.json_schema())
    return [e.message for e in validator.iter_errors(row)]


def test_json_schemas_are_valid_draft_2020_12(table):
    for schema in (table, FLOAT4, INT2, BOOL2, TEXT, IMAGE):
        jsonschema.Draft202012Validator.check_schema(schema.json_schema())


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).normal(size=(5, 4)),
        np.arange(6, dtype="int64").reshape(3, 2),
        np.array(["x", "y"]),
        np.arange(8, dtype="float32").reshape(2, 2, 2),
    ],
    ids=["float64", "int64", "text", "float32-3d"],
)
def test_tensor_json_schema_accepts_encoded_rows(array):
    schema = infer_schema(array)
    for row in wire(schema.encode(array)):
        assert errors_of(schema, row) == []


@pytest.mark.parametrize(
    "row",
    [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, "2", 3.0, 4.0], 1.0],
    ids=["short", "long", "string", "scalar"],
)
def test_tensor_json_schema_rejects_bad_rows(row):
    assert errors_of(FLOAT4, row) != []
    assert errors_of(FLOAT4, [1.0, 2.0, None, 4.0]) == []  # null is NaN, accepted by decode too


def test_int_json_schema_rejects_fraction():
    assert errors_of(INT2, [1, 2]) == []
    assert errors_of(INT2, [1, 2.5]) != []


def test_table_json_schema_accepts_encoded_rows_as_objects_and_lists(frame, table):
    for row in wire(table.encode(frame)):
        assert errors_of(table, row) == []
        assert errors_of(table, [row[n] for n in NAMES]) == []


@pytest.mark.parametrize(
    "row",
    [
        good_list()[:-1],
        [*good_list(), 1],
        without("b"),
        changed(extra=1),
        changed(c="z"),
        changed(i="3"),
        changed(b=1),
    ],
    ids=["short-list", "long-list", "missing", "extra", "unknown-category", "string-for-int", "int-for-bool"],
)
def test_table_json_schema_rejects_bad_rows(table, row):
    assert errors_of(table, good_list()) == []
    assert errors_of(table, GOOD_ROW) == []
    assert errors_of(table, row) != []


# -- as_rows and to_jsonable -------------------------------------------------------------------------------
def test_as_rows_passes_arrays_and_frames_through(frame):
    array = np.zeros((2, 3))
    assert as_rows(array) is array
    assert as_rows(frame) is frame


def test_as_rows_converts_lists_series_and_records():
    rows = as_rows([[1.0, 2.0], [3.0, 4.0]])
    assert isinstance(rows, np.ndarray) and rows.shape == (2, 2)
    assert isinstance(as_rows(([1, 2], [3, 4])), np.ndarray)
    series = as_rows(pd.Series([1.5, 2.5]))
    assert isinstance(series, np.ndarray) and series.tolist() == [1.5, 2.5]
    records = as_rows([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert isinstance(records, pd.DataFrame)
    assert list(records.columns) == ["a", "b"] and records["a"].tolist() == [1, 2]


@pytest.mark.parametrize("sample", [5, "text", {"a": [1, 2]}, None], ids=["int", "str", "dict", "none"])
def test_as_rows_refuses_other_things(sample):
    with pytest.raises(InputError, match="cannot use a .* as a sample"):
        as_rows(sample)


@pytest.mark.parametrize(
    "value, expected",
    [
        (np.float32(1.5), 1.5),
        (np.int64(3), 3),
        (np.bool_(True), True),
        (float("nan"), None),
        (np.array([[1.0, np.nan], [2.0, 3.0]]), [[1.0, None], [2.0, 3.0]]),
        (np.array(["a", "b"]), ["a", "b"]),
        (np.array(["a", None], dtype=object), ["a", None]),
        (pd.Timestamp("2024-01-02 03:04:05"), "2024-01-02T03:04:05"),
        (pd.NaT, None),
        (pd.NA, None),
        (dt.date(2024, 1, 2), "2024-01-02"),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        ((1, 2), [1, 2]),
        ({"k": np.float64(2.0)}, {"k": 2.0}),
        (pd.Series([1, 2]), [1, 2]),
        (pd.DataFrame({"a": [1, 2], "b": [np.nan, 0.5]}), [{"a": 1, "b": None}, {"a": 2, "b": 0.5}]),
    ],
    ids=lambda v: type(v).__name__,
)
def test_to_jsonable(value, expected):
    result = to_jsonable(value)
    assert result == expected
    assert type(result) is type(expected)


def test_to_jsonable_refuses_unknown_objects():
    with pytest.raises(TypeError):
        to_jsonable(object())


@pytest.mark.parametrize(
    "schema, rows, message",
    [
        (
            TensorSchema("int", "int64", (2,)),
            [[2**70, 1]],
            "row 0, position 0: expected an integer (from -9223372036854775808",
        ),
        (TensorSchema("int", "int64", (2,)), [[1, 2], [3, 2**63]], "row 1, position 1: expected an integer"),
        (TensorSchema("int", "int32", (1,)), [[2**40]], "expected an integer (from -2147483648 to 2147483647)"),
        (
            TensorSchema("float", "float64", (2,)),
            [[2**1100, 1]],
            "row 0, position 0: expected a number within ±1.8e308",
        ),
    ],
)
def test_numbers_beyond_the_dtype_are_refused_not_wrapped(schema, rows, message):
    with pytest.raises(InputError) as error:
        schema.decode(rows)
    assert message in str(error.value)


def test_integer_column_labels_are_text_keys_in_json_and_labels_again_in_the_frame():
    frame = pd.DataFrame({0: [1.5, 2.5], 1: ["a", "b"], 2: [3, 4]})
    schema = infer_schema(frame)
    assert schema.names == ["0", "1", "2"] and schema.labels == [0, 1, 2]
    rows = schema.encode(frame)
    assert rows == [{"0": 1.5, "1": "a", "2": 3}, {"0": 2.5, "1": "b", "2": 4}]
    again = schema_from_dict(orjson.loads(orjson.dumps(schema.to_dict())))
    for decoded in (
        again.decode(rows),
        again.decode([[1.5, "a", 3], [2.5, "b", 4]]),
        again.decode_columns({"0": [1.5, 2.5], "1": ["a", "b"], "2": [3, 4]}),
    ):
        pd.testing.assert_frame_equal(decoded, frame)


def test_a_column_label_that_is_neither_text_nor_a_number_is_refused_with_what_to_do():
    frame = pd.DataFrame([[1.0, 2.0]], columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2)]))
    with pytest.raises(InputError, match=r"only text and number labels can be served; rename the columns"):
        infer_schema(frame)


def test_an_optional_column_may_be_left_out_of_object_rows_and_columns_and_is_filled():
    spec = {
        "type": "table",
        "columns": [
            {"name": "x", "kind": "float", "dtype": "float64"},
            {"name": "id", "kind": "int", "dtype": "int64", "optional": True, "fill": 7},
        ],
    }
    schema = schema_from_dict(spec)
    assert schema.to_dict() == spec
    expected = pd.DataFrame({"x": [1.0, 2.0], "id": [7, 3]})
    pd.testing.assert_frame_equal(schema.decode([{"x": 1.0}, {"x": 2.0, "id": 3}]), expected)
    pd.testing.assert_frame_equal(schema.decode_columns({"x": [1.0, 2.0]}), expected.assign(id=[7, 7]))
    with pytest.raises(InputError, match="row 0: missing feature 'x'"):
        schema.decode([{"id": 1}])
    with pytest.raises(InputError, match="row 1 has 1 values, expected 2"):
        schema.decode([[1.0, 2], [1.0]])  # rows as lists still give every column, in order
    assert schema.json_schema()["anyOf"][0]["required"] == ["x"]


def test_the_float_domain_takes_finite_values_whose_sum_overflows_and_refuses_the_rest():
    """Domain.check accepts on one sum when it is finite; a sum that overflows says nothing by itself."""
    from notebook_deploy.schema import Domain

    strict = TensorSchema("float", "float64", (2,), Domain(nullable=False))
    assert strict.decode([[1e308, 1e308]]).tolist() == [[1e308, 1e308]]  # the sum is inf, the values are not
    with pytest.raises(InputError, match="row 0, position 1: expected a number .*got null"):
        strict.decode([[1.0, None]])
    nullable = TensorSchema("float", "float64", (2,), Domain(nullable=True))
    assert np.isnan(nullable.decode([[1.0, None]])[0, 1])
    with pytest.raises(InputError, match="expected a finite number"):
        nullable.decode(np.array([[1.0, np.inf]]).tolist())
    bounded = TensorSchema("float", "float64", (2,), Domain(limit=10.0))
    with pytest.raises(InputError, match="expected a number within ±10"):
        bounded.decode([[1.0, 11.0]])
