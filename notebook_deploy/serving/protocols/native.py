"""notebook-deploy's own API: ``POST /{method}`` with ``{"instances": [row, ...]}``, answered with
``{"predictions": [...]}``, one entry per row, described in OpenAPI from the bundle's schema.

A model of image or bytes rows also takes them raw: an ``application/octet-stream`` body is one row, and a
``multipart/form-data`` body one row per file part, in order (``curl -F file=@cat.png``).

A text generator also gets ``POST /generate``: one prompt in, its text streamed as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from ... import generation
from ...errors import InputError, RequestError
from ...schema import TensorSchema, chat_json_schema, dumps, takes_bytes
from .. import auth
from ..core import predictions
from ..served import DETAIL, RAW_BODIES, event, json_request
from ..web import event_stream, json_body, route

if TYPE_CHECKING:
    from ..served import FastHandler, ServedModel


def add_routes(served: ServedModel) -> None:
    for method in served.bundle.methods:
        answer = predictions(served, method)  # what the fast lane answers too, where it may (core.py)
        route(
            served,
            f"/{method}",
            _endpoint(answer, _raw_answer(served, method) if takes_bytes(served.bundle.input_schema) else None, method),
            access=auth.PREDICT,
            methods=["POST"],
            name=method,
            summary=f"Call the model's {method} on a batch of rows",
            openapi_extra=_openapi_for(served, method),
            response_class=Response,
        )
    if generation.kind(served.predictor.model) == generation.GENERATOR:
        route(
            served,
            "/generate",
            _generate(served),
            access=auth.PREDICT,
            methods=["POST"],
            summary="Generate text from a prompt, streamed as Server-Sent Events",
            openapi_extra=GENERATE_OPENAPI,
            response_class=Response,
        )


def _generate(served: ServedModel) -> Callable[[Request], Awaitable[Response]]:
    async def generate(request: Request) -> Response:
        payload = await json_body(request)
        if not isinstance(payload, dict):
            raise RequestError(400, 'expected a JSON object {"prompt": text} or {"messages": [...]}')
        prompt = generation.check_prompt(payload.get("messages", payload.get("prompt")), "prompt")
        sampling = generation.Sampling.from_request(payload)

        run = served.predictor.generate("generate", prompt, sampling)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for piece in run:
                    if isinstance(piece, str):
                        yield event({"text": piece})
                    else:
                        usage = {"prompt_tokens": piece.prompt_tokens, "completion_tokens": piece.completion_tokens}
                        yield event({"finish_reason": piece.finish_reason, "usage": usage})
            finally:  # the client went away: the model stops
                run.close()

        return await event_stream(events(), DETAIL)

    return generate


_SAMPLING = {
    "max_tokens": {"type": "integer", "minimum": 1, "description": "At most this many new tokens"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2, "description": "0 or absent: greedy"},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
}
_MESSAGES = chat_json_schema()
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


def _endpoint(
    answer: FastHandler, raw: Callable[[Request, str], Awaitable[bytes]] | None, method: str
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if raw is not None and media.encode() in RAW_BODIES:
            return Response(await raw(request, media), media_type="application/json")
        return Response(await answer(await request.body()), media_type="application/json")

    endpoint.__name__ = method
    return endpoint


def _raw_answer(served: ServedModel, method: str) -> Callable[[Request, str], Awaitable[bytes]]:
    schema = served.bundle.input_schema
    assert isinstance(schema, TensorSchema)  # only for rows that are bytes on the wire (takes_bytes)
    decode_raw = schema.decode_raw
    predict = served.predictor.predict

    async def answer(request: Request, media: str) -> bytes:
        if media == "application/octet-stream":
            parts = [await request.body()]
        else:
            form = await request.form()  # python-multipart; a malformed body is answered 400 by Starlette
            parts = []
            for name, value in form.multi_items():
                if not isinstance(value, UploadFile):
                    raise InputError(
                        f"form field '{name}' is not a file: send each row as a file part (curl -F 'file=@cat.png')"
                    )
                parts.append(await value.read())
        return dumps({"predictions": await predict(method, decode_raw(parts))})

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
                },
                **(_raw_content() if takes_bytes(served.bundle.input_schema) else {}),
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


def _raw_content() -> dict[str, Any]:
    """The raw bodies an image or bytes model takes besides JSON."""
    file = {"type": "string", "format": "binary"}
    return {
        "application/octet-stream": {"schema": file},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "description": "one row per file part, in order; any part names",
                "properties": {"file": {"type": "array", "items": file}},
            }
        },
    }
