"""The Open Inference Protocol (V2), as KServe, Seldon MLServer and Triton speak it, over REST; the tensor
codec here is shared with the gRPC service (``oip_grpc``).

Routes: ``GET /v2`` (server metadata), ``GET /v2/health/live`` and ``/v2/health/ready``,
``GET /v2/models/{name}`` (model metadata), ``GET /v2/models/{name}/ready`` and
``POST /v2/models/{name}/infer``, the model routes also under ``/versions/{version}``. Errors are
``{"error": message}``, as the protocol has them.

Tensors ⇄ model data:

- a model captured on an array (``TensorSchema``) takes one input tensor, ``input-0`` of shape
  ``[-1, *row_shape]`` (any name is accepted for it); its datatype follows the array's dtype
  (``FP64``, ``INT64``, ``BOOL``...; ``BYTES`` for text and objects). Rows of images or bytes are
  ``BYTES`` elements of raw bytes (binary extension, gRPC) or base64 text (JSON); a chat row is the JSON
  text of its messages;
- a model captured on a DataFrame (``TableSchema``) takes one input per column, named after the column,
  of shape ``[-1]`` (``[-1, 1]`` is accepted too); text, categories and date-times travel as ``BYTES``
  (UTF-8; date-times in ISO 8601). The columns go through ``TableSchema.decode_columns``, so values that
  do not fit get the same 422 naming the feature as the native API;
- each inference method is one output, named after it (``predict``, ``predict_proba``...); answers that
  are not numbers or text (a pipeline's ``{label, score}``) are ``BYTES`` elements of JSON text. A request
  that names no outputs gets ``predict`` (the first method where there is none) — not every output, as
  the protocol would have it, so that a plain request costs one model call.

Triton's binary tensor extension is served in both directions: with a request header
``Inference-Header-Content-Length: N`` the first N bytes of the body are the JSON request and the rest
the raw data of the inputs that set ``parameters.binary_data_size`` (little-endian, row-major; each
``BYTES`` element preceded by its length in 4 bytes). An output asked for with
``parameters.binary_data: true`` (or every output, with the request parameter ``binary_data_output``)
is sent the same way after the JSON answer, its size in its ``parameters.binary_data_size``.

Malformed requests (not the protocol's shape, counts that do not match shapes, unknown datatypes or
outputs) are answered 400; data that does not fit the model's input, 422.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response

from ...errors import InputError, RequestError
from ...methods import default_method
from ...schema import (
    BOOL,
    CATEGORY,
    CHAT,
    FLOAT,
    INT,
    OBJECT_KINDS,
    TableSchema,
    TensorSchema,
    dumps,
    objects,
    quoted,
    to_jsonable,
)
from ...version import __version__
from .. import auth
from ..served import DETAIL, ErrorShape, parse_json
from ..web import json_response, route

if TYPE_CHECKING:
    from ...bundle import Bundle
    from ...schema import Schema
    from ..served import ServedModel

SERVER_NAME = "notebook-deploy"
PLATFORM = "notebook-deploy"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
TENSOR_INPUT = "input-0"

BYTES = "BYTES"
NUMERIC = {
    "BOOL": "bool",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
DATATYPES = [*NUMERIC, BYTES]
_OF_DTYPE = {np.dtype(dtype): datatype for datatype, dtype in NUMERIC.items()}
_LENGTH = struct.Struct("<I")

ERRORS = ErrorShape(
    lambda status, message: {"error": message},
    {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
)
# Answers made before a route's handler runs (keys, the body size limit, unmatched paths) say "detail".
_ANY_ERROR_SCHEMA = {"anyOf": [ERRORS.schema, DETAIL.schema]}


@dataclass
class Tensor:
    """A tensor of the protocol: ``data`` holds its elements flat, in row-major order — a NumPy array of a
    numeric dtype, or of dtype object holding ``str`` for ``BYTES``."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


# -- tensors: JSON and raw bytes ----------------------------------------------------------------------


