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
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.routing import request_response

from ..api import load
from ..bundle import Bundle
from ..errors import InputError
from ..methods import resolve_method
from ..provenance import check_trusted
from ..schema import dumps, to_jsonable
from . import auth
from .limits import BodySizeLimit
from .metrics import Metrics
from .predictor import ModelError, Overloaded, Predictor
from .settings import ServeSettings

log = logging.getLogger("notebook_deploy.serving")

ErrorBody = Callable[[int, str], Any]  # (status, message) -> the JSON body a protocol's clients expect
FastHandler = Callable[[bytes], Awaitable[bytes]]  # request body -> JSON answer body


class RequestError(Exception):
    """A request that cannot be served as sent: answered with ``status`` and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def detail_body(status: int, message: str) -> dict[str, str]:
    """The error body of the native API and of FastAPI itself: ``{"detail": message}``."""
    return {"detail": message}


class FastLane:
    """Answers the hottest routes (``ServedModel.route(..., fast=...)``) in front of the whole framework:
    a POST to one of them, with a declared body length within the limit, is read, handed to its handler
    and answered, skipping FastAPI's middleware, routing, request objects and exception handling, which
    together cost about as much as the model call of a small model. It counts in the metrics as the route
    it stands for, and answers errors as the route's own handlers would; anything else (a chunked or
    oversized body, another route) goes to the app."""

    def __init__(self, routes: dict[str, tuple[APIRoute, FastHandler]], metrics: Metrics, max_body_bytes: int) -> None:
        self.routes = routes
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> bool:
        """Answer the request and return True, or return False to leave it to the app."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        # The path below the app's mount point (``root_path``: a Ray Serve route prefix), as routing sees it.
        entry = self.routes.get(get_route_path(scope))
        if entry is None:
            return False
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is None or not declared.isdigit() or int(declared) > self.max_body_bytes:
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
                payload = error_payload(route.endpoint, status, text)
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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.fast_lane is None or not await self.fast_lane(scope, receive, send):
            await super().__call__(scope, receive, send)


class _LeanRoute(APIRoute):
    """An APIRoute whose endpoint, if it takes only the ``Request`` and has no dependencies (no keys to
    check), is called straight by Starlette, skipping FastAPI's dependency solving and exit stacks: about
    25 µs less per request, on a path whose whole budget is a few hundred. FastAPI still documents it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        parameters = list(inspect.signature(endpoint).parameters.values())
        takes_request = len(parameters) == 1 and parameters[0].annotation in (Request, "Request")
        if takes_request and not self.dependant.dependencies:
            self.app = request_response(endpoint)


@dataclass
class ServedModel:
    """What every protocol module needs to add its routes: the app, the bundle and the predictor."""

    app: FastAPI
    bundle: Bundle
    predictor: Predictor
    settings: ServeSettings
    sample_check: str
    fast: dict[str, tuple[APIRoute, FastHandler]] = field(default_factory=dict)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def example(self) -> dict[str, Any]:
        """The request and answers the API docs show (``{"instances", "outputs"}``): the captured sample
        when keys are off; when they are on, rows made from the schema alone, since /docs and
        /openapi.json are open to anyone who reaches the server."""
        if not auth.guard_of(self).enabled:
            return self.bundle.sample
        return {
            "instances": self.bundle.input_schema.example_rows(),
            "outputs": {m: self.bundle.output_schema(m).example_rows() for m in self.bundle.methods},
        }

    def route(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[Any]],
        *,
        access: str,
        methods: list[str],
        error_body: ErrorBody = detail_body,
        fast: FastHandler | None = None,
        **options: Any,
    ) -> None:
        """Add a route that only callers with ``access`` reach (``auth.OPEN``, ``auth.PREDICT`` or
        ``auth.ADMIN``); errors raised in it are answered with ``error_body``. A POST route may also give
        ``fast``, the same answer as a function of the body bytes, which ``FastLane`` calls directly when
        no key is needed."""
        endpoint.error_body = error_body  # type: ignore[attr-defined]
        dependencies = auth.dependencies(access, self)
        self.app.router.add_api_route(
            path,
            endpoint,
            methods=methods,
            dependencies=dependencies,
            route_class_override=_LeanRoute,
            **options,
        )
        if fast is not None and not dependencies:
            self.fast[path] = (self.app.router.routes[-1], fast)  # type: ignore[assignment]

    def every(self, seconds: float, job: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run ``job`` every ``seconds`` while the app runs, on its event loop; a failing run is logged
        (as ``what`` failed) and the next one runs as planned."""
        task: asyncio.Task[None] | None = None

        async def repeat() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:  # noqa: BLE001 - a background job must never stop serving
                    log.exception("%s failed", what)

        async def start() -> None:
            nonlocal task
            task = asyncio.get_running_loop().create_task(repeat())

        async def stop() -> None:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        self.startup.append(start)
        self.shutdown.append(stop)


