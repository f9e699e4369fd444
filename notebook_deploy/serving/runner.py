"""Run the app of a bundle (or of a ``deployment.Deployment``: several versions) under uvicorn on a socket bound here (so that port 0 gives a free port), in
this process or in ``settings.workers`` worker processes that share the socket."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from ..bundle import Bundle
from ..store import Store
from .core import StartingApp, load_served
from .deployment import Deployment
from .limits import BoundedHead
from .settings import ServeSettings

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .served import ServedModel

# Set by ``Server`` in the child's environment: the server stops when that process is gone.
PARENT_PID_VARIABLE = "NOTEBOOK_DEPLOY_PARENT_PID"
# What a worker process serves: {"deployment": Deployment as JSON, "settings": ServeSettings as JSON}.
WORKER_VARIABLE = "NOTEBOOK_DEPLOY_WORKER"


def run(
    bundle: Bundle | Deployment,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    *,
    ready_file: str | os.PathLike[str] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``bundle`` (or several versions: a ``Deployment``) until interrupted; SIGTERM drains the
    requests in flight first. Once the server is ready (``/readyz`` answers 200: every version has
    answered its stored sample), the URL is written to ``ready_file`` (as JSON) and passed to ``on_ready``."""
    deployment = bundle if isinstance(bundle, Deployment) else Deployment((bundle,))
    settings = settings or ServeSettings()
    if settings.grpc_host is None:
        settings = replace(settings, grpc_host=host)  # gRPC listens where HTTP does
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    scheme = "https" if settings.tls_cert else "http"
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"{scheme}://{url_host}:{bound}"
    local = (
        f"{scheme}://{'[::1]' if family == socket.AF_INET6 else '127.0.0.1'}:{bound}"
        if host in ("0.0.0.0", "::")
        else url
    )
    options: dict[str, Any] = dict(
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_timeout,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        http=BoundedHead,
    )
    if settings.workers <= 1:
        gc.disable()  # until load_served freezes what it loaded: see there
        server = uvicorn.Server(uvicorn.Config(serving_app(deployment, settings), **options))
        stop: Callable[[], None] = functools.partial(setattr, server, "should_exit", True)
        serve_forever: Callable[[], None] = functools.partial(server.run, sockets=[sock])
        metrics_dir = None
    else:
        from .metrics import MULTIPROCESS_VARIABLE

        metrics_dir = tempfile.mkdtemp(prefix="notebook-deploy-metrics-")
        os.environ[MULTIPROCESS_VARIABLE] = metrics_dir  # read by prometheus_client as each worker imports it
        os.environ[WORKER_VARIABLE] = json.dumps({"deployment": deployment.to_json(), "settings": settings.to_json()})
        config = uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=settings.workers, **options)
        supervisor = Multiprocess(config, sockets=[sock])
        stop = supervisor.should_exit.set
        serve_forever = supervisor.run
    threading.Thread(target=_announce, args=(local, url, ready_file, on_ready), daemon=True).start()
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent:
        threading.Thread(target=_exit_with_parent, args=(int(parent), stop), daemon=True).start()
    try:
        with contextlib.ExitStack() as pins:
            for served in deployment.bundles():
                store = Store.holding(served.path)
                if store is not None:
                    pins.enter_context(store.serving(served, url))
            serve_forever()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """The app of one worker process, built from what ``run`` put in the environment."""
    gc.disable()  # until load_served freezes what it loaded: see there
    spec = json.loads(os.environ[WORKER_VARIABLE])
    supervisor = os.getppid()
    # A worker whose supervisor was killed stops too, rather than serving on as an orphan.
    threading.Thread(
        target=_exit_with_parent, args=(supervisor, lambda: os.kill(os.getpid(), signal.SIGTERM)), daemon=True
    ).start()
    # The supervisor loaded (and, for a folder from elsewhere, scanned) these bundles; each worker checks their files.
    return serving_app(Deployment.from_json(spec["deployment"]), ServeSettings.from_json(spec["settings"]))


def serving_app(deployment: Deployment, settings: ServeSettings) -> ASGIApp:
    """The app that serves ``deployment``: for a single bundle a ``core.StartingApp``, which answers
    predictions while FastAPI's app is built in the background; else a ``router.VersionRouter``."""
    if deployment.single is not None:
        return StartingApp(load_served(deployment.single, settings), _build_app)
    from .router import VersionRouter

    return VersionRouter(deployment, settings)


def _build_app(served: ServedModel) -> ASGIApp:
    from .app import build_app  # FastAPI and the protocols: imported in StartingApp's background thread

    return build_app(served)


def _announce(
    local: str, url: str, ready_file: str | os.PathLike[str] | None, on_ready: Callable[[str], None] | None
) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to see that this server answers, over loopback
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    while True:
        try:
            with opener.open(f"{local}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.02)
    if ready_file is not None:
        path = Path(ready_file)
        temporary = path.with_name(path.name + ".part")
        temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        os.replace(temporary, path)
    if on_ready is not None:
        on_ready(url)


def _exit_with_parent(parent: int, stop: Callable[[], None]) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    stop()