def datatype_of(dtype: Any) -> str:
    """The protocol's datatype of a NumPy dtype (``BYTES`` for text, objects and anything not numeric)."""
    return _OF_DTYPE.get(np.dtype(dtype), BYTES)


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def from_raw(raw: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """The flat elements of a tensor sent as raw bytes; ``RequestError(400)`` when they do not add up."""
    count = element_count(shape)
    if datatype == BYTES:
        values: list[bytes] = []  # as sent: text or image bytes, as the model's schema decides (OipModel.decode)
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise RequestError(400, f"input '{name}': its raw BYTES data ends inside an element's length")
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise RequestError(400, f"input '{name}': element {len(values)} of its raw BYTES data is cut short")
            values.append(raw[offset : offset + length])
            offset += length
        if len(values) != count:
            raise RequestError(400, f"input '{name}' has {len(values)} elements; its shape {shape} needs {count}")
        return objects(values)
    dtype = np.dtype(NUMERIC[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            400,
            f"input '{name}' has {len(raw)} bytes of raw data; shape {shape} of {datatype} needs "
            f"{count * dtype.itemsize}",
        )
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))  # a copy the model may write to


def to_raw(tensor: Tensor) -> bytes:
    """A tensor's elements as raw bytes: little-endian, row-major; ``BYTES`` elements length-prefixed."""
    if tensor.datatype == BYTES:
        parts = []
        for value in tensor.data:
            encoded = value.encode() if isinstance(value, str) else bytes(value)
            parts.append(_LENGTH.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    return np.ascontiguousarray(tensor.data, dtype=tensor.data.dtype.newbyteorder("<")).tobytes()


def from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """The flat elements of a tensor's JSON ``data`` (flat or nested lists)."""
    if not isinstance(data, list):
        raise RequestError(400, f'input \'{name}\': "data" must be a list of values, flat or nested')
    count = element_count(shape)
    flat: Any = data
    if any(isinstance(value, list) for value in data):
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, RecursionError):  # ragged, or too deep for NumPy
            array = None
        if array is not None and array.dtype.kind in "biuf" and array.size == count:
            flat = array.ravel()
        else:
            flat = _flatten(data)
    if len(flat) != count:
        raise RequestError(400, f"input '{name}' has {len(flat)} values; its shape {shape} needs {count}")
    if isinstance(flat, np.ndarray):
        return flat
    if datatype != BYTES and all(isinstance(v, (int, float)) for v in flat):
        try:
            return np.asarray(flat)
        except OverflowError:
            pass
    return objects(flat)


def json_data(tensor: Tensor) -> Any:
    """A tensor's elements as the flat JSON ``data`` of an answer (NaN and infinities become null)."""
    if tensor.datatype == BYTES:
        return [v if isinstance(v, str) else bytes(v).decode(errors="replace") for v in tensor.data]
    return tensor.data


