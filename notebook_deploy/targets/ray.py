"""A bundle as a Ray Serve application: the same ASGI app as ``notebook-deploy serve``, in Ray replicas.

    from notebook_deploy.targets import ray as nd_ray
    deployment = nd_ray.deploy("churn", num_replicas=2)       # or autoscaling=True
    deployment.predict(frame.head(3)); deployment.url          # http://127.0.0.1:8000/churn
    deployment.delete()

Each replica receives the bundle as the bytes of its archive (``Bundle.export``), opens it in a temporary
folder and builds the app with ``create_app``, so replicas need no shared disk and the bundle lives in
the deployment's own config: replicas that restart or scale up later get it, also after the Python that
deployed it has exited. Ray Serve's ingress runs the app's lifespan (the predictor, with the app's own
adaptive batching) in each replica, and its proxy routes ``ROUTE_PREFIX/...`` to them. Ray routes to a
replica once its lifespan has started, which does not wait for the stored sample: each replica's
``/readyz`` (503 until its model has answered the sample) says when it has.

With canaries or shadows (``deploy(ref, canary=["churn:3f2a=10"], shadow=[...], sticky_header=...)``) the
application has one deployment of ``VersionReplica`` per version behind a ``VersionIngress``, which splits
requests with the local server's own decision (``serving.split``).

``ray`` is imported inside the functions, so importing this module does not import Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..api import load
from ..bundle import Bundle
from ..errors import ServeError
from ..provenance import signer_keys
from ..serving.client import BundleClient
from ..serving.deployment import Deployment
from ..serving.settings import ServeSettings
from ..store import Store

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger("notebook_deploy.serving")

# autoscaling=True: between one and four replicas, adding one when replicas average over two requests.
DEFAULT_AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}

# Server settings that Ray Serve provides in its own way, and what to use instead.
NOT_ON_RAY = {
    "workers": "num_replicas= or autoscaling=",
    "grpc_port": "the HTTP API (Ray Serve's proxy routes HTTP only here)",
    "grpc_host": "the HTTP API (Ray Serve's proxy routes HTTP only here)",
    "tls_cert": "TLS in front of Ray Serve's proxy (a load balancer or ingress)",
    "tls_key": "TLS in front of Ray Serve's proxy (a load balancer or ingress)",
}


class BundleReplica:
    """What each Ray Serve replica runs: the bundle, opened from its archive, served by ``create_app``.
    Wrapped by ``serve.ingress()`` in ``deploy``, which calls ``__serve_build_asgi_app__`` after
    ``__init__`` and then runs the app's lifespan."""

    def __init__(self, archive: bytes, settings_json: str) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="notebook-deploy-ray-"))
        archive_path = self._folder / "bundle.tar.gz"
        archive_path.write_bytes(archive)
        self.settings = ServeSettings.from_json(settings_json)
        self.bundle = Store(self._folder / "store").import_archive(
            archive_path, allow_unsigned=self.settings.allow_unsigned, trust=self.settings.trust()
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        from ..serving.app import create_app

        return create_app(self.bundle, self.settings)

    def __del__(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


class VersionReplica(BundleReplica):
    """One version behind a ``VersionIngress``, in each of its replicas. Not an ingress itself (Ray Serve
    allows one per application), so it runs its app's lifespan (the predictor, the stored sample's check)
    itself, from its constructor, which Ray Serve awaits; the lifespan ends with the replica's process."""

    async def __init__(self, archive: bytes, settings_json: str) -> None:  # type: ignore[misc]
        from ..serving.app import create_app

        super().__init__(archive, settings_json)
        self.app = create_app(self.bundle, self.settings)
        self.running = contextlib.AsyncExitStack()
        await self.running.enter_async_context(self.app.router.lifespan_context(self.app))

    async def answer(self, scope: dict[str, Any], body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Answer a request that the ingress forwards (its scope, without ``type``, and its body) through this
        version's app: the status, headers and body."""
        from ..serving.router import answer

        return await answer(self.app, {**scope, "type": "http"}, body)


class VersionIngress:
    """The ingress of one model's versions on Ray Serve (``deploy(..., canary=, shadow=)``), each version a
    deployment of ``BundleReplica``: an inference request (a POST) goes to the stable version or a canary as
    the local server splits it (``serving.split``: the percents, the sticky header's hash), other routes to
    the stable version; every shadow gets a copy in the background, whose answer and errors go nowhere. The
    answer names the version that gave it in ``X-Model-Version``, as the local server's do."""

    def __init__(
        self, versions: list[Any], refs: list[str], percents: list[float], shadows: list[Any], sticky: str | None
    ) -> None:
        from ..serving.router import VERSION_HEADER
        from ..serving.split import Split

        self.versions, self.shadows = versions, shadows  # Ray Serve hands them over as DeploymentHandles
        self.headers = [(VERSION_HEADER.lower().encode(), ref.encode()) for ref in refs]
        self.split = Split(percents)
        self.sticky = sticky.lower().encode() if sticky else None
        self.random = random.Random()
        self.copies: set[asyncio.Task[None]] = set()

    async def __call__(self, request: Request) -> Response:
        from starlette.responses import Response

        from ..serving.split import point

        scope, body = request.scope, await request.body()
        forwarded = {key: scope[key] for key in _FORWARDED if key in scope}
        chosen = 0
        if scope["method"] == "POST":
            sticky = next((value for name, value in scope["headers"] if name == self.sticky), None)
            chosen = self.split.pick(point(sticky, self.random))
            for shadow in self.shadows:
                self._copy(shadow, forwarded, body)
        status, headers, content = await self.versions[chosen].answer.remote(forwarded, body)
        response = Response(content, status_code=status)
        response.raw_headers = [*headers, self.headers[chosen]]
        return response

    def _copy(self, shadow: Any, scope: dict[str, Any], body: bytes) -> None:
        """Send a copy to ``shadow`` in the background, unless too many are under way (then it is dropped)."""
        from ..serving.router import SHADOW_IN_FLIGHT

        if len(self.copies) >= SHADOW_IN_FLIGHT:
            return
        task = asyncio.get_running_loop().create_task(self._shadow(shadow, scope, body))
        self.copies.add(task)
        task.add_done_callback(self.copies.discard)

    @staticmethod
    async def _shadow(shadow: Any, scope: dict[str, Any], body: bytes) -> None:
        try:
            await shadow.answer.remote(scope, body)
        except Exception:  # noqa: BLE001 - a shadow's failure must never reach a caller; its replica logs it
            log.debug("a copy to a shadow failed", exc_info=True)


# What of a request's ASGI scope reaches the version's app (picklable; the ingress keeps the rest).
_FORWARDED = ("method", "path", "raw_path", "root_path", "query_string", "headers", "http_version", "scheme")


class RayDeployment(BundleClient):
    """A bundle deployed as a Ray Serve application. Get one from ``deploy``; ``predict`` and ``post``
    talk to it over HTTP like a local ``Server``."""

    title = "Ray Serve deployment of"

    def __init__(self, bundle: Bundle, name: str, url: str, route_prefix: str) -> None:
        super().__init__(bundle, url)
        self.name = name
        self.route_prefix = route_prefix

    def status(self) -> str:
        """The application's status in Ray Serve (``RUNNING``, ``DEPLOYING``, ...; ``DELETED`` once gone)."""
        from ray import serve

        application = serve.status().applications.get(self.name)
        return "DELETED" if application is None else str(application.status.value)

    def replicas(self) -> dict[str, int]:
        """How many replicas are in each state, e.g. ``{"RUNNING": 2}``."""
        from ray import serve

        application = serve.status().applications.get(self.name)
        if application is None:
            return {}
        # Ray annotates the keys as ReplicaState, but its status API hands back the states' names as str
        return {str(state): count for state, count in application.deployments[self.name].replica_states.items()}

    def config(self) -> dict[str, Any]:
        """The deployment's config as Ray Serve applies it (``num_replicas``, ``autoscaling_config``,
        ``ray_actor_options``, ...): what ``serve status`` and Ray's dashboard show."""
        from ray.serve.context import _get_global_client  # the one call that answers this (no public API)

        client = _get_global_client()  # raises when no Serve controller runs, so not None
        if client is None:
            raise ServeError("Ray Serve is not running")
        details = client.get_serve_details()
        return details["applications"][self.name]["deployments"][self.name]["deployment_config"]

    def delete(self) -> None:
        """Remove the application from Ray Serve (its replicas stop) and close the HTTP connections."""
        delete(self.name)
        self.close()

    def __enter__(self) -> RayDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def _summary(self) -> list[tuple[str, str]]:
        replicas = ", ".join(f"{count} {state.lower()}" for state, count in self.replicas().items())
        return [
            *super()._summary(),
            ("Ray Serve application", self.name),
            ("status", self.status()),
            ("replicas", replicas or "none"),
            ("methods", ", ".join(f"POST /{m}" for m in self.bundle.methods)),
        ]

    def __repr__(self) -> str:
        return f"<RayDeployment {self.bundle.ref} as Ray Serve application {self.name!r} at {self.url}>"


def deploy(
    ref: str | os.PathLike[str] | Bundle,
    *,
    name: str | None = None,
    num_replicas: int = 1,
    autoscaling: dict[str, Any] | bool | None = None,
    address: str | None = None,
    route_prefix: str | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    runtime_env: dict[str, Any] | None = None,
    pip_from_lock: bool = False,
    http_host: str | None = None,
    http_port: int | None = None,
    deployment_options: dict[str, Any] | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    timeout: float = 300,
    canary: Sequence[str] = (),
    shadow: Sequence[str] = (),
    sticky_header: str | None = None,
    **serve_options: Any,
) -> RayDeployment:
    """Run a bundle (a Bundle, a reference or a path) as a Ray Serve application with the same HTTP API
    as ``serve``, and return once its replicas answer.

    ``address`` is the Ray cluster's (``"ray://head:10001"``, ``"head:6379"``, ``"auto"``); by default
    ``$RAY_ADDRESS``, else a running local instance, else a new one. ``name`` (default: the bundle's name)
    names the Ray Serve application; it is served under ``route_prefix`` (default ``/NAME``). Replicas:
    ``num_replicas``, or ``autoscaling`` (a dict of Ray Serve's ``autoscaling_config`` such as
    ``{"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}``, or True for that).
    ``ray_actor_options`` (e.g. ``{"num_cpus": 0.5}``) and ``deployment_options`` (other arguments of
    ``serve.deployment``) go to Ray Serve as they are; ``max_ongoing_requests`` defaults to the app's
    ``max_batch_size`` (64), so that the app's own batching can fill its batches.
    ``runtime_env`` is the replicas' Ray runtime environment (default: the cluster's Python);
    ``pip_from_lock=True`` adds the bundle's pinned requirements (``bundle.lock()``) to its ``pip``.
    ``http_host``/``http_port`` apply when this call starts Ray Serve (default ``127.0.0.1:8000``).
    ``serve_options`` are ``ServeSettings`` fields, as for ``serve`` (``batching=``, ``max_queue=``, ...).

    ``canary`` (``["churn:3f2a=10"]``: REF=PERCENT), ``shadow`` (``["churn:9b1c"]``) and ``sticky_header``
    are ``serve``'s ``--canary``, ``--shadow`` and ``--sticky-header``: then the application has one
    deployment per version (``NAME-VERSION``, each with the replicas and options above) behind an ingress
    deployment named ``NAME`` (``VersionIngress``) that splits the requests as the local server does."""
    from ray import serve

    unsupported = sorted(set(serve_options) & set(NOT_ON_RAY))
    if unsupported:
        raise ServeError(f"{unsupported[0]} does not apply on Ray Serve: use {NOT_ON_RAY[unsupported[0]]}")
    bundle = load(ref, store)
    versions = Deployment.around(bundle, canary, shadow, sticky_header, load=lambda given: load(given, store))
    settings = ServeSettings().with_options(**serve_options)
    # Checked here, against this user's trust store; the replicas check the archive against the keys
    # that signed it, passed in their settings (they have no trust store of their own).
    signers: dict[str, bytes] = {}
    for each in versions.bundles():
        signers.update(signer_keys(each, settings.trust(), allow_unsigned=settings.allow_unsigned, action="deploy"))
    settings = replace(settings, trusted_keys=tuple(pem.decode() for pem in signers.values()))
    name = name or bundle.name
    route_prefix = route_prefix or f"/{name}"

    def actor_options(of: Bundle) -> dict[str, Any]:
        environment = replica_environment(of, runtime_env, pip_from_lock)
        return {**(ray_actor_options or {}), **({"runtime_env": environment} if environment else {})}

    scaling: dict[str, Any] = (
        {"autoscaling_config": DEFAULT_AUTOSCALING if autoscaling is True else autoscaling}
        if autoscaling
        else {"num_replicas": num_replicas}
    )
    # Ray Serve's default of 5 requests at once per replica would cap the app's own batches at 5 rows.
    options = {"max_ongoing_requests": settings.max_batch_size, **scaling, **(deployment_options or {})}

    def version(of: Bundle, deployment_name: str, served_by: Any) -> Any:
        # the decorator form: Ray types serve.deployment(cls, ...) as returning the decorator, not the Deployment
        made = serve.deployment(name=deployment_name, ray_actor_options=actor_options(of), **options)(served_by)
        return made.bind(_archive_bytes(of), settings.to_json())

    if versions.single is not None:
        application = version(bundle, name, serve.ingress()(BundleReplica))
    else:
        answering = versions.versions_of(bundle.name)
        application = serve.deployment(name=name, ray_actor_options=actor_options(bundle), **options)(
            VersionIngress
        ).bind(
            [version(b, f"{name}-{b.version}", VersionReplica) for b in answering],
            [b.ref for b in answering],
            [percent for _, percent in versions.canary],
            [version(b, f"{name}-{b.version}", VersionReplica) for b in versions.shadow],
            versions.sticky_header,
        )
    connect(address)
    http_options = {key: value for key, value in (("host", http_host), ("port", http_port)) if value is not None}
    serve.start(http_options=http_options)
    serve.run_many(
        [serve.RunTarget(application, name=name, route_prefix=route_prefix)], wait_for_applications_running=False
    )
    _wait_until_running(name, bundle, timeout)
    return RayDeployment(bundle, name, _application_url(route_prefix, address), route_prefix)


def connect(address: str | None = None) -> None:
    """Connect this Python to the Ray cluster at ``address`` (else ``$RAY_ADDRESS``, else a running local
    instance, else a new local one), unless it is connected already."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as error:
        raise ServeError(
            f"no Ray cluster answers at {address}: {str(error).rstrip('.')}. Start one with 'ray start --head', "
            "or give its address (address=, --address or $RAY_ADDRESS)"
        ) from None


def delete(name: str) -> None:
    """Remove the Ray Serve application ``name`` from the connected cluster; its replicas stop."""
    from ray import serve

    running = serve.status().applications
    if name not in running:
        raise ServeError(f"Ray Serve has no application named {name!r} (it has: {', '.join(running) or 'none'})")
    serve.delete(name)


def replica_environment(bundle: Bundle, runtime_env: dict[str, Any] | None, pip_from_lock: bool) -> dict[str, Any]:
    """The replicas' Ray runtime environment: ``runtime_env``, plus the bundle's lock in ``pip`` when
    ``pip_from_lock``. The cluster's Python must have notebook-deploy itself (the replicas import it)."""
    environment = dict(runtime_env or {})
    if pip_from_lock:
        environment["pip"] = [*environment.get("pip", []), *bundle.lock()]
    return environment


def _archive_bytes(bundle: Bundle) -> bytes:
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-ray-") as folder:
        return bundle.export(folder).read_bytes()


def _wait_until_running(name: str, bundle: Bundle, timeout: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    while True:
        application = serve.status().applications.get(name)
        state = None if application is None else str(application.status.value)
        if state == "RUNNING":
            return
        if application is not None and state == "DEPLOY_FAILED":
            raise ServeError(f"Ray Serve could not deploy {bundle.ref}: {application.message}")
        if time.monotonic() > deadline:
            raise ServeError(
                f"{bundle.ref} is not running on Ray Serve after {timeout:.0f} s (status {state}); does the "
                "cluster have the CPUs for every replica (ray_actor_options={'num_cpus': ...})? "
                f"Ray's own view: 'serve status'. Remove it with 'serve shutdown' or serve.delete({name!r})."
            )
        time.sleep(0.2)


def _application_url(route_prefix: str, address: str | None) -> str:
    """Where Ray Serve's proxy answers for ``route_prefix``; a proxy listening on every interface is
    reached at the cluster's address."""
    from ray.serve.context import _get_global_client  # Serve's root URL has no public accessor

    client = _get_global_client()  # raises when no Serve controller runs, so not None
    if client is None:
        raise ServeError("Ray Serve is not running")
    root = urlsplit(client.root_url)
    if root.hostname in ("0.0.0.0", "::"):
        cluster = urlsplit(f"//{(address or os.environ.get('RAY_ADDRESS') or '').split('://')[-1]}").hostname
        host = cluster if cluster and cluster not in ("auto", "local") else "127.0.0.1"
        root = root._replace(netloc=f"{host}:{root.port}")
    return urlunsplit(root).rstrip("/") + ("" if route_prefix == "/" else route_prefix)
