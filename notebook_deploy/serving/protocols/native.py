"""notebook-deploy's own API: ``POST /{method}`` with ``{"instances": [row, ...]}``, answered with
``{"predictions": [...]}``, one entry per row, described in OpenAPI from the bundle's schema. A text
generator also gets ``POST /generate``: one prompt in, its text streamed as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response

from ... import generation
from ...errors import RequestError
from ...schema import dumps
from .. import auth
from ..served import DETAIL, event, event_stream, json_request, parse_json

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
    if generation.kind(served.predictor.model) == generation.GENERATOR:
        served.route(
            "/generate",
            _generate(served),
            access=auth.PREDICT,
            methods=["POST"],
            summary="Generate text from a prompt, streamed as Server-Sent Events",
            openapi_extra=GENERATE_OPENAPI,
            response_class=Response,
        )


def _generate(served: ServedModel) -> Callable[[Request], Awaitable[Response]]:
    model = served.predictor.model

    async def generate(request: Request) -> Response:
        payload = parse_json(await request.body())
        if not isinstance(payload, dict):
            raise RequestError(400, 'expected a JSON object {"prompt": text} or {"messages": [...]}')
        prompt = generation.check_prompt(payload.get("messages", payload.get("prompt")), "prompt")
        sampling = generation.Sampling.from_request(payload)

        async def events() -> AsyncIterator[bytes]:
            async for piece in served.predictor.stream("generate", generation.generate, model, prompt, sampling):
                if isinstance(piece, str):
                    yield event({"text": piece})
                else:
                    usage = {"prompt_tokens": piece.prompt_tokens, "completion_tokens": piece.completion_tokens}
                    yield event({"finish_reason": piece.finish_reason, "usage": usage})

        return await event_stream(events(), DETAIL)

    return generate


_SAMPLING = {
    "max_tokens": {"type": "integer", "minimum": 1, "description": "At most this many new tokens"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2, "description": "0 or absent: greedy"},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
}
_MESSAGES = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
    },
}
GENERATE_OPENAPI: dict[str, Any] = {
    "requestBody": json_request(
        {"type": "object", "properties": {"prompt": {"type": "string"}, "messages": _MESSAGES, **_SAMPLING}},
        {"prompt": "hello world", "max_tokens": 8},
    ),
    "responses": {
        "200": {
            "description": 'Server-Sent Events: `data: {"text": piece}` as the text is made, then '
            '`data: {"finish_reason": "stop" | "length", "usage": {"prompt_tokens", "completion_tokens"}}`; '
            'an error after the start comes as `data: {"detail": message}`',
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **DETAIL.responses(),
    },
}


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
