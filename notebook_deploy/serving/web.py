"""The web framework's side of the protocols' routes: ``route`` (a FastAPI route with its access level and
error shape), the exceptions answered as errors (``ANSWERED``), and the request and answer helpers of
endpoints (JSON bodies, Server-Sent Events).

FastAPI is imported here and by the modules that build routes, never by what the fast lane needs
(served.py, core.py): a server answers its first predictions while these are imported in the background."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.routing import request_response

from ..schema import dumps
from . import auth
from .served import ANSWERED_ERRORS, DETAIL, ErrorShape, ServedModel, error_answer, parse_json

# The exceptions answered as errors, whichever route or protocol raised them.
ANSWERED = (HTTPException, *ANSWERED_ERRORS)


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


def route(
    served: ServedModel,
    path: str,
    endpoint: Callable[..., Awaitable[Any]],
    *,
    access: str,
    methods: list[str],
    errors: ErrorShape = DETAIL,
    **options: Any,
) -> None:
    """Add to ``served.app`` a route that only callers with ``access`` reach (``auth.OPEN``, ``auth.PREDICT``
    or ``auth.ADMIN``); errors raised in it are answered in the shape ``errors``."""
    served.errors[endpoint] = errors
    served.app.router.add_api_route(
        path,
        endpoint,
        methods=methods,
        dependencies=key_dependencies(access, served),
        route_class_override=_LeanRoute,
        **options,
    )


def key_dependencies(access: str, served: ServedModel) -> list[Any]:
    """The FastAPI dependencies that guard a route of ``access`` (auth.py): none when keys are not required."""
    if access == auth.OPEN:
        return []
    if access not in auth.ROLES_FOR:
        raise ValueError(f"access must be auth.OPEN, auth.PREDICT or auth.ADMIN, not {access!r}")
    guard = auth.guard_of(served)
    if not guard.enabled:
        return []

    # Only so that the OpenAPI document declares the scheme (and /docs has its Authorize button); the
    # header is read below, with auth.py's own messages.
    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="APIKey",
        description="An API key: 'notebook-deploy keys create --role predict|admin'",
    )

    async def require_key(request: Request, _declared: Any = Depends(bearer)) -> None:
        path = request.url.path
        refusal = guard.check(request.headers.get("authorization"), access, path)
        if refusal is None:
            return
        guard.record(refusal, path, request.client.host if request.client else None, "http")
        if refusal.status == 401:
            challenge = 'Bearer error="invalid_token"' if refusal.reason == "invalid_key" else "Bearer"
        else:
            challenge = 'Bearer error="insufficient_scope"'
        raise HTTPException(refusal.status, refusal.message, headers={"WWW-Authenticate": challenge})

    return [Depends(require_key)]


async def json_body(request: Request) -> Any:
    """The request's body parsed as JSON, or a 400 that says why it is not JSON."""
    return parse_json(await request.body())


def json_response(value: Any, status: int = 200) -> Response:
    """Model data (NumPy, pandas, plain values) as a JSON answer."""
    return Response(dumps(value), status, media_type="application/json")


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
