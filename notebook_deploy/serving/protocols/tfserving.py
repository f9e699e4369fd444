"""TensorFlow Serving's REST API, so that its clients work unchanged.

``POST /v1/models/{name}:predict`` (also under ``/versions/{version}`` and ``/labels/{label}``) takes the
row format ``{"instances": [...]}``, answered with ``{"predictions": [...]}``, or the columnar format
``{"inputs": ...}``, answered with ``{"outputs": [...]}``. ``signature_name`` picks the method
(``serving_default`` is ``predict``). ``GET /v1/models/{name}`` reports the model's status and
``/metadata`` its signature. Errors are ``{"error": message}``, as TF Serving sends them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response

from ...errors import RequestError
from ...methods import default_method
from .. import auth
from ..served import ErrorShape
from ..web import json_body, json_response, route

if TYPE_CHECKING:
    from ..served import ServedModel

DEFAULT_SIGNATURE = "serving_default"
ERRORS = ErrorShape(
    lambda status, message: {"error": message},
    {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
)


def add_routes(served: ServedModel) -> None:
    bundle, predictor = served.bundle, served.predictor
    schema = bundle.input_schema

    def check_name(request: Request) -> None:
        name = request.path_params["name"]
        if name != bundle.name:
            raise RequestError(404, f"Servable not found for request: Latest({name}); this server has '{bundle.name}'")

    async def predict(request: Request) -> Response:
        check_name(request)
        payload = await json_body(request)
        if not isinstance(payload, dict) or ("instances" in payload) == ("inputs" in payload):
            raise RequestError(400, 'expected a JSON object with either "instances" (rows) or "inputs" (columns)')
        method = _method(payload.get("signature_name"), predictor.methods)
        if "instances" in payload:
            return json_response({"predictions": await predictor.predict(method, schema.decode(payload["instances"]))})
        inputs = payload["inputs"]
        data = schema.decode_columns(inputs) if isinstance(inputs, dict) else schema.decode(inputs)
        return json_response({"outputs": await predictor.predict(method, data)})

    async def status(request: Request) -> Response:
        check_name(request)
        return json_response(
            {
                "model_version_status": [
                    {
                        "version": bundle.version,
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
        )

    async def metadata(request: Request) -> Response:
        check_name(request)
        signatures = {
            (DEFAULT_SIGNATURE if m == "predict" else m): {
                "method_name": m,
                "inputs": bundle.schema_document["input"],
                "outputs": bundle.schema_document["outputs"][m],
            }
            for m in predictor.methods
        }
        return json_response(
            {
                "model_spec": {"name": bundle.name, "signature_name": "", "version": bundle.version},
                "metadata": {"signature_def": {"signature_def": signatures}},
            }
        )

    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "example": bundle.name}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    label = {"name": "label", "in": "path", "required": True, "schema": {"type": "string"}}
    errors = {**ERRORS.responses(), "404": _not_found()}
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "signature_name": {"type": "string", "enum": [DEFAULT_SIGNATURE, *predictor.methods]},
                        "instances": {"type": "array", "minItems": 1, "items": schema.json_schema()},
                        "inputs": {},
                    },
                },
                "example": {"instances": served.example()["instances"]},
            }
        },
    }
    answer = {
        "description": "Predictions (row format) or outputs (columnar format)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    for prefix, parameters in (
        ("/v1/models/{name}", [name]),
        ("/v1/models/{name}/versions/{version}", [name, version]),
        ("/v1/models/{name}/labels/{label}", [name, label]),
    ):
        route(
            served,
            prefix + ":predict",
            predict,
            access=auth.PREDICT,
            methods=["POST"],
            errors=ERRORS,
            summary="TF Serving: predict",
            response_class=Response,
            tags=["TF Serving"],
            openapi_extra={"parameters": parameters, "requestBody": body, "responses": {"200": answer, **errors}},
        )
    route(
        served,
        "/v1/models/{name}",
        status,
        access=auth.OPEN,
        methods=["GET"],
        errors=ERRORS,
        summary="TF Serving: model status",
        response_class=Response,
        tags=["TF Serving"],
        openapi_extra={"parameters": [name], "responses": {"200": _object("The model's version status"), **errors}},
    )
    route(
        served,
        "/v1/models/{name}/metadata",
        metadata,
        access=auth.ADMIN,
        methods=["GET"],
        errors=ERRORS,
        summary="TF Serving: model metadata",
        response_class=Response,
        tags=["TF Serving"],
        openapi_extra={"parameters": [name], "responses": {"200": _object("The model's signatures"), **errors}},
    )


def _method(signature: Any, methods: list[str]) -> str:
    if signature in (None, "", DEFAULT_SIGNATURE):
        return default_method(methods)
    if signature in methods:
        return signature
    raise RequestError(400, f"unknown signature_name {signature!r}: use {DEFAULT_SIGNATURE!r} or one of {methods}")


def _object(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def _not_found() -> dict[str, Any]:
    return {
        "description": "No model of this name is served here",
        "content": {"application/json": {"schema": ERRORS.schema}},
    }
