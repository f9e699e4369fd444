"""What every protocol module builds on, below the app that assembles them and below the web framework:
``ServedModel`` (the bundle, the predictor, the settings, what the fast lane answers; the app once its
routes are built), ``ErrorShape`` (how a protocol's clients expect an error, body and OpenAPI schema,
declared once per protocol), the errors answered and the JSON helpers of bodies. Nothing here imports a
protocol, the app or FastAPI: a server answers its first predictions before FastAPI is imported (core.py);
the framework's side of a route is in web.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..bundle import Bundle
from ..errors import InputError, ModelError, NotebookDeployError, Overloaded, RequestError
from . import auth
from .predictor import Predictor
from .settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .drift import DriftMonitor
    from .metrics import Metrics

log = logging.getLogger("notebook_deploy.serving")

# The header naming the version that answered, where one server serves several (router.py); gRPC sends it
# as metadata, in lower case (oip_grpc.py).
VERSION_HEADER = "X-Model-Version"
FastHandler = Callable[[bytes], Awaitable[bytes]]  # request body -> JSON answer body
# Bodies that are not JSON (raw images, file uploads): the fast lane leaves them to the route's endpoint.
RAW_BODIES = (b"application/octet-stream", b"multipart/form-data")


@dataclass(frozen=True)
class ErrorShape:
    """How one protocol's clients expect an error: ``body(status, message)`` is the JSON they parse, and
    ``schema`` its OpenAPI schema. Each protocol declares one; ``ServedModel.route`` records it per route,
    and both the fast lane and the app's exception handlers answer errors from that record."""

    body: Callable[[int, str], Any]
    schema: dict[str, Any]

    def payload(self, status: int, message: str) -> bytes:
        """The error's JSON body, encoded."""
        return orjson.dumps(self.body(status, message))

    def responses(self) -> dict[str, Any]:
        """The OpenAPI ``responses`` of the errors every inference route may answer, in this shape."""
        described = {
            "400": "The body is not JSON",
            "401": "An API key is required and was not sent, or is unknown",
            "403": "The API key's role does not reach this route",
            "413": "The body is too large",
            "422": "The rows do not fit the model's input: the message names the row and feature",
            "500": "The model raised an error",
            "503": "Too many requests wait: retry after the number of seconds in Retry-After",
        }
        return {
            status: {"description": text, "content": {"application/json": {"schema": self.schema}}}
            for status, text in described.items()
        }


# The error shape of the native API, of the service routes and of FastAPI itself: ``{"detail": message}``.
DETAIL = ErrorShape(
    lambda status, message: {"detail": message},
    {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]},
)


@dataclass(frozen=True)
class FastRoute:
    """A POST route that ``core.FastLane`` answers in front of the framework: the answer as a function of
    the body's bytes, and the shape of its errors."""

    answer: FastHandler
    errors: ErrorShape = DETAIL


@dataclass
class ServedModel:
    """A loaded model and what answers for it: the bundle, the predictor, the settings, the routes the fast
    lane answers (``fast``: path -> its handler and error shape), the hooks run while the server runs, the
    metrics and drift monitor; and ``app``, the FastAPI app, once its routes are built (app.py)."""

    bundle: Bundle
    predictor: Predictor
    settings: ServeSettings
    device: str = "cpu"  # where the model runs (devices.py)
    # Whether the model reproduces the stored sample ("match", "differs", "error"); None until the app,
    # in the background once it answers requests, has run the sample: until then /readyz answers 503.
    sample_check: str | None = None
    # Set once the warm-up has timed the model's methods (which run inline): what the app's background
    # build waits for, so that it does not slow that timing (core.StartingApp).
    methods_timed: asyncio.Event = field(default_factory=asyncio.Event)
    fast: dict[str, FastRoute] = field(default_factory=dict)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    errors: dict[Callable[..., Any], ErrorShape] = field(default_factory=dict)  # endpoint -> its error shape
    metrics: Metrics = field(init=False, repr=False)  # set by Metrics(served)
    drift: DriftMonitor | None = None  # set by drift.install_monitoring: what the router's rollback reads
    guard: auth.Guard | None = None  # the API keys' check, made on first use (auth.guard_of)
    app: FastAPI = field(init=False, repr=False)  # set by app.build_app

    @property
    def ready(self) -> bool:
        """Whether the model has answered its stored sample: what /readyz and the OIP readiness calls say."""
        return self.sample_check is not None

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

    def error_shape(self, endpoint: Any) -> ErrorShape:
        """The error shape of the route whose endpoint is ``endpoint`` (``DETAIL`` for any other)."""
        return self.errors.get(endpoint, DETAIL)

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


# This package's exceptions answered as errors, whichever route or protocol raised them; with the web
# framework's HTTPException (web.ANSWERED), every exception answered.
ANSWERED_ERRORS = (RequestError, InputError, Overloaded, ModelError)


def error_answer(error: Exception) -> tuple[int, str, dict[str, str]]:
    """The status, message and headers that answer one of the ``web.ANSWERED`` exceptions."""
    if isinstance(error, NotebookDeployError):
        return error.status, str(error), dict(error.headers)  # the status each error class declares (errors.py)
    # Else Starlette's HTTPException, raised by auth or by routing (404, 405): imported here, where one was
    # raised (so Starlette is loaded already), so that the fast lane answers without the framework.
    from starlette.exceptions import HTTPException

    assert isinstance(error, HTTPException), error
    return error.status_code, str(error.detail), dict(error.headers or {})


def parse_json(body: bytes) -> Any:
    """A request body parsed as JSON, or a 400 that says why it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"the request body is not valid JSON: {error}") from None


def json_request(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a required JSON body: its ``schema`` and an ``example``."""
    return {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}


def event(data: Any) -> bytes:
    """One Server-Sent Event carrying ``data`` as JSON."""
    return b"data: " + orjson.dumps(data) + b"\n\n"
