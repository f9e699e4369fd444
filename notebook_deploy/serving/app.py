"""The ASGI app generated from a bundle: every protocol's routes over one ``Predictor``, plus health,
metadata, metrics and drift, built with FastAPI on what ``core.load_served`` loaded.

The request path is kept lean: bodies are parsed with orjson, checked and converted by the bundle's
schema in one vectorised step, and outputs are encoded by orjson without per-row Python work; the native
API's JSON predictions are answered by the fast lane (core.py) in front of the framework. The OpenAPI
document is written from the schema rather than from pydantic models, for the same reason. Errors raised
on the way (bad input, a full queue, a model that raises) are turned into answers by one handler each,
in the body shape of the protocol whose route was called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from .. import devices
from ..bundle import Bundle
from ..errors import NotebookDeployError, RequestError
from ..schema import dumps
from . import auth
from .core import FastLane, load_served, serving
from .drift import NO_REFERENCE, REPORT_SCHEMA
from .limits import BodySizeLimit
from .metrics import CONTENT_TYPE
from .protocols import mlflow, native, oip, openai, tfserving
from .served import DETAIL, ServedModel, error_answer
from .settings import ServeSettings
from .web import ANSWERED, route


class _ServingApp(FastAPI):
    """FastAPI with a ``FastLane`` in front of its whole middleware stack."""

    fast_lane: FastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_lane is None or not await self.fast_lane(scope, receive, send):
            await super().__call__(scope, receive, send)


def create_app(bundle: Bundle | str, settings: ServeSettings | None = None, **options: Any) -> FastAPI:
    """Build the app that serves ``bundle`` (a Bundle, a reference or a path) with ``settings``; keyword
    ``options`` override single settings (``create_app(ref, max_body_bytes=1024)``). The model is loaded
    before this returns; once the app runs, it checks the model against the bundle's stored sample in the
    background, and ``/readyz`` answers 503 until it has."""
    return build_app(load_served(bundle, settings, **options))


def build_app(served: ServedModel) -> FastAPI:
    """The FastAPI app of a loaded model, with every protocol's routes; its lifespan runs ``core.serving``
    (a server that starts with ``core.StartingApp`` runs that itself, and builds this in the background)."""
    bundle = served.bundle
    app = served.app = _ServingApp(
        title=f"{bundle.name}",
        version=bundle.version,
        description=(
            f"Model `{bundle.model_type}` from bundle `{bundle.ref}`, served by notebook-deploy.\n\n"
            f"Input: {bundle.input_schema.describe()}. Send rows as "
            '`{"instances": [row, ...]}` to `/predict`; the answer is `{"predictions": [...]}`, one entry per row. '
            "The same model also answers the Open Inference Protocol (`/v2`), TF Serving's REST API (`/v1`) "
            "and MLflow's `/invocations`."
        ),
        lifespan=lambda _app: serving(served),
        # Metrics are Prometheus' (``/metrics``) and logs uvicorn's. FastAPI's OpenTelemetry hooks are off:
        # left on, they ask for a tracer provider on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(served.metrics.middleware)
    app.add_middleware(BodySizeLimit, max_bytes=served.settings.max_body_bytes)
    app.fast_lane = FastLane(served)
    _add_error_handlers(served)
    _add_drift_route(served)
    for add_routes in PROTOCOLS:
        add_routes(served)
    _add_service_routes(served)
    return app


def _oip_grpc(served: ServedModel) -> None:
    """The Open Inference Protocol over gRPC, on ``settings.grpc_port`` where one is set: grpc is only
    imported then, since importing it costs a server that does not speak it a noticeable start-up."""
    if served.settings.grpc_port is not None:
        from .protocols import oip_grpc

        oip_grpc.attach(served, served.app.state.oip)  # the REST routes' (oip.add_routes)


# The wire protocols a served bundle speaks, each adding its routes.
PROTOCOLS: list[Callable[[ServedModel], None]] = [
    native.add_routes,
    oip.add_routes,
    _oip_grpc,
    tfserving.add_routes,
    mlflow.add_routes,
    openai.add_routes,
]


def _add_service_routes(served: ServedModel) -> None:
    bundle = served.bundle
    metadata = {
        key: bundle.manifest[key]
        for key in ("name", "version", "created", "model", "schema", "requirements", "labels", "python", "provenance")
    }
    metadata["device"] = devices.describe(served.device)

    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def readyz() -> Response:
        if not served.ready:
            body = {"ready": False, "model": bundle.ref, "reason": "the model is still running its stored sample"}
            return Response(dumps(body), 503, media_type="application/json")
        return Response(
            dumps({"ready": True, "model": bundle.ref, "sample_check": served.sample_check}),
            media_type="application/json",
        )

    async def metadata_endpoint() -> Response:
        return Response(dumps(metadata), media_type="application/json")

    async def metrics() -> Response:
        return Response(served.metrics.exposition(), media_type=CONTENT_TYPE)

    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    route(
        served,
        "/metrics",
        metrics,
        access=auth.ADMIN,
        methods=["GET"],
        response_class=Response,
        summary="Prometheus metrics: requests, latency, batch sizes, queue depth, drift",
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    route(served, "/healthz", healthz, access=auth.OPEN, methods=["GET"], summary="Liveness: the process answers")
    route(
        served,
        "/readyz",
        readyz,
        access=auth.OPEN,
        methods=["GET"],
        summary="Readiness: the model has answered its stored sample (503 until then); and whether it reproduced it",
        responses={
            200: {"description": 'Ready: `{"ready": true, "model", "sample_check": "match" | "differs" | "error"}`'},
            503: {"description": 'Not yet: `{"ready": false, "model", "reason"}`'},
        },
    )
    route(
        served,
        "/metadata",
        metadata_endpoint,
        access=auth.ADMIN,
        methods=["GET"],
        summary="The bundle's identity, model, schema and requirements, and the device it runs on",
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    route(served, "/", root, access=auth.OPEN, methods=["GET"], include_in_schema=False)


def _add_drift_route(served: ServedModel) -> None:
    monitor = served.drift

    async def monitor_drift() -> Response:
        if monitor is None:
            raise RequestError(404, NO_REFERENCE)
        return Response(dumps(await asyncio.to_thread(monitor.report)), media_type="application/json")

    errors = DETAIL.responses()
    route(
        served,
        "/monitor/drift",
        monitor_drift,
        access=auth.ADMIN,
        methods=["GET"],
        response_class=Response,
        summary="Drift: PSI and KS of each feature's live window against the bundle's reference statistics",
        responses={
            200: {
                "description": "The drift report of this worker's window",
                "content": {"application/json": {"schema": REPORT_SCHEMA}},
            },
            401: errors["401"],
            403: errors["403"],
            404: {
                "description": "The bundle has no reference statistics: capture with reference=X_train",
                "content": {"application/json": {"schema": DETAIL.schema}},
            },
        },
    )


def _add_error_handlers(served: ServedModel) -> None:
    async def on_error(request: Request, error: Exception) -> Response:
        if not isinstance(error, (HTTPException, NotebookDeployError)):  # registered for ANSWERED only
            raise error
        status, message, headers = error_answer(error)
        body = served.error_shape(request.scope.get("endpoint")).payload(status, message)
        return Response(body, status, headers, media_type="application/json")

    for kind in ANSWERED:
        served.app.add_exception_handler(kind, on_error)