def _flatten(data: list[Any]) -> list[Any]:
    """Nested lists flattened without recursion (the body decides how deep they go)."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _text(raw: bytes, name: str, index: int) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise RequestError(400, f"input '{name}': element {index} is not UTF-8 text") from None


def _as_text(tensor: Tensor) -> None:
    """Raw ``BYTES`` elements (binary data, gRPC) as UTF-8 text, for a model that takes text, not bytes."""
    if tensor.datatype == BYTES and any(isinstance(v, bytes) for v in tensor.data):
        tensor.data = objects([_text(v, tensor.name, i) for i, v in enumerate(tensor.data)])


# -- the model behind both transports -----------------------------------------------------------------


class OipModel:
    """What REST and gRPC share: the model's identity and metadata, tensors ⇄ model data, and inference."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self.bundle = served.bundle
        self.predictor = served.predictor
        self.schema: Schema = served.bundle.input_schema
        self.name = self.bundle.name
        self.version = self.bundle.version
        self.methods = list(self.predictor.methods)
        self.default_method = default_method(self.methods)
        self.inputs = _inputs_metadata(self.schema)
        self.outputs = [_output_metadata(method, self.bundle.output_schema(method)) for method in self.methods]

    def check(self, name: str, version: str = "") -> None:
        """``RequestError(404)`` unless ``name`` (and ``version``, where given) is the model served."""
        if name != self.name:
            raise RequestError(404, f"model '{name}' is not served here; this server serves '{self.name}'")
        if version and version != self.version:
            raise RequestError(
                404, f"model '{name}' has no version '{version}' here; the version served is '{self.version}'"
            )

    @staticmethod
    def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }

    def requested(self, names: list[str]) -> list[str]:
        """The methods that answer the outputs ``names`` (no names: the default method)."""
        if not names:
            return [self.default_method]
        unknown = [n for n in names if n not in self.methods]
        if unknown:
            raise RequestError(
                400, f"unknown output {quoted(unknown)}: this model's outputs are {quoted(self.methods)}"
            )
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise RequestError(400, f"output {quoted(twice)} is asked for twice")
        return names

    def decode(self, tensors: list[Tensor]) -> Any:
        """The model input (an array or a DataFrame) that the input tensors carry."""
        if len({t.name for t in tensors}) != len(tensors):
            raise RequestError(400, "two inputs have the same name")
        kind = OBJECT_KINDS.get(self.schema.kind) if isinstance(self.schema, TensorSchema) else None
        if kind is None or not kind.binary:
            for tensor in tensors:
                _as_text(tensor)
        if isinstance(self.schema, TableSchema):
            return self._decode_table(self.schema, tensors)
        return self._decode_tensor(self.schema, tensors)

    def encode(self, method: str, result: Any) -> Tensor:
        """The output tensor ``method`` answers with, from what the model returned."""
        array = _output_array(result)
        return Tensor(method, datatype_of(array.dtype), list(array.shape), array.ravel())

    async def infer(self, tensors: list[Tensor], outputs: list[str]) -> list[Tensor]:
        """Run the methods of ``outputs`` (no names: the default method) on the inputs ``tensors``."""
        methods = self.requested(outputs)
        data = self.decode(tensors)
        return [self.encode(method, await self.predictor.predict(method, data)) for method in methods]

    def _decode_tensor(self, schema: TensorSchema, tensors: list[Tensor]) -> Any:
        if len(tensors) != 1:
            raise RequestError(
                400,
                f"this model takes one input tensor, '{TENSOR_INPUT}' of shape {self.inputs[0]['shape']}; "
                f"got {len(tensors)}: {quoted([t.name for t in tensors])}",
            )
        tensor = tensors[0]
        row_shape = list(schema.shape)
        shape = tensor.shape
        if not shape or (shape[1:] != row_shape and not (not row_shape and shape[1:] == [1])):
            rows = "one value per row" if not row_shape else f"rows of shape {row_shape}"
            raise InputError(
                f"input '{tensor.name}' has shape {shape}; this model takes shape {[-1, *row_shape]}: {rows}"
            )
        if shape[0] == 0:
            raise InputError(f"input '{tensor.name}' has no rows (shape {shape}): send at least one")
        array = tensor.data.reshape([shape[0], *row_shape])
        if schema.kind in OBJECT_KINDS:
            return _decode_objects(schema, array.tolist())
        code = array.dtype.kind
        if (
            (schema.kind == FLOAT and code in "fiub")
            or (schema.kind == INT and code in "iub")
            or (schema.kind == BOOL and code == "b")
        ):
            array = array.astype(schema.dtype, copy=False)  # what decode does with numbers, without lists
            if schema.kind == FLOAT:
                schema.domain.check(array, None)  # the float values the model was found to take
            return array
        return schema.decode(array.tolist())  # the schema's checks, and its messages naming row and position

    def _decode_table(self, schema: TableSchema, tensors: list[Tensor]) -> Any:
        columns: dict[str, list[Any]] = {}
        for tensor in tensors:
            if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ([], [1]):
                raise InputError(
                    f"input '{tensor.name}' has shape {tensor.shape}; a feature takes shape [-1] "
                    "(or [-1, 1]): one value per row"
                )
            columns[tensor.name] = tensor.data.tolist()
        return schema.decode_columns(columns)


