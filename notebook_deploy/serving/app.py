"""The ASGI app generated from a bundle: one POST endpoint per inference method, health and metadata.

The request path is kept lean: the body is parsed with orjson, checked and converted by the bundle's
schema in one vectorised step, and the model's output is encoded by orjson without per-row Python work.
The OpenAPI document is written from the schema rather than from pydantic models, for the same reason.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..api import load
from ..bundle import Bundle
from ..errors import InputError
from ..methods import resolve_method
from ..schema import dumps, to_jsonable
from .limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit

log = logging.getLogger("notebook_deploy.serving")


def create_app(bundle: Bundle | str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """Build the FastAPI app that serves ``bundle`` (a Bundle, a reference or a path). The model is
    loaded and checked against the bundle's stored sample before this returns."""
    bundle = load(bundle)
    model = bundle.model
    app = FastAPI(
        title=f"{bundle.name}",
        version=bundle.version,
        description=(
            f"Model `{bundle.manifest['model']['type']}` from bundle `{bundle.ref}`, served by notebook-deploy.\n\n"
            f"Input: {bundle.input_schema.describe()}. Send rows as "
            '`{"instances": [row, ...]}`; the answer is `{"predictions": [...]}`, one entry per row.'
        ),
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    for method in bundle.methods:
        app.add_api_route(
            f"/{method}",
            _method_endpoint(bundle, model, method),
            methods=["POST"],
            name=method,
            summary=f"Call the model's {method} on a batch of rows",
            openapi_extra=_openapi_for(bundle, method),
            response_class=Response,
        )
    sample_check = _check_sample(bundle, model)
    metadata = {
        key: bundle.manifest[key]
        for key in ("name", "version", "created", "model", "schema", "requirements", "labels", "python", "provenance")
    }

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded; and whether it reproduces the stored sample")
    async def readyz() -> dict[str, Any]:
        return {"ready": True, "model": bundle.ref, "sample_check": sample_check}

    @app.get("/metadata", summary="The bundle's identity, model, schema and requirements")
    async def metadata_endpoint() -> Response:
        return Response(dumps(metadata), media_type="application/json")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app


def _method_endpoint(bundle: Bundle, model: Any, method: str) -> Callable[[Request], Awaitable[Response]]:
    schema = bundle.input_schema
    call = resolve_method(model, method)

    async def endpoint(request: Request) -> Response:
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError as error:
            return error_response(400, f"the request body is not valid JSON: {error}")
        if not isinstance(payload, dict) or "instances" not in payload:
            return error_response(422, 'expected a JSON object {"instances": [row, ...]}')
        try:
            data = schema.decode(payload["instances"])
        except InputError as error:
            return error_response(422, str(error))
        try:
            result = await run_in_threadpool(call, data)
            body = dumps({"predictions": result})
        except Exception as error:  # noqa: BLE001 - whatever the model raises becomes a 500, and serving goes on
            log.exception("%s of %s failed", method, bundle.ref)
            return error_response(500, f"the model's {method} raised {type(error).__name__}: {error}")
        return Response(body, media_type="application/json")

    endpoint.__name__ = method
    return endpoint


def error_response(status: int, message: str) -> Response:
    """A JSON error answer: ``{"detail": message}``, FastAPI's own shape."""
    return Response(orjson.dumps({"detail": message}), status_code=status, media_type="application/json")


def _openapi_for(bundle: Bundle, method: str) -> dict[str, Any]:
    row = bundle.input_schema.json_schema()
    prediction = bundle.output_schema(method).json_schema()
    error = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
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
                    "example": {"instances": bundle.sample["instances"]},
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
                        "example": {"predictions": bundle.sample["outputs"][method]},
                    }
                },
            },
            "400": {"description": "The body is not JSON", "content": {"application/json": {"schema": error}}},
            "413": {"description": "The body is too large", "content": {"application/json": {"schema": error}}},
            "422": {
                "description": "The rows do not fit the model's input: the message names the row and feature",
                "content": {"application/json": {"schema": error}},
            },
            "500": {"description": "The model raised an error", "content": {"application/json": {"schema": error}}},
        },
    }


def _check_sample(bundle: Bundle, model: Any) -> str:
    """Run the stored sample through the loaded model: ``"match"`` if it gives the stored outputs."""
    data = bundle.input_schema.decode(bundle.sample["instances"])
    for method in bundle.methods:
        try:
            result = to_jsonable(resolve_method(model, method)(data))
        except Exception as error:  # noqa: BLE001
            log.warning("the stored sample fails in %s: %s", method, error)
            return "error"
        if result != bundle.sample["outputs"][method]:
            log.warning("%s of %s does not reproduce the stored sample outputs", method, bundle.ref)
            return "differs"
    return "match"
