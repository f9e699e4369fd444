"""Several versions, and several models, in one server: an ASGI app over one full ``create_app`` app per
version, each with its own predictor, metrics, drift window and prediction log.

Requests are dispatched by path: ``/v2/models/{name}/...`` and ``/v1/models/{name}...`` reach the versions
of that model; the unnamed routes (``/predict``, ``/invocations``, ``/docs`` ...) reach the only model, or
are refused with the names to use when there are several. Among the versions of one model an inference
request (a POST) goes to the stable version or a canary, by the weights; with a sticky header, its value's
sha256 picks, so that one caller always meets the same version. A path naming a version
(``.../versions/{version}``) reaches that version, and other routes (docs, metadata, drift) the stable
one, or the version a ``?version=V`` query names (``/monitor/drift?version=V``). A shadow gets a copy
of every POST to its model in the background: its answer is counted in its own metrics and logs, and
neither its errors nor its latency reach the caller. The copies use spare capacity only: they run one at
a time, and only while no caller's request is being answered (the versions share this process's CPU, so
a copy run beside callers' requests would slow them); at most ``SHADOW_IN_FLIGHT`` wait, more are
dropped and counted. Every answer names the version
that gave it in ``X-Model-Version``. ``/metrics`` merges every version's metrics into one exposition;
``/healthz``, ``/readyz`` and ``/metadata`` answer for all of them. A stable version may be replaced while
the server runs (``follow.Follower``, when its tag moves) and a canary taken out of rotation
(``rollback.Rollback``); each replaced version finishes the requests it was given before its app stops.

With a gRPC port, one gRPC server (``oip_grpc.GrpcServer``, started and stopped with the router's lifespan;
the versions' apps serve none) answers for every version through the same groups, found again at each
call: a call names its model in ``model_name`` (none: the only model), a ``ModelInfer`` without
``model_version`` is split by the same shares and sticky value (from the call's metadata) and copied to
the shadows, one with a version reaches it, and the answer names its version in ``model_version`` and
the trailing metadata ``x-model-version``. The split, the copies to shadows and the hold on a version while
it answers (``pick``, ``copy``, ``answering``) are the same code for both protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import audit
from ..bundle import Bundle
from ..errors import RequestError
from . import auth
from .app import create_app
from .core import route_path
from .deployment import Deployment
from .follow import Follower
from .protocols import oip, tfserving
from .rollback import Rollback
from .served import DETAIL, VERSION_HEADER, ErrorShape, error_answer
from .settings import ServeSettings
from .split import CANARY, SHADOW, STABLE, Split, point
from .web import ANSWERED

if TYPE_CHECKING:
    from .protocols.oip import OipModel
    from .protocols.oip_grpc import Run

log = logging.getLogger("notebook_deploy.serving")

SHADOW_IN_FLIGHT = 64  # copies to shadows waiting or running at once; more are dropped
LOG_EVERY = 1000  # a shadow's failures and drops are logged once per this many

# The routes that name their model (and may name a version), each with its protocol's error shape.
_NAMED = (
    (re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?"), oip.ERRORS),
    (re.compile(r"^/v1/models/([^/:]+)(?:/versions/([^/:]+))?"), tfserving.ERRORS),
)


@dataclass(eq=False)  # kept in sets, as itself
class _Version:
    """One version's app, its role, the header that names it, the requests it is answering, and what stops
    its app (its lifespan, once started)."""

    bundle: Bundle
    app: ASGIApp
    role: str
    header: tuple[bytes, bytes]
    in_flight: int = 0
    running: contextlib.AsyncExitStack | None = None

    @property
    def oip(self) -> OipModel:
        """The version's Open Inference Protocol model (its app's): what gRPC calls to it reach."""
        model: OipModel = getattr(self.app, "state").oip  # noqa: B009 - an ASGIApp is not typed with a state
        return model


class _Group:
    """The versions of one model name: who answers an inference request, and who gets a copy."""

    def __init__(self, stable: _Version, canaries: list[tuple[_Version, float]], shadows: list[_Version]) -> None:
        self.stable, self.canaries, self.shadows = stable, canaries, shadows
        self.rolled_back: list[dict[str, Any]] = []  # the canaries taken out of rotation, and why
        self._place()

    def _place(self) -> None:
        """The versions that answer, and the upper bound of each one's share of 0..100 (the stable
        version's is what canaries leave)."""
        self.versions = [self.stable, *(version for version, _ in self.canaries)]
        self.split = Split([percent for _, percent in self.canaries])

    def replace_stable(self, new: _Version) -> None:
        """Give the stable version's share to ``new``."""
        self.stable = new
        self._place()

    def drop(self, canary: _Version) -> None:
        """Take a canary out of rotation: its share goes to the stable version."""
        self.canaries = [(version, percent) for version, percent in self.canaries if version is not canary]
        self._place()

    def pick(self, point: float) -> _Version:
        """The version whose share holds ``point`` (0 <= point < 100)."""
        return self.versions[self.split.pick(point)]

    def pinned(self, version: str) -> _Version | None:
        return next((v for v in [*self.versions, *self.shadows] if v.bundle.version == version), None)