def create_app(bundle: Bundle | str, settings: ServeSettings | None = None, **options: Any) -> FastAPI:
    """Build the app that serves ``bundle`` (a Bundle, a reference or a path) with ``settings``; keyword
    ``options`` override single settings (``create_app(ref, max_body_bytes=1024)``). The model is loaded
    and checked against the bundle's stored sample before this returns."""
    from .drift import install_monitoring  # both add routes through ServedModel, defined here
    from .protocols import PROTOCOLS

    bundle = load(bundle)
    settings = (settings or ServeSettings()).with_options(**options)
    check_trusted(
        bundle, settings.trust(), allow_unsigned=settings.allow_unsigned, action="serve", audit_log=settings.audit_log
    )  # before the Predictor unpickles the model
    predictor = Predictor(bundle, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await predictor.start()
        for start in served.startup:
            await start()
        # What is loaded now (the model, the libraries, the app) lives as long as the server: moved out
        # of the garbage collector's generations, it is no longer walked by every full collection.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for stop in reversed(served.shutdown):
                await stop()
            await predictor.stop()

    app = _ServingApp(
        title=f"{bundle.name}",
        version=bundle.version,
        description=(
            f"Model `{bundle.manifest['model']['type']}` from bundle `{bundle.ref}`, served by notebook-deploy.\n\n"
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
    served = ServedModel(app, bundle, predictor, settings, _check_sample(bundle, predictor.model))
    metrics = Metrics(served)
    install_monitoring(served, metrics)  # /monitor/drift, drift gauges, the prediction log
    app.add_middleware(metrics.middleware)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.fast_lane = FastLane(served.fast, metrics, settings.max_body_bytes)
    _add_error_handlers(app)
    for add_routes in PROTOCOLS:
        add_routes(served)
    metrics.add_routes()
    _add_service_routes(served)
    return app


def _add_service_routes(served: ServedModel) -> None:
    bundle = served.bundle
    metadata = {
        key: bundle.manifest[key]
        for key in ("name", "version", "created", "model", "schema", "requirements", "labels", "python", "provenance")
    }

    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def readyz() -> dict[str, Any]:
        return {"ready": True, "model": bundle.ref, "sample_check": served.sample_check}

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
        summary="Readiness: the model is loaded; and whether it reproduces the stored sample",
    )
    served.route(
        "/metadata",
        metadata_endpoint,
        access=auth.ADMIN,
        methods=["GET"],
        summary="The bundle's identity, model, schema and requirements",
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    served.route("/", root, access=auth.OPEN, methods=["GET"], include_in_schema=False)


# The exceptions answered as errors, whichever route or protocol raised them.
ANSWERED = (HTTPException, RequestError, InputError, Overloaded, ModelError)


def error_answer(error: Exception) -> tuple[int, str, dict[str, str]]:
    """The status, message and headers that answer one of the ``ANSWERED`` exceptions."""
    if isinstance(error, HTTPException):  # raised by auth, or by routing (404, 405)
        return error.status_code, str(error.detail), dict(error.headers or {})
    if isinstance(error, RequestError):
        return error.status, str(error), {}
    if isinstance(error, InputError):
        return 422, str(error), {}
    if isinstance(error, Overloaded):
        return 503, str(error), {"Retry-After": str(Overloaded.retry_after)}
    return 500, str(error), {}  # ModelError


def error_payload(endpoint: Any, status: int, message: str) -> bytes:
    """The JSON body of an error in the shape of ``endpoint``'s protocol (``detail_body`` by default)."""
    return orjson.dumps(getattr(endpoint, "error_body", detail_body)(status, message))


def _add_error_handlers(app: FastAPI) -> None:
    async def on_error(request: Request, error: Exception) -> Response:
        status, message, headers = error_answer(error)
        body = error_payload(request.scope.get("endpoint"), status, message)
        return Response(body, status, headers, media_type="application/json")

    for kind in ANSWERED:
        app.add_exception_handler(kind, on_error)


def parse_json(body: bytes) -> Any:
    """A request body parsed as JSON, or a 400 that says why it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"the request body is not valid JSON: {error}") from None


async def json_body(request: Request) -> Any:
    """The request's body parsed as JSON, or a 400 that says why it is not JSON."""
    return parse_json(await request.body())


def json_response(value: Any, status: int = 200) -> Response:
    """Model data (NumPy, pandas, plain values) as a JSON answer."""
    return Response(dumps(value), status, media_type="application/json")


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