def _decode_objects(schema: TensorSchema, values: list[Any]) -> Any:
    """Rows of images or bytes (each element raw bytes, or base64 text in JSON), or of chats (each element
    the JSON text of a conversation)."""
    if values and all(isinstance(v, bytes) for v in values):
        return schema.decode_raw(values)
    if schema.kind == CHAT:
        try:
            values = [orjson.loads(v) if isinstance(v, str) else v for v in values]
        except orjson.JSONDecodeError as error:
            raise InputError(f"a conversation is not JSON text: {error}") from None
    return schema.decode(values)


def _inputs_metadata(schema: Schema) -> list[dict[str, Any]]:
    if isinstance(schema, TableSchema):
        return [{"name": c.name, "datatype": _column_datatype(c), "shape": [-1]} for c in schema.columns]
    return [{"name": TENSOR_INPUT, "datatype": _kind_datatype(schema.kind, schema.dtype), "shape": [-1, *schema.shape]}]


def _output_metadata(method: str, schema: Schema) -> dict[str, Any]:
    if isinstance(schema, TableSchema):
        kinds = {_column_datatype(c) for c in schema.columns}
        datatype = kinds.pop() if len(kinds) == 1 else BYTES
        return {"name": method, "datatype": datatype, "shape": [-1, len(schema.columns)]}
    return {"name": method, "datatype": _kind_datatype(schema.kind, schema.dtype), "shape": [-1, *schema.shape]}


def _kind_datatype(kind: str, dtype: str) -> str:
    if kind not in (FLOAT, INT, BOOL):
        return BYTES
    try:
        return datatype_of(dtype)
    except TypeError:  # a pandas extension dtype: Int64, Float32, boolean
        return datatype_of({"boolean": "bool"}.get(dtype, dtype.lower()))


def _column_datatype(column: Any) -> str:
    if column.kind == CATEGORY and column.categories:
        if all(isinstance(c, int) and not isinstance(c, bool) for c in column.categories):
            return "INT64"
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in column.categories):
            return "FP64"
    return _kind_datatype(column.kind, column.dtype)


def _output_array(result: Any) -> np.ndarray:
    """What a method returned as an array of a datatype the protocol has."""
    if hasattr(result, "to_numpy") and type(result).__module__.startswith("pandas"):
        result = result.to_numpy()
    array = np.asarray(result)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.dtype.kind == "O":
        try:
            plain = np.asarray(array.tolist())
        except (ValueError, TypeError, OverflowError):
            plain = array
        if plain.dtype.kind in "biuf" and plain.shape == array.shape:
            array = plain
    if array.dtype in _OF_DTYPE:
        return array
    if array.dtype.kind == "f":  # float128 and the like
        return array.astype("float64")
    if array.dtype.kind in "USMm":
        return objects(array.astype(str).ravel().tolist()).reshape(array.shape)
    values = to_jsonable(array.ravel().tolist())
    texts = [v if isinstance(v, str) else "" if v is None else orjson.dumps(v).decode() for v in values]
    return objects(texts).reshape(array.shape)


# -- REST ---------------------------------------------------------------------------------------------


def _size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(400, f"{what} must be a JSON object")
    return value