class VersionRouter:
    """The ASGI app of a ``Deployment`` (see the module's docstring)."""

    def __init__(self, deployment: Deployment, settings: ServeSettings, *, seed: int | None = None) -> None:
        self.max_body_bytes = settings.max_body_bytes
        self.settings = settings
        self.sticky = deployment.sticky_header.lower().encode() if deployment.sticky_header else None
        self.random = random.Random(seed)
        self.groups: dict[str, _Group] = {}
        self.all: list[_Version] = []

        def version(bundle: Bundle, role: str) -> _Version:
            made = self.build(bundle, role)
            self.all.append(made)
            return made

        for stable in deployment.stable:
            canaries = [(b, p) for b, p in deployment.canary if b.name == stable.name]
            self.groups[stable.name] = _Group(
                version(stable, STABLE),
                [(version(b, CANARY), p) for b, p in canaries],
                [version(b, SHADOW) for b in deployment.shadow if b.name == stable.name],
            )
        self.shadow_tasks: set[asyncio.Task[None]] = set()
        self.shadow_turn = asyncio.Lock()  # one copy to a shadow runs at a time
        self.answering_now = 0  # callers' requests being answered, of every version
        self.idle = asyncio.Event()  # set while answering_now is 0: when copies to shadows may run
        self.idle.set()
        self.registry = CollectorRegistry()
        self.shadow_dropped = Counter(
            "notebook_deploy_shadow_dropped",
            "Copies of requests not sent to a shadow version because too many were waiting for spare capacity",
            ["model", "version"],
            registry=self.registry,
        )
        self.shadow_failures = self.shadow_drops = 0
        self.followers = {
            bundle.name: Follower(self, bundle, ref, settings)
            for bundle, ref in zip(deployment.stable, deployment.follow)
        }
        self.retiring: set[_Version] = set()  # versions replaced, finishing their requests before they stop
        self.rollback = Rollback.of(settings, _largest_psi)
        self.background: set[asyncio.Task[None]] = set()  # canaries rolled back, being retired
        self.grpc = None
        if settings.grpc_port is not None:
            from .protocols import oip_grpc  # only here: importing grpc costs a server without it its start-up

            # every version's app reads the same key file: the first one's guard checks gRPC calls
            self.grpc = oip_grpc.GrpcServer(_Grpc(self), settings, auth.guard_of(self.all[0].oip.served))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = route_path(scope)
        own = _OWN_ROUTES.get(path)
        if own is not None and scope["method"] == "GET":
            status, body, content_type = await own(self, scope)
            await _answer(send, status, body, content_type)
            return
        group, pinned, named, shape = self._group(path)
        if group is None:
            if named is not None:
                message = self.not_served(named)
            else:
                message = (
                    f"this server serves several models ({', '.join(self.groups)}): use /v2/models/NAME/infer or "
                    "/v1/models/NAME"
                )
            await _answer(send, 404, shape.payload(404, message), b"application/json")
            return
        inference = scope["method"] == "POST" and pinned is None
        asked = None if inference or pinned is not None else _asked_version(scope)
        if asked is not None:
            try:
                chosen = _pinned(group, asked)
            except RequestError as error:
                await _answer(send, 404, shape.payload(404, str(error)), b"application/json")
                return
        elif pinned is not None:
            chosen = group.pinned(pinned) or group.stable  # the stable version answers an unknown one with 404
        elif inference:
            chosen = self.pick(group, self._sticky_value(scope))
        else:
            chosen = group.stable
        respond = _labelled(send, chosen.header)
        with self.answering(group, chosen, inference) as outcome:
            if inference and group.shadows and not self._declared_too_large(scope):
                body, more = await _read_body(receive, self.max_body_bytes)
                receive = _replay(body, receive, more=more)
                if len(body) <= self.max_body_bytes:  # a body over it is the version's to refuse (413), not copied
                    for shadow in group.shadows:
                        copy = {**scope, "headers": list(scope["headers"])}
                        self.copy(shadow, functools.partial(_status_of, shadow.app, copy, body))
            await chosen.app(scope, receive, _watched(respond, outcome) if outcome.judged else respond)

    def _group(self, path: str) -> tuple[_Group | None, str | None, str | None, ErrorShape]:
        """The group a path reaches, the version and the model name it names, and the error shape of
        its protocol."""
        for pattern, shape in _NAMED:
            match = pattern.match(path)
            if match:
                return self.groups.get(match[1]), match[2], match[1], shape
        if path in ("/v2", "/v2/health/live", "/v2/health/ready") or len(self.groups) == 1:
            return next(iter(self.groups.values())), None, None, DETAIL
        return None, None, None, DETAIL

    def _declared_too_large(self, scope: Scope) -> bool:
        """Whether the body declares a length over the limit: then it is refused unread, not copied."""
        declared = dict(scope["headers"]).get(b"content-length", b"")
        return declared.isdigit() and int(declared) > self.max_body_bytes

    def _sticky_value(self, scope: Scope) -> bytes | None:
        """The value of the sticky header, when the request has it."""
        return next((value for name, value in scope["headers"] if name == self.sticky), None)

    def not_served(self, name: str) -> str:
        """What answers a request for a model not served here: the models that are."""
        return f"model '{name}' is not served here; this server serves {', '.join(self.groups)}"

    # -- what HTTP requests and gRPC calls share: the split, the copies to shadows, the outcomes ----------
    def pick(self, group: _Group, sticky: bytes | None) -> _Version:
        """The version of ``group`` that answers an inference request: stable or canary, by the shares, at
        the point of the sticky value (its sha256), or at random without one."""
        return group.pick(point(sticky, self.random))

    @contextlib.contextmanager
    def answering(self, group: _Group, chosen: _Version, inference: bool) -> Iterator[_Outcome]:
        """Hold ``chosen`` while it answers a request (a version replaced meanwhile waits for it); an
        inference request's outcome (its ``status``, set by the caller) is judged for rollback, when a
        canary may be rolled back."""
        outcome = _Outcome(judged=self.rollback is not None and inference and len(group.versions) > 1)
        start = time.perf_counter()
        chosen.in_flight += 1
        self.answering_now += 1
        self.idle.clear()
        try:
            yield outcome
        finally:
            chosen.in_flight -= 1
            self.answering_now -= 1
            if not self.answering_now:
                self.idle.set()
            if outcome.judged:
                self._judge(group, chosen, outcome.status >= 500, time.perf_counter() - start)

    def copy(self, shadow: _Version, send: Callable[[], Awaitable[int]]) -> None:
        """Send a copy of a request to ``shadow`` in the background, when there is spare capacity (``send``:
        it, to the shadow, giving the status of the answer), unless too many wait already."""
        if len(self.shadow_tasks) >= SHADOW_IN_FLIGHT:
            self.shadow_dropped.labels(model=shadow.bundle.name, version=shadow.bundle.version).inc()
            self.shadow_drops += 1
            if self.shadow_drops % LOG_EVERY == 1:
                log.warning("shadows fall behind: %d copies of requests dropped so far", self.shadow_drops)
            return
        task = asyncio.get_running_loop().create_task(self._shadow(shadow, send))
        self.shadow_tasks.add(task)
        task.add_done_callback(self.shadow_tasks.discard)

    async def _shadow(self, shadow: _Version, send: Callable[[], Awaitable[int]]) -> None:
        """Run one copy on the shadow, its answer going nowhere; its own metrics and logs record it. It waits
        for its turn, then for a moment when no caller's request is being answered."""
        async with self.shadow_turn:
            await self.idle.wait()
            start = time.perf_counter()
            try:
                status = await send()
            except ANSWERED as error:  # a gRPC copy raises what the caller's call would be answered with
                status = error_answer(error)[0]
            except Exception:  # noqa: BLE001 - a shadow's failure must never reach a caller
                status = 500
        if status >= 500:
            self.shadow_failures += 1
            if self.shadow_failures % LOG_EVERY == 1:
                log.warning(
                    "shadow %s answered %d (%.1f ms); %d failures so far",
                    shadow.bundle.ref,
                    status,
                    (time.perf_counter() - start) * 1000,
                    self.shadow_failures,
                )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start every version's app (its predictor, background jobs) and the followers of tags, and stop
        them all at the end."""
        await receive()  # lifespan.startup
        for version in self.all:
            try:
                await self.start(version)
            except Exception as error:  # noqa: BLE001 - reported to the server, which stops
                log.exception("starting %s failed", version.bundle.ref)
                await self._stop_all()
                await send({"type": "lifespan.startup.failed", "message": str(error)})
                return
        if self.grpc is not None:
            try:
                await self.grpc.start()
            except Exception as error:  # noqa: BLE001 - reported to the server, which stops
                await self._stop_all()
                await send({"type": "lifespan.startup.failed", "message": str(error)})
                return
        followers = [asyncio.get_running_loop().create_task(f.run()) for f in self.followers.values()]
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if self.grpc is not None:
            await self.grpc.stop()  # gRPC calls in flight finish first, as HTTP requests have
        for task in [*followers, *self.shadow_tasks, *self.background]:
            task.cancel()
        await asyncio.gather(*followers, *self.shadow_tasks, *self.background, return_exceptions=True)
        await self._stop_all()
        await send({"type": "lifespan.shutdown.complete"})

    async def _stop_all(self) -> None:
        for version in [*reversed(self.all), *self.retiring]:
            await self.stop(version)

    # -- a version's life: what a Follower uses to replace a stable version ----------------------------
    def build(self, bundle: Bundle, role: str = STABLE) -> _Version:
        """A version's app (the model loaded and checked as ``create_app`` does), not started yet."""
        return _Version(bundle, create_app(bundle, _own_settings(self.settings, bundle)), role, _header(bundle))

    async def start(self, version: _Version) -> None:
        """Start the version's app (its lifespan: predictor, background jobs, the stored sample's check)."""
        app: Any = version.app
        running = contextlib.AsyncExitStack()
        await running.enter_async_context(app.router.lifespan_context(app))
        version.running = running

    async def stop(self, version: _Version) -> None:
        """End the version's lifespan, if it runs."""
        running, version.running = version.running, None
        if running is not None:
            await running.aclose()

    async def sample_check(self, version: _Version, timeout: float) -> str:
        """What the version's ``/readyz`` says of its stored sample once it has run it ("match", "differs",
        "error"; "timeout" if it has not within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await _get(version, _INTERNAL, "/readyz")
            if status == 200:
                return str(orjson.loads(body).get("sample_check"))
            await asyncio.sleep(0.05)
        return "timeout"

    def switch(self, new: _Version) -> _Version:
        """Make ``new`` the stable version of its model, and return the one it replaces: from now on no
        request is given to that one (those it has already finish there)."""
        group = self.groups[new.bundle.name]
        old = group.stable
        group.replace_stable(new)
        self.all[self.all.index(old)] = new
        self.retiring.add(old)
        if self.rollback is not None:
            self.rollback.forget(old)
        return old

    def _judge(self, group: _Group, version: _Version, failed: bool, seconds: float) -> None:
        """Count an answered inference request, and roll its canary back if the thresholds say so."""
        assert self.rollback is not None
        now = time.monotonic()
        self.rollback.record(version, failed, seconds, now)
        if version is group.stable or version not in group.versions:
            return
        verdict = self.rollback.verdict(group.stable, version, now)
        if verdict is None:
            return
        group.drop(version)
        self.all.remove(version)
        self.retiring.add(version)
        self.rollback.forget(version)
        moment = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        group.rolled_back.append({"model": version.bundle.ref, "time": moment, **verdict})
        log.error(
            "canary %s rolled back, %s answers in its place: %s",
            version.bundle.ref,
            group.stable.bundle.ref,
            verdict["reason"],
        )
        audit.record(
            "rollback",
            audit_log=self.settings.audit_log,
            canary=version.bundle.ref,
            stable=group.stable.bundle.ref,
            **verdict,
        )
        task = asyncio.get_running_loop().create_task(self.retire(version, self.settings.graceful_timeout))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def retire(self, old: _Version, timeout: float) -> None:
        """Stop a replaced version once its requests in flight are answered (at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while old.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if old.in_flight:
            log.warning(
                "%s still had %d requests in flight after %gs; stopping it", old.bundle.ref, old.in_flight, timeout
            )
        await self.stop(old)
        self.retiring.discard(old)

    # -- the routes answered for every version --------------------------------------------------------
    async def _each(self, scope: Scope, path: str) -> list[tuple[_Version, int, bytes]]:
        """GET ``path`` of every version's app with the request's headers (so each checks the API key)."""
        return [(version, *await _get(version, scope, path)) for version in list(self.all)]

    async def _metrics(self, scope: Scope) -> tuple[int, bytes, bytes]:
        answers = await self._each(scope, "/metrics")
        refused = next((a for a in answers if a[1] != 200), None)
        if refused is not None:
            return refused[1], refused[2], b"application/json"
        texts = [body.decode() for _, _, body in answers] + [generate_latest(self.registry).decode()]
        return 200, merge_expositions(texts), CONTENT_TYPE_LATEST.encode()

    async def _metadata(self, scope: Scope) -> tuple[int, bytes, bytes]:
        answers = await self._each(scope, "/metadata")
        refused = next((a for a in answers if a[1] != 200), None)
        if refused is not None:
            return refused[1], refused[2], b"application/json"
        listed = [{"role": v.role, **orjson.loads(body), **self._state(v)} for v, _, body in answers]
        return 200, orjson.dumps(listed), b"application/json"

    async def _readyz(self, scope: Scope) -> tuple[int, bytes, bytes]:
        answers = await self._each(scope, "/readyz")
        ready = all(status == 200 for _, status, _ in answers)
        versions = [{"role": v.role, "ready": status == 200, "model": v.bundle.ref} for v, status, _ in answers]
        return 200 if ready else 503, orjson.dumps({"ready": ready, "versions": versions}), b"application/json"

    def _state(self, version: _Version) -> dict[str, Any]:
        """What the stable version's metadata adds: the tag followed (``follow``), and the canaries rolled
        back (``rolled_back``)."""
        if version.role != STABLE:
            return {}
        follower, group = self.followers.get(version.bundle.name), self.groups[version.bundle.name]
        return {
            **({"follow": follower.status} if follower is not None else {}),
            **({"rolled_back": group.rolled_back} if group.rolled_back else {}),
        }

    async def _healthz(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, b'{"status":"ok"}', b"application/json"


class _Grpc:
    """The versions as the gRPC service reaches them (``oip_grpc.Models``): through the router's groups at
    every call, so that a stable version switched (``Follower``) or a canary rolled back is seen at once, as
    by HTTP requests. An inference call that names no version is split by the same shares (the sticky
    header read from the call's metadata), copied to the shadows, held and judged as an HTTP request is."""

    def __init__(self, router: VersionRouter) -> None:
        self.router = router

    def ready(self) -> bool:
        return all(version.oip.served.ready for version in self.router.all)

    def find(self, name: str, version: str) -> OipModel:
        group = self._group(name)
        return (_pinned(group, version) if version else group.stable).oip

    @contextlib.asynccontextmanager
    async def answering(
        self, name: str, version: str, metadata: Mapping[str, str], run: Run
    ) -> AsyncIterator[OipModel]:
        router, group = self.router, self._group(name)
        if version:
            chosen = _pinned(group, version)
        else:
            sticky = metadata.get(router.sticky.decode()) if router.sticky is not None else None
            chosen = router.pick(group, sticky.encode() if sticky is not None else None)
            for shadow in group.shadows:
                router.copy(shadow, functools.partial(_ran, run, shadow.oip))
        with router.answering(group, chosen, inference=not version) as outcome:
            try:
                yield chosen.oip
                outcome.status = 200
            except ANSWERED as error:
                outcome.status = error_answer(error)[0]
                raise

    def _group(self, name: str) -> _Group:
        """The versions of model ``name`` (with no name, of the only model); a ``RequestError`` naming the
        models served when there is no such model, or several to choose from."""
        groups = self.router.groups
        if not name and len(groups) == 1:
            return next(iter(groups.values()))
        if not name:
            raise RequestError(400, f"this server serves several models ({', '.join(groups)}): name one in model_name")
        group = groups.get(name)
        if group is None:
            raise RequestError(404, self.router.not_served(name))
        return group


def _pinned(group: _Group, version: str) -> _Version:
    """The version of ``group`` named ``version`` (canary and shadow too); a 404 naming its versions if none."""
    found = group.pinned(version)
    if found is None:
        versions = ", ".join(v.bundle.version for v in [*group.versions, *group.shadows])
        name = group.stable.bundle.name
        raise RequestError(404, f"model '{name}' has no version '{version}' here; its versions are {versions}")
    return found


async def _ran(run: Run, model: OipModel) -> int:
    """The status of a gRPC inference copied to a shadow that answered (errors are raised)."""
    await run(model)
    return 200


_OWN_ROUTES: dict[str, Callable[[VersionRouter, Scope], Any]] = {
    "/metrics": VersionRouter._metrics,
    "/metadata": VersionRouter._metadata,
    "/readyz": VersionRouter._readyz,
    "/healthz": VersionRouter._healthz,
}


# The scope of a request the router makes itself (a version's /readyz while it starts).
_INTERNAL: Scope = {"type": "http", "http_version": "1.1", "scheme": "http", "root_path": "", "headers": []}


def _asked_version(scope: Scope) -> str | None:
    """The version a GET asks for with ``?version=V`` (its docs, metadata or drift), or None."""
    asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("version")
    return asked[-1] if asked else None


async def _get(version: _Version, scope: Scope, path: str) -> tuple[int, bytes]:
    """GET ``path`` of one version's app with the headers of ``scope``: the status and body of its answer."""
    asked = {**scope, "path": path, "raw_path": path.encode(), "query_string": b"", "method": "GET"}
    status, _, body = await answer(version.app, asked, b"")
    return status, body


async def answer(app: ASGIApp, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run one request (``scope`` and its whole ``body``) through ``app``: the status, headers and body of
    its answer, gathered (a version behind a Ray Serve ingress answers this way)."""
    status, headers, content = 500, [], b""

    async def sink(message: Message) -> None:
        nonlocal status, headers, content
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            content += message.get("body", b"")

    await app(scope, _replay(body, _never), sink)
    return status, headers, content


def merge_expositions(texts: Iterable[str]) -> bytes:
    """Prometheus text expositions as one: the families of one name merged into one (a repeated TYPE line
    is refused by Prometheus), a sample given twice kept once (with several workers every version's app
    exposes the whole process group's metrics)."""
    families: dict[str, Metric] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in seen:
                    seen.add(key)
                    merged.samples.append(sample)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families:
    """A collector of families already made."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _header(bundle: Bundle) -> tuple[bytes, bytes]:
    return VERSION_HEADER.lower().encode(), bundle.ref.encode()


def _own_settings(settings: ServeSettings, bundle: Bundle) -> ServeSettings:
    """The settings of one version: its own prediction log file (``PATH`` -> ``STEM.NAME-VERSION.SUFFIX``),
    since each version's log rotates on its own; no gRPC port, since the router serves gRPC for all."""
    if settings.grpc_port is not None:
        settings = replace(settings, grpc_port=None)
    if not settings.prediction_log:
        return settings
    path = Path(settings.prediction_log)
    return replace(
        settings, prediction_log=str(path.with_name(f"{path.stem}.{bundle.name}-{bundle.version}{path.suffix}"))
    )


@dataclass
class _Outcome:
    """How a request was answered: its status (500 until known: an app that raises is answered 500 by the
    server), and whether it is judged for rollback."""

    judged: bool
    status: int = 500


def _watched(send: Send, outcome: _Outcome) -> Send:
    """``send``, writing the status it sends in ``outcome``."""

    async def watched(message: Message) -> None:
        if message["type"] == "http.response.start":
            outcome.status = message["status"]
        await send(message)

    return watched


async def _status_of(app: ASGIApp, scope: Scope, body: bytes) -> int:
    """The status of ``app``'s answer to one request (a shadow's copy), the rest of it going nowhere."""
    status, _, _ = await answer(app, scope, body)
    return status


def _labelled(send: Send, header: tuple[bytes, bytes]) -> Send:
    """``send`` with the version header added to the answer."""

    async def labelled(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), header]}
        await send(message)

    return labelled


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request's body, and whether more of it follows: reading stops once it passes ``limit``."""
    body, more = b"", True
    while more and len(body) <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return body, False
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body, more


def _replay(body: bytes, then: Receive, *, more: bool = False) -> Receive:
    """A ``receive`` that gives ``body`` (with ``more`` to come), then defers to ``then``."""
    given = False

    async def receive() -> Message:
        nonlocal given
        if given:
            return await then()
        given = True
        return {"type": "http.request", "body": body, "more_body": more}

    return receive


async def _never() -> Message:
    """What an internal call's app waits on after its body: nothing comes (it is cancelled if it listens)."""
    waiting: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    return await waiting


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _largest_psi(version: object) -> float | None:
    """A version's largest PSI now (its app's drift monitor's), or None without a monitor or a report."""
    assert isinstance(version, _Version)
    monitor = version.oip.served.drift
    return monitor.largest_psi() if monitor is not None else None
