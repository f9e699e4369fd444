"""The ASGI app generated from a bundle: every protocol's routes over one ``Predictor``, plus health,
metadata and metrics.

The request path is kept lean: bodies are parsed with orjson, checked and converted by the bundle's
schema in one vectorised step, and outputs are encoded by orjson without per-row Python work. The
OpenAPI document is written from the schema rather than from pydantic models, for the same reason.
Errors raised on the way (bad input, a full queue, a model that raises) are turned into answers by one
handler each, in the body shape of the protocol whose route was called.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from .. import devices
from ..api import load
from ..bundle import Bundle
from ..errors import NotebookDeployError
from ..methods import resolve_method
from ..provenance import check_trusted
from ..schema import dumps, to_jsonable
from . import auth
from .limits import BodySizeLimit
from .metrics import Metrics
from .predictor import Predictor
from .protocols import PROTOCOLS
from .served import ANSWERED, RAW_BODIES, ServedModel, error_answer
from .settings import ServeSettings

log = logging.getLogger("notebook_deploy.serving")


class FastLane:
    """Answers the hottest routes (``ServedModel.route(..., fast=...)``) in front of the whole framework:
    a POST to one of them, with a declared body length within the limit, is read, handed to its handler
    and answered, skipping FastAPI's middleware, routing, request objects and exception handling, which
    together cost about as much as the model call of a small model. It counts in the metrics as the route
    it stands for, and answers errors as the route's own handlers would; anything else (a chunked or
    oversized body, another route) goes to the app."""

    def __init__(self, served: ServedModel, metrics: Metrics) -> None:
        self.routes = served.fast
        self.error_shape = served.error_shape
        self.metrics = metrics
        self.max_body_bytes = served.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request and return True, or return False to leave it to the app."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        entry = self.routes.get(route_path(scope))
        if entry is None:
            return False
        request_headers = dict(scope["headers"])
        declared = request_headers.get(b"content-length")
        if declared is None or not declared.isdigit() or int(declared) > self.max_body_bytes:
            return False
        if request_headers.get(b"content-type", b"").lower().startswith(RAW_BODIES):
            return False
        route, handler = entry
        scope["route"], scope["endpoint"] = route, route.endpoint
        start, status = time.perf_counter(), 500
        self.metrics.in_flight += 1
        try:
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return True
                body += message.get("body", b"")
                more = message.get("more_body", False)
            status, headers = 200, []
            try:
                payload = await handler(body)
            except ANSWERED as error:
                status, text, extra = error_answer(error)
                payload = self.error_shape(route.endpoint).payload(status, text)
                headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return True
        finally:
            self.metrics.record(scope, status, start)


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
    background, and ``/readyz`` answers 503 until it has.

    The garbage collector is off while the model is unpickled and the app built, and what they made is
    then frozen (``gc.freeze``): it lives as long as the server, so walking it in full collections, during
    the start and ever after, would find nothing to free (about a thousand objects of import-time garbage,
    against 0.1-0.3 s of collections at start)."""
    gc.disable()
    try:
        app = _create_app(load(bundle), settings, options)
        gc.freeze()
    finally:
        gc.enable()
    return app


def _create_app(bundle: Bundle, settings: ServeSettings | None, options: dict[str, Any]) -> FastAPI:
    settings = (settings or ServeSettings()).with_options(**options)
    check_trusted(
        bundle, settings.trust(), allow_unsigned=settings.allow_unsigned, action="serve", audit_log=settings.audit_log
    )  # before the Predictor unpickles the model
    device = devices.choose(settings.device, bundle.model)
    devices.place(bundle.model, device)
    predictor = Predictor(bundle, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await predictor.start()
        for start in served.startup:
            await start()
        warming = asyncio.get_running_loop().create_task(_warm_up(served))
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            for stop in reversed(served.shutdown):
                await stop()
            await predictor.stop()

    app = _ServingApp(
        title=f"{bundle.name}",
        version=bundle.version,
        description=(
            f"Model `{bundle.model_type}` from bundle `{bundle.ref}`, served by notebook-deploy.\n\n"
            f"Input: {bundle.input_schema.describe()}. Send rows as "
            '`{"instances": [row, ...]}` to `/predict`; the answer is `{"predictions": [...]}`, one entry per row. '
            "The same model also answers the Open Inference Protocol (`/v2`), TF Serving's REST API (`/v1`) "
            "and MLflow's `/invocations`."
        ),
        lifespan=lifespan,
        # Metrics are Prometheus' (``/metrics``) and logs uvicorn's. FastAPI's OpenTelemetry hooks are off:
        # left on, they ask for a tracer provider on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    served = ServedModel(app, bundle, predictor, settings)
    metrics = Metrics(served)
    from .drift import install_monitoring  # here, not with this module: only an app needs the drift modules

    install_monitoring(served, metrics)  # /monitor/drift, drift gauges, the prediction log
    if device == "cuda":
        metrics.add_gpu_memory(devices.memory_allocated)
    app.add_middleware(metrics.middleware)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.fast_lane = FastLane(served, metrics)
    _add_error_handlers(served)
    for add_routes in PROTOCOLS:
        add_routes(served)
    metrics.add_routes()
    _add_service_routes(served, devices.describe(device))
    return app


def _add_service_routes(served: ServedModel, device: dict[str, Any]) -> None:
    bundle = served.bundle
    metadata = {
        key: bundle.manifest[key]
        for key in ("name", "version", "created", "model", "schema", "requirements", "labels", "python", "provenance")
    }
    metadata["device"] = device

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

    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    served.route("/healthz", healthz, access=auth.OPEN, methods=["GET"], summary="Liveness: the process answers")
    served.route(
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
    served.route(
        "/metadata",
        metadata_endpoint,
        access=auth.ADMIN,
        methods=["GET"],
        summary="The bundle's identity, model, schema and requirements, and the device it runs on",
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    served.route("/", root, access=auth.OPEN, methods=["GET"], include_in_schema=False)


def _add_error_handlers(served: ServedModel) -> None:
    async def on_error(request: Request, error: Exception) -> Response:
        if not isinstance(error, (HTTPException, NotebookDeployError)):  # registered for ANSWERED only
            raise error
        status, message, headers = error_answer(error)
        body = served.error_shape(request.scope.get("endpoint")).payload(status, message)
        return Response(body, status, headers, media_type="application/json")

    for kind in ANSWERED:
        served.app.add_exception_handler(kind, on_error)


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path below the app's mount point (``root_path``: a Ray Serve route prefix), as
    Starlette's routing matches it. Written here because Starlette's own (``get_route_path``) is private."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


async def _warm_up(served: ServedModel) -> None:
    """Time the model's methods (which run inline) and check the stored sample, in the model's thread,
    once the server answers: the first requests need neither, and ``/readyz`` says ready only after."""
    predictor = served.predictor
    try:
        await predictor.in_model_thread(predictor.time_methods)
        served.sample_check = await predictor.in_model_thread(_check_sample, served.bundle, predictor.model)
    except Exception:  # noqa: BLE001 - the server goes on serving; readiness says the check failed
        log.exception("checking the stored sample of %s failed", served.bundle.ref)
        served.sample_check = "error"


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