def _flag(parameters: dict[str, Any], key: str, what: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(400, f'{what}: parameter "{key}" must be true or false')
    return value


Requested = list[tuple[str, "bool | None"]]  # output names, and whether each is to be binary (None: unsaid)


def parse_request(body: bytes, header_length: str | None) -> tuple[list[Tensor], Requested, Any, bool]:
    """A REST inference request: its inputs, its outputs (name, binary or None), its id and whether outputs
    are binary unless they say otherwise."""
    binary = b""
    if header_length is not None:
        length = header_length.strip()
        if not (length.isascii() and length.isdigit()) or int(length) > len(body):
            raise RequestError(
                400,
                f"{HEADER_LENGTH} must be the length of the JSON part of the body, at most {len(body)}; "
                f"got {header_length!r}",
            )
        body, binary = body[: int(length)], body[int(length) :]
    payload = parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise RequestError(400, 'expected a JSON object {"inputs": [{"name", "datatype", "shape", "data"}, ...]}')
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, '"id" must be a string')
    parameters = _object(payload.get("parameters", {}), '"parameters"')
    binary_output = bool(_flag(parameters, "binary_data_output", "the request"))

    inputs: list[Tensor] = []
    offset = 0
    for index, spec in enumerate(payload["inputs"]):
        spec = _object(spec, f"input {index}")
        name = spec.get("name")
        if not isinstance(name, str):
            raise RequestError(400, f'input {index}: "name" must be a string')
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise RequestError(400, f"input '{name}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(_size(d) for d in shape):
            raise RequestError(400, f'input \'{name}\': "shape" must be a list of sizes (integers, 0 or more)')
        tensor_parameters = _object(spec.get("parameters", {}), f"input '{name}': \"parameters\"")
        size = tensor_parameters.get("binary_data_size")
        if size is None:
            if "data" not in spec:
                raise RequestError(400, f'input \'{name}\' has neither "data" nor parameters.binary_data_size')
            data = from_json(spec["data"], datatype, shape, name)
        else:
            if not _size(size):
                raise RequestError(400, f"input '{name}': binary_data_size must be a number of bytes")
            if "data" in spec:
                raise RequestError(400, f'input \'{name}\' has both "data" and parameters.binary_data_size')
            if offset + size > len(binary):
                raise RequestError(
                    400,
                    f"input '{name}': the binary data after the JSON ({len(binary)} bytes) ends before its "
                    f"{size} bytes",
                )
            data = from_raw(binary[offset : offset + size], datatype, shape, name)
            offset += size
        inputs.append(Tensor(name, datatype, shape, data, tensor_parameters))
    if offset != len(binary):
        raise RequestError(
            400,
            f"the body has {len(binary)} bytes of binary data after the JSON; the inputs' binary_data_size "
            f"add up to {offset}",
        )

    outputs: Requested = []
    requested = payload.get("outputs", [])
    if not isinstance(requested, list):
        raise RequestError(400, '"outputs" must be a list of {"name": ...}')
    for index, spec in enumerate(requested):
        spec = _object(spec, f"output {index}")
        name = spec.get("name")
        if not isinstance(name, str):
            raise RequestError(400, f'output {index}: "name" must be a string')
        output_parameters = _object(spec.get("parameters", {}), f"output '{name}': \"parameters\"")
        if output_parameters.get("classification"):
            raise RequestError(400, f"output '{name}': the classification extension is not served")
        outputs.append((name, _flag(output_parameters, "binary_data", f"output '{name}'")))
    return inputs, outputs, request_id, binary_output


def add_routes(served: ServedModel) -> None:
    model = served.app.state.oip = OipModel(served)  # what gRPC serves (oip_grpc): this app's, or a router's

    def check(request: Request) -> None:
        model.check(request.path_params["name"], request.path_params.get("version", ""))

    async def server_metadata() -> Response:
        return json_response(model.server_metadata())

    async def live() -> Response:
        return json_response({"live": True})

    # Not ready answers 400, as the protocol's health routes say false with a 4xx status.
    async def ready() -> Response:
        return json_response({"ready": served.ready}, 200 if served.ready else 400)

    async def model_metadata(request: Request) -> Response:
        check(request)
        return json_response(model.metadata())

    async def model_ready(request: Request) -> Response:
        check(request)
        return json_response({"name": model.name, "ready": served.ready}, 200 if served.ready else 400)

    async def infer(request: Request) -> Response:
        check(request)
        inputs, requested, request_id, binary_output = parse_request(
            await request.body(), request.headers.get(HEADER_LENGTH)
        )
        tensors = await model.infer(inputs, [name for name, _ in requested])
        binary_of = dict(requested)
        answer: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if request_id is not None:
            answer["id"] = request_id
        outputs, buffers = [], []
        for tensor in tensors:
            output: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
            binary = binary_of.get(tensor.name)
            if binary if binary is not None else binary_output:
                raw = to_raw(tensor)
                output["parameters"] = {"binary_data_size": len(raw)}
                buffers.append(raw)
            else:
                output["data"] = json_data(tensor)
            outputs.append(output)
        answer["outputs"] = outputs
        header = dumps(answer)
        if not buffers:
            return Response(header, media_type="application/json")
        return Response(
            header + b"".join(buffers), media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(header))}
        )

    _add(served, model, server_metadata, live, ready, model_metadata, model_ready, infer)


