"""OpenAI's API for the models it fits, so that OpenAI clients work unchanged: a text-generation pipeline
answers ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream: true`` gives OpenAI's
Server-Sent Event chunks, ending with ``data: [DONE]``), a feature-extraction pipeline answers
``POST /v1/embeddings`` (token vectors mean-pooled), and both list themselves at ``GET /v1/models``.

``model`` must name the bundle (its name or reference). Sampling parameters are ``max_tokens``
(``max_completion_tokens``), ``temperature`` (0 or absent: greedy), ``top_p`` and ``stop``; ``n`` other
than 1, tools, ``response_format`` and log probabilities are refused with a 400, other fields ignored.
The prompts of a request, and requests that arrive while a generation runs, are generated together as
one batch where they share their sampling (``Predictor.generate``). Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from ... import generation
from ...errors import RequestError
from .. import auth
from ..served import ErrorShape, event, json_request
from ..web import event_stream, json_body, json_response, route

if TYPE_CHECKING:
    from ..predictor import Generation
    from ..served import ServedModel

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
ERRORS = ErrorShape(
    lambda status, message: {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "param": None,
            "code": None,
        }
    },
    {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
)
# Fields whose meaning this server cannot honour: refused rather than silently ignored.
REFUSED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "logprobs",
    "top_logprobs",
    "suffix",
)
DONE = b"data: [DONE]\n\n"


def add_routes(served: ServedModel) -> None:
    kind = generation.kind(served.predictor.model)
    if kind is None:
        return
    name = served.bundle.name
    names = {name, served.bundle.ref}
    created = int(time.time())

    def post(path: str, endpoint: Callable[[Request], Awaitable[Response]], summary: str, example: Any) -> None:
        responses = {"200": {"description": "OpenAI's answer, or its Server-Sent Event chunks with `stream: true`"}}
        responses.update(ERRORS.responses())
        body = json_request({"type": "object", "required": ["model"]}, example)
        openapi = {"requestBody": body, "responses": responses}
        options: dict[str, Any] = {"summary": summary, "openapi_extra": openapi, "response_class": Response}
        route(served, path, endpoint, access=auth.PREDICT, methods=["POST"], errors=ERRORS, **options)

    async def models(request: Request) -> Response:
        model = {"id": served.bundle.name, "object": "model", "created": created, "owned_by": "notebook-deploy"}
        return json_response({"object": "list", "data": [model]})

    route(
        served, "/v1/models", models, access=auth.PREDICT, methods=["GET"], errors=ERRORS, summary="OpenAI: the model"
    )
    if kind == generation.GENERATOR:
        chat = {"model": name, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, "stream": True}
        post("/v1/chat/completions", _completions(served, names, chat=True), "OpenAI: chat completion", chat)
        text = {"model": name, "prompt": "hello", "max_tokens": 16}
        post("/v1/completions", _completions(served, names, chat=False), "OpenAI: text completion", text)
    else:
        example = {"model": name, "input": ["hello world"]}
        post("/v1/embeddings", _embeddings(served, names), "OpenAI: embeddings (mean-pooled token vectors)", example)


async def _request(request: Request, names: set[str]) -> dict[str, Any]:
    """The request's JSON object, its ``model`` checked and refused fields refused."""
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise RequestError(400, "the request body must be a JSON object")
    if payload.get("model") not in names:
        raise RequestError(404, f"the model {payload.get('model')!r} does not exist: this server has {min(names)!r}")
    for name in REFUSED:
        if payload.get(name) not in (None, False, [], {"type": "text"}):
            raise RequestError(400, f"'{name}' is not supported by this server")
    if payload.get("n", 1) != 1:
        raise RequestError(400, f"'n' must be 1 here (one choice per prompt), not {payload['n']!r}")
    return payload


def _completions(served: ServedModel, names: set[str], *, chat: bool) -> Callable[[Request], Awaitable[Response]]:
    generate = served.predictor.generate
    kind = "chat.completion" if chat else "text_completion"

    async def endpoint(request: Request) -> Response:
        payload = await _request(request, names)
        field = "messages" if chat else "prompt"
        value = payload.get(field)
        values = [value] if chat or not isinstance(value, list) else value
        prompts = [generation.check_prompt(p, field) for p in values]
        if not chat and not all(isinstance(p, str) for p in prompts):
            raise RequestError(400, "'prompt' must be a text or a list of texts")
        sampling = generation.Sampling.from_request(payload)
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time())}
        head["model"] = payload["model"]
        runs = [generate(kind, prompt, sampling) for prompt in prompts]  # all started now, so batched
        if payload.get("stream"):
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            return await event_stream(_chunks(runs, head, chat, include_usage), ERRORS)
        choices, usage = [], _Usage()
        try:
            for index, run in enumerate(runs):
                async for piece in run:
                    if isinstance(piece, generation.Generated):
                        usage.add(piece)
                        answer = {"role": "assistant", "content": piece.text} if chat else piece.text
                        choice = {"index": index, "message" if chat else "text": answer, "logprobs": None}
                        choices.append({**choice, "finish_reason": piece.finish_reason})
        finally:
            for run in runs:
                run.close()
        return json_response({**head, "object": kind, "choices": choices, "usage": usage.body()})

    return endpoint


async def _chunks(
    runs: list[Generation], head: dict[str, Any], chat: bool, include_usage: bool
) -> AsyncIterator[bytes]:
    """OpenAI's stream chunks of the runs, one after the other, each choice's text as it is made."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    usage = _Usage()

    def chunk(index: int, text: str | None, finish_reason: str | None) -> bytes:
        if chat:
            delta = {"role": "assistant", "content": ""} if text is None else {"content": text} if text else {}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return event({**head, "object": kind, "choices": [choice]})

    try:
        for index, run in enumerate(runs):
            role = chat  # the role comes first, as OpenAI sends it; with the first text, so a refusal comes first
            async for piece in run:
                if role:
                    role = False
                    yield chunk(index, None, None)
                if isinstance(piece, str):
                    yield chunk(index, piece, None)
                else:
                    usage.add(piece)
                    yield chunk(index, "", piece.finish_reason)
    finally:  # the client went away: the generations still running stop
        for run in runs:
            run.close()
    if include_usage:
        yield event({**head, "object": kind, "choices": [], "usage": usage.body()})
    yield DONE


class _Usage:
    """Token counts of the generations of one request."""

    def __init__(self) -> None:
        self.prompt_tokens = self.completion_tokens = 0

    def add(self, generated: generation.Generated) -> None:
        self.prompt_tokens += generated.prompt_tokens
        self.completion_tokens += generated.completion_tokens

    def body(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


def _embeddings(served: ServedModel, names: set[str]) -> Callable[[Request], Awaitable[Response]]:
    model, run = served.predictor.model, served.predictor.run

    async def endpoint(request: Request) -> Response:
        payload = await _request(request, names)
        value = payload.get("input")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise RequestError(400, "'input' must be a non-empty text or a list of them (token ids are not supported)")
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise RequestError(400, f"'encoding_format' must be 'float' or 'base64', not {encoding!r}")
        if payload.get("dimensions") is not None:
            raise RequestError(400, "'dimensions' is not supported: the vectors have the model's width")
        vectors, tokens = await run("embeddings", generation.embed, model, texts)
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
            for i, vector in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response({"object": "list", "data": data, "model": payload["model"], "usage": usage})

    return endpoint


def _encoded(vector: list[float], encoding: str) -> Any:
    """A vector as OpenAI sends it: floats, or base64 of little-endian float32 (the openai client's default)."""
    if encoding == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
