"""notebook-deploy's own API: ``POST /{method}`` with ``{"instances": [row, ...]}``, answered with
``{"predictions": [...]}``, one entry per row, described in OpenAPI from the bundle's schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response

from ...errors import RequestError
from ...schema import dumps
from .. import auth
from ..served import DETAIL, parse_json

if TYPE_CHECKING:
    from ..served import FastHandler, ServedModel


def add_routes(served: ServedModel) -> None:
    for method in served.bundle.methods:
        answer = _answer(served, method)
        served.route(
            f"/{method}",
            _endpoint(answer, method),
            access=auth.PREDICT,
            methods=["POST"],
            fast=answer,
            name=method,
            summary=f"Call the model's {method} on a batch of rows",
            openapi_extra=_openapi_for(served, method),
            response_class=Response,
        )


def _endpoint(answer: FastHandler, method: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return Response(await answer(await request.body()), media_type="application/json")

    endpoint.__name__ = method
    return endpoint


def _answer(served: ServedModel, method: str) -> FastHandler:
    decode = served.bundle.input_schema.decode
    predict = served.predictor.predict

    async def answer(body: bytes) -> bytes:
        payload = parse_json(body)
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError(422, 'expected a JSON object {"instances": [row, ...]}')
        return dumps({"predictions": await predict(method, decode(payload["instances"]))})

    return answer


def _openapi_for(served: ServedModel, method: str) -> dict[str, Any]:
    row = served.bundle.input_schema.json_schema()
    prediction = served.bundle.output_schema(method).json_schema()
    example = served.example()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["instances"],
                        "properties": {"instances": {"type": "array", "minItems": 1, "items": row}},
                    },
                    "example": {"instances": example["instances"]},
                }
            },
        },
        "responses": {
            "200": {
                "description": "One prediction per row",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["predictions"],
                            "properties": {"predictions": {"type": "array", "items": prediction}},
                        },
                        "example": {"predictions": example["outputs"][method]},
                    }
                },
            },
            **DETAIL.responses(),
        },
    }