# -- OpenAPI ------------------------------------------------------------------------------------------


def _add(
    served: ServedModel,
    model: OipModel,
    server_metadata: Any,
    live: Any,
    ready: Any,
    model_metadata: Any,
    model_ready: Any,
    infer: Any,
) -> None:
    bundle = served.bundle
    errors = ERRORS.responses()
    for status in ("401", "403", "413"):  # answered before the route's own error handling
        errors[status] = {**errors[status], "content": {"application/json": {"schema": _ANY_ERROR_SCHEMA}}}
    not_found = {
        "404": {
            "description": "No model of this name (or version) is served here",
            "content": {"application/json": {"schema": _ANY_ERROR_SCHEMA}},
        }
    }
    denied = {status: errors[status] for status in ("401", "403")}
    # The one model served, and its one version: any other name or version is answered 404.
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [bundle.name]},
        "example": bundle.name,
    }
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [bundle.version]},
        "example": bundle.version,
    }
    tensor_metadata = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    metadata_schema = {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": tensor_metadata},
            "outputs": {"type": "array", "items": tensor_metadata},
        },
    }
    tags = ["Open Inference Protocol"]

    def answer(description: str, schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
        content: dict[str, Any] = {"schema": schema}
        if example is not None:
            content["example"] = example
        return {"description": description, "content": {"application/json": content}}

    flag = {"type": "object", "properties": {"live": {"type": "boolean"}, "ready": {"type": "boolean"}}}
    for path, endpoint, summary, schema, example in (
        (
            "/v2",
            server_metadata,
            "OIP: server metadata",
            {
                "type": "object",
                "required": ["name", "version", "extensions"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "extensions": {"type": "array", "items": {"type": "string"}},
                },
            },
            model.server_metadata(),
        ),
        ("/v2/health/live", live, "OIP: the server is live", flag, {"live": True}),
        ("/v2/health/ready", ready, "OIP: the server is ready", flag, {"ready": True}),
    ):
        route(
            served,
            path,
            endpoint,
            access=auth.OPEN,
            methods=["GET"],
            errors=ERRORS,
            summary=summary,
            response_class=Response,
            tags=tags,
            openapi_extra={"responses": {"200": answer(summary.split(": ")[1], schema, example)}},
        )

    for prefix, parameters in (
        ("/v2/models/{name}", [name]),
        ("/v2/models/{name}/versions/{version}", [name, version]),
    ):
        route(
            served,
            prefix,
            model_metadata,
            access=auth.PREDICT,
            methods=["GET"],
            errors=ERRORS,
            summary="OIP: model metadata (its input and output tensors)",
            response_class=Response,
            tags=tags,
            openapi_extra={
                "parameters": parameters,
                "responses": {
                    "200": answer(
                        "The model's versions, platform, inputs and outputs", metadata_schema, model.metadata()
                    ),
                    **not_found,
                    **denied,
                },
            },
        )
        route(
            served,
            prefix + "/ready",
            model_ready,
            access=auth.OPEN,
            methods=["GET"],
            errors=ERRORS,
            summary="OIP: the model is ready",
            response_class=Response,
            tags=tags,
            openapi_extra={
                "parameters": parameters,
                "responses": {
                    "200": answer(
                        "The model is loaded",
                        {
                            "type": "object",
                            "required": ["name", "ready"],
                            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
                        },
                    ),
                    **not_found,
                },
            },
        )
        route(
            served,
            prefix + "/infer",
            infer,
            access=auth.PREDICT,
            methods=["POST"],
            errors=ERRORS,
            summary="OIP: run the model on input tensors",
            response_class=Response,
            tags=tags,
            description=(
                "One input per feature (a DataFrame model) or one input tensor (an array model), as "
                "`GET /v2/models/{name}` lists them; one output per inference method. Triton's binary "
                f"tensor extension is served: with the header `{HEADER_LENGTH}`, the body is that many bytes "
                "of JSON followed by the raw data of the inputs that set `parameters.binary_data_size`."
            ),
            openapi_extra={
                "parameters": [
                    *parameters,
                    {
                        "name": HEADER_LENGTH,
                        "in": "header",
                        "required": False,
                        "description": "Binary tensor extension: the length of the JSON part of the body",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _request_schema(model),
                            "example": _example_request(bundle, model, served.example()),
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The outputs; with binary outputs, the JSON part is followed by their bytes",
                        "headers": {
                            HEADER_LENGTH: {
                                "description": "With binary outputs: the length of the JSON part",
                                "schema": {"type": "integer"},
                            }
                        },
                        "content": {
                            "application/json": {"schema": _response_schema()},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    **errors,
                    **not_found,
                    "400": {
                        "description": "Not an inference request of the protocol: the message says why",
                        "content": {"application/json": {"schema": ERRORS.schema}},
                    },
                },
            },
        )


def _request_schema(model: OipModel) -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}}
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": parameters,
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"type": "string", "enum": [i["name"] for i in model.inputs]}
                        if isinstance(model.schema, TableSchema)
                        else {"type": "string"},
                        "datatype": {"type": "string", "enum": DATATYPES},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        },
                        "data": {"type": "array"},
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": model.methods},
                        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                    },
                },
            },
        },
    }


