"""What every protocol module builds its routes on, below the app that assembles them: ``ServedModel``
(the app, the bundle, the predictor; ``route`` with its access level and error shape), ``ErrorShape``
(how a protocol's clients expect an error, body and OpenAPI schema, declared once per protocol), and the
JSON helpers of request bodies and answers. Nothing here imports a protocol or the app."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import request_response

from ..bundle import Bundle
from ..errors import InputError, ModelError, NotebookDeployError, Overloaded, RequestError
from ..schema import dumps
from . import auth
from .predictor import Predictor
from .settings import ServeSettings

if TYPE_CHECKING:
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
    # Whether the model reproduces the stored sample ("match", "differs", "error"); None until the app,
    # in the background once it answers requests, has run the sample: until then /readyz answers 503.
    sample_check: str | None = None
    fast: dict[str, tuple[APIRoute, FastHandler]] = field(default_factory=dict)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    errors: dict[Callable[..., Any], ErrorShape] = field(default_factory=dict)  # endpoint -> its error shape
    metrics: Metrics = field(init=False, repr=False)  # set by Metrics(served)

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

    def route(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[Any]],
        *,
        access: str,
        methods: list[str],
        errors: ErrorShape = DETAIL,
        fast: FastHandler | None = None,
        **options: Any,
    ) -> None:
        """Add a route that only callers with ``access`` reach (``auth.OPEN``, ``auth.PREDICT`` or
        ``auth.ADMIN``); errors raised in it are answered in the shape ``errors``. A POST route may also give
        ``fast``, the same answer as a function of the body bytes, which ``FastLane`` calls directly when
        no key is needed."""
        self.errors[endpoint] = errors
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


# The exceptions answered as errors, whichever route or protocol raised them.
ANSWERED = (HTTPException, RequestError, InputError, Overloaded, ModelError)


def error_answer(error: HTTPException | NotebookDeployError) -> tuple[int, str, dict[str, str]]:
    """The status, message and headers that answer one of the ``ANSWERED`` exceptions."""
    if isinstance(error, HTTPException):  # raised by auth, or by routing (404, 405)
        return error.status_code, str(error.detail), dict(error.headers or {})
    return error.status, str(error), dict(error.headers)  # the status each error class declares (errors.py)


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


def json_request(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a required JSON body: its ``schema`` and an ``example``."""
    return {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}


def event(data: Any) -> bytes:
    """One Server-Sent Event carrying ``data`` as JSON."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


class _EventStream(StreamingResponse):
    """A stream of Server-Sent Events whose iterator is closed as soon as sending stops, a client gone
    included (Starlette only drops it), so that what it runs (a generation) stops at once."""

    async def stream_response(self, send: Any) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def event_stream(events: AsyncIterator[bytes], errors: ErrorShape) -> Response:
    """Server-Sent Events from ``events``. The first event is awaited before answering, so that a request
    refused or failing at once gets its status and error body as usual; an error after the answer has
    begun is sent as a last event in the shape ``errors``."""
    first = await anext(events)

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield first
            async for data in events:
                yield data
        except ANSWERED as error:
            status, message, _ = error_answer(error)
            yield b"data: " + errors.payload(status, message) + b"\n\n"
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return _EventStream(rest(), media_type="text/event-stream", headers={"cache-control": "no-cache"})
