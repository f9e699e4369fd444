"""MLflow's scoring-server API, so that clients of ``mlflow models serve`` work unchanged.

``POST /invocations`` takes a JSON object with exactly one of ``dataframe_split`` (``{"columns": [...],
"data": [[...]]}``), ``dataframe_records`` (``[{...}, ...]``), ``instances`` (rows) or ``inputs`` (rows
or columns), or a CSV body with a header line (``content-type: text/csv``), and answers
``{"predictions": [...]}``. ``GET /ping`` and ``/health`` answer 200 once the model is loaded;
``/version`` gives the server's version. Errors are ``{"error_code": ..., "message": ...}``.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

from ...errors import RequestError
from ...methods import default_method
from ...version import __version__
from .. import auth
from ..served import ErrorShape
from ..web import json_body, json_response, route

if TYPE_CHECKING:
    from ...schema import Schema
    from ..served import ServedModel

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    422: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


ERRORS = ErrorShape(
    lambda status, message: {"error_code": _CODES.get(status, "INTERNAL_ERROR"), "message": message},
    {
        "type": "object",
        "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
        "required": ["error_code", "message"],
    },
)


def add_routes(served: ServedModel) -> None:
    schema, predictor = served.bundle.input_schema, served.predictor
    method = default_method(predictor.methods)

    async def invocations(request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type == "text/csv":
            data = _decode_csv(schema, await request.body())
        elif content_type == "application/json":
            data = _decode_json(schema, await json_body(request))
        else:
            raise RequestError(415, f"content type {content_type!r} is not served: send application/json or text/csv")
        return json_response({"predictions": await predictor.predict(method, data)})

    async def ping() -> PlainTextResponse:
        return PlainTextResponse("\n")

    async def version() -> PlainTextResponse:
        return PlainTextResponse(__version__)

    one_of = {
        "type": "object",
        "properties": {
            "dataframe_split": {
                "type": "object",
                "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
                "required": ["data"],
            },
            "dataframe_records": {"type": "array", "minItems": 1},
            "instances": {"type": "array", "minItems": 1, "items": schema.json_schema()},
            "inputs": {},
            "params": {"type": "object"},
        },
    }
    route(
        served,
        "/invocations",
        invocations,
        access=auth.PREDICT,
        methods=["POST"],
        errors=ERRORS,
        summary="MLflow: score rows with the model's predict",
        response_class=Response,
        tags=["MLflow"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": one_of, "example": {"instances": served.example()["instances"]}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": {
                    "description": "One prediction per row",
                    "content": {"application/json": {"schema": {"type": "object", "required": ["predictions"]}}},
                },
                **ERRORS.responses(),
                "415": {
                    "description": "Neither JSON nor CSV",
                    "content": {"application/json": {"schema": ERRORS.schema}},
                },
            },
        },
    )
    text = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    for path, endpoint, summary in (
        ("/ping", ping, "MLflow: the model is loaded"),
        ("/health", ping, "MLflow: the model is loaded"),
        ("/version", version, "MLflow: the server's version"),
    ):
        route(
            served,
            path,
            endpoint,
            access=auth.OPEN,
            methods=["GET"],
            summary=summary,
            response_class=PlainTextResponse,
            tags=["MLflow"],
            responses=text,
        )


def _decode_json(schema: Schema, payload: Any) -> Any:
    given = [key for key in FORMATS if isinstance(payload, dict) and key in payload]
    if len(given) != 1:
        raise RequestError(
            400,
            "expected a JSON object with exactly one of "
            + ", ".join(f"'{f}'" for f in FORMATS)
            + (f"; got {', '.join(given)}" if given else ""),
        )
    value = payload[given[0]]
    if given[0] == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise RequestError(400, '"dataframe_split" must be an object {"columns": [...], "data": [[...], ...]}')
        columns = value.get("columns")
        if isinstance(columns, list):  # pandas writes integer labels as numbers: [0, 1]; the keys are "0", "1"
            columns = [str(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else c for c in columns]
        if columns is None or not hasattr(schema, "names") or columns == schema.names:
            return schema.decode(value["data"])
        if not isinstance(columns, list) or not all(
            isinstance(row, list) and len(row) == len(columns) for row in value["data"]
        ):
            raise RequestError(400, '"dataframe_split": every row of "data" must have one value per entry of "columns"')
        return schema.decode([dict(zip(columns, row)) for row in value["data"]])
    if given[0] == "inputs" and isinstance(value, dict):
        return schema.decode_columns(value)
    return schema.decode(value)


def _decode_csv(schema: Schema, body: bytes) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise RequestError(415, "reading CSV needs pandas in the server's environment: send JSON instead") from None
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError) as error:
        raise RequestError(400, f"the CSV body could not be read: {error}") from None
    if hasattr(schema, "names"):
        return schema.decode_columns({str(k): v for k, v in frame.to_dict(orient="list").items()})
    return schema.decode(frame.to_numpy().tolist())