def _response_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string", "enum": DATATYPES},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
                        "data": {"type": "array"},
                    },
                },
            },
        },
    }


def _example_request(bundle: Bundle, model: OipModel, example: dict[str, Any]) -> dict[str, Any]:
    """The docs' example rows (``ServedModel.example``) as an inference request."""
    data = bundle.input_schema.decode(example["instances"])
    if isinstance(bundle.input_schema, TableSchema):
        label = {c.name: c.key for c in bundle.input_schema.columns}  # "0" is the frame's column 0
        inputs = [
            {
                "name": spec["name"],
                "datatype": spec["datatype"],
                "shape": [len(data)],
                "data": to_jsonable(data[label[spec["name"]]]),
            }
            for spec in model.inputs
        ]
    elif bundle.input_schema.kind in OBJECT_KINDS:  # base64 text, or a conversation's JSON text
        rows = example["instances"]
        inputs = [
            {
                "name": TENSOR_INPUT,
                "datatype": BYTES,
                "shape": [len(rows)],
                "data": [r if isinstance(r, str) else orjson.dumps(r).decode() for r in rows],
            }
        ]
    else:
        array = np.asarray(data)
        inputs = [
            {
                "name": TENSOR_INPUT,
                "datatype": model.inputs[0]["datatype"],
                "shape": list(array.shape),
                "data": to_jsonable(array.ravel()),
            }
        ]
    return {"id": "example", "inputs": inputs, "outputs": [{"name": model.default_method}]}
