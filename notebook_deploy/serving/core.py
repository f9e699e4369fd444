"""What answers a served model before, and beneath, the web framework: the model loaded and checked with
its predictor, metrics and drift monitor (``load_served``); what runs beside the requests while it serves
(``serving``); the fast lane, which answers the native API's JSON predictions straight from ASGI; and
``StartingApp``, what a server starts with.

A server answers predictions as soon as its model is loaded: FastAPI and the protocols' routes (about
0.3 s of imports and building, a quarter of the start of a small scikit-learn model) are built in a
background thread once the server listens, and the requests the fast lane does not answer wait for them.
Nothing here imports FastAPI or a protocol: the app (app.py) is built on what this loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import devices
from ..api import load
from ..bundle import Bundle
from ..errors import RequestError
from ..methods import resolve_method
from ..provenance import check_trusted
from ..schema import dumps, takes_bytes, to_jsonable
from . import auth
from .drift import install_monitoring
from .metrics import Metrics
from .predictor import Predictor
from .served import ANSWERED_ERRORS, DETAIL, RAW_BODIES, FastHandler, FastRoute, ServedModel, error_answer, parse_json
from .settings import ServeSettings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("notebook_deploy.serving")


def load_served(bundle: Bundle | str, settings: ServeSettings | None = None, **options: Any) -> ServedModel:
    """Load ``bundle`` (a Bundle, a reference or a path) to be served with ``settings`` (``options`` override
    single ones): its provenance checked before the model is unpickled, the model placed on its device,
    its predictor, metrics and drift monitor made, and, when no key is needed, the native API's JSON
    predictions given to the fast lane.

    The garbage collector is off while the model is unpickled, and what was loaded then frozen
    (``gc.freeze``): it lives as long as the server, so walking it in full collections, during the start
    and ever after, would find nothing to free (about a thousand objects of import-time garbage, against
    0.1-0.3 s of collections at start)."""
    gc.disable()
    try:
        served = _load_served(load(bundle), (settings or ServeSettings()).with_options(**options))
        gc.freeze()
    finally:
        gc.enable()
    return served


def _load_served(bundle: Bundle, settings: ServeSettings) -> ServedModel:
    check_trusted(
        bundle, settings.trust(), allow_unsigned=settings.allow_unsigned, action="serve", audit_log=settings.audit_log
    )  # before the Predictor unpickles the model
    device = devices.choose(settings.device, bundle.model)
    devices.place(bundle.model, device)
    served = ServedModel(bundle, Predictor(bundle, settings), settings, device=device)
    metrics = Metrics(served)
    install_monitoring(served, metrics)  # the drift window and gauges, the prediction log
    if device == "cuda":
        metrics.add_gpu_memory(devices.memory_allocated)
    if not auth.guard_of(served).enabled:  # with keys, every request goes through the app's key check
        for method in bundle.methods:
            served.fast[f"/{method}"] = FastRoute(predictions(served, method))
    return served


_RAW_HINT = (
    "; or send the raw bytes of one row with content-type application/octet-stream, or rows as files "
    "with multipart/form-data (curl -F 'file=@cat.png')"
)


def predictions(served: ServedModel, method: str) -> FastHandler:
    """The native API's answer to a JSON body ``{"instances": [row, ...]}``: ``{"predictions": [...]}`` from
    ``method``, as bytes (protocols/native.py declares the route; the fast lane calls this directly)."""
    decode = served.bundle.input_schema.decode
    predict = served.predictor.predict
    hint = _RAW_HINT if takes_bytes(served.bundle.input_schema) else ""

    async def answer(body: bytes) -> bytes:
        try:
            payload = parse_json(body)
        except RequestError as error:
            raise RequestError(error.status, f"{error}{hint}") from None
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError(422, 'expected a JSON object {"instances": [row, ...]}' + hint)
        return dumps({"predictions": await predict(method, decode(payload["instances"]))})

    return answer


@contextlib.asynccontextmanager
async def serving(served: ServedModel) -> AsyncIterator[None]:
    """While the server runs: the predictor and the hooks of ``served.startup`` started, and the stored
    sample checked in the background once the server answers; stopped in reverse on exit."""
    await served.predictor.start()
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
        await served.predictor.stop()


class FastLane:
    """Answers the hottest routes (``served.fast``) in front of the whole framework: a POST to one of them,
    with a declared body length within the limit, is read, handed to its handler and answered, skipping
    FastAPI's middleware, routing, request objects and exception handling, which together cost about as
    much as the model call of a small model. It counts in the metrics as the route it stands for, and
    answers errors in the route's shape; anything else (a chunked or oversized body, a raw body, another
    route) is left to the app."""

    def __init__(self, served: ServedModel) -> None:
        self.routes = served.fast
        self.metrics = served.metrics
        self.max_body_bytes = served.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request and return True, or return False to leave it to the app."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path = route_path(scope)
        entry = self.routes.get(path)
        if entry is None:
            return False
        request_headers = dict(scope["headers"])
        declared = request_headers.get(b"content-length")
        if declared is None or not declared.isdigit() or int(declared) > self.max_body_bytes:
            return False
        if request_headers.get(b"content-type", b"").lower().startswith(RAW_BODIES):
            return False
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
                payload = await entry.answer(body)
            except ANSWERED_ERRORS as error:
                status, text, extra = error_answer(error)
                payload = entry.errors.payload(status, text)
                headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
            await _send_json(send, status, payload, headers)
            return True
        finally:
            self.metrics.count(path, status, start)


class StartingApp:
    """The ASGI app a server starts with. Once the model is loaded and the server listens, the fast lane
    answers at once, while the whole app (``build(served)``: FastAPI's, with every protocol, the docs, the
    health and metrics routes) is built in a background thread, once the model's methods are timed; the
    other requests wait for it, then go to it (the lane keeps answering its own). Built first, before
    serving, when the lane has nothing to answer (keys are on) or when the app adds what must start with
    the server (a gRPC port)."""

    def __init__(self, served: ServedModel, build: Callable[[ServedModel], ASGIApp]) -> None:
        self.served = served
        self.build = build
        self.lane = FastLane(served)
        self.app: ASGIApp | None = None
        self._built: asyncio.Task[ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The lane answers first, built app or not: the app's own lane (app.py) would answer the same
        # routes, two calls further down.
        if await self.lane(scope, receive, send):
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:
            assert self._built is not None  # set at startup, before the server accepts a connection
            try:
                self.app = await asyncio.shield(self._built)
            except Exception:  # noqa: BLE001 - logged once by _log_failure
                await _send_json(send, 500, DETAIL.payload(500, "the server failed to build its routes: see its log"))
                return
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        loop = asyncio.get_running_loop()
        try:
            if not self.served.fast or self.served.settings.grpc_port is not None:
                self.app = await self._build()
            running = contextlib.AsyncExitStack()
            await running.enter_async_context(serving(self.served))
        except BaseException as error:
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            raise
        if self.app is None:
            self._built = loop.create_task(self._build_in_background())
            self._built.add_done_callback(_log_failure)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if self._built is not None:
            self._built.cancel()  # a build not begun yet (or done: then nothing happens)
        await running.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def _build_in_background(self) -> ASGIApp:
        # After the warm-up has timed the model's methods: a build beside that timing holds the GIL, and
        # a method whose calls it slowed past predictor.INLINE_SECONDS would run in the model thread, the
        # slower path, for the server's whole life.
        await self.served.methods_timed.wait()
        return await self._build()

    async def _build(self) -> ASGIApp:
        """The app, built in a thread; what the build made lives as long as the server, so it is frozen
        out of the garbage collector as the model is (load_served)."""
        app = await asyncio.get_running_loop().run_in_executor(None, self.build, self.served)
        gc.freeze()
        return app


def _log_failure(built: asyncio.Future[Any]) -> None:
    if not built.cancelled() and built.exception() is not None:
        log.error("building the app's routes failed", exc_info=built.exception())


async def _send_json(send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [
        *(headers or []),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


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
        try:
            await predictor.in_model_thread(predictor.time_methods)
        finally:
            served.methods_timed.set()
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
