"""A bundle served on localhost by a child process, and the handle to talk to it and stop it; or several
models, and versions of each (canaries, shadows), served by one.

The child is ``python -m notebook_deploy serve``, the same code path as the CLI, given the same options,
checked here first (``deployment.Deployment``) so that a bad one is refused in the notebook, naming it. It is
stopped when the handle's ``stop`` is called, when the ``with`` block ends, when the Python process that
started it exits normally (atexit), and, should that process die without cleaning up, by the child itself.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from ..api import load
from ..bundle import Bundle
from ..errors import ServeError, ServerStoppedError
from ..store import Store
from .client import BundleClient
from .runner import PARENT_PID_VARIABLE
from .settings import ServeSettings
from .split import CANARY, SHADOW, STABLE

if TYPE_CHECKING:
    from .deployment import Deployment

Ref = str | os.PathLike[str] | Bundle  # what ``load`` takes

_RUNNING: weakref.WeakSet[Server] = weakref.WeakSet()
_WORKDIRS: list[Path] = []  # log folders, kept after a stop so that logs() still reads; removed at exit


class Server(BundleClient):
    """A running local server. Get one from ``notebook_deploy.serve``. ``bundle`` is the stable version of the
    first model, ``models`` each model's by name, ``deployment`` everything served: the stable versions, the
    canaries with their percents, the shadows, the sticky header. Each answer's ``X-Model-Version`` header
    (on the response ``post`` returns) names the version that gave it."""

    def __init__(
        self,
        deployment: Deployment,
        process: subprocess.Popen[bytes],
        url: str,
        workdir: Path,
        *,
        api_key: str | None = None,
        verify: bool | str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(deployment.stable[0], url, api_key=api_key, verify=verify)
        self.deployment = deployment
        self.models = {bundle.name: bundle for bundle in deployment.stable}
        self._process = process
        self._workdir = workdir
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def id(self) -> str:
        """The server's id among those a ``Servers`` started: its process id, as text."""
        return str(self.pid)

    def to_dict(self) -> dict[str, Any]:
        """The server as JSON-ready data (the Jupyter REST API's Server)."""
        return {
            "id": self.id,
            "ref": self.bundle.ref,
            "name": self.bundle.name,
            "version": self.bundle.version,
            "url": self.url,
            "docs_url": self.docs_url,
            "status": "running" if self.running else "stopped",
            "pid": self.pid,
            "methods": self.bundle.methods,
        }

    def post(self, path: str, payload: Any, timeout: float = 60, stream: bool = False) -> requests.Response:
        """POST ``payload`` as JSON to ``path`` on this server and return the raw response; raises
        ``ServerStoppedError`` when the server has stopped."""
        self.check_running()
        return super().post(path, payload, timeout, stream)

    def get(self, path: str, timeout: float = 60) -> requests.Response:
        """GET ``path`` on this server; raises ``ServerStoppedError`` when the server has stopped."""
        self.check_running()
        return super().get(path, timeout)

    def check_running(self) -> None:
        """Raise ``ServerStoppedError`` when the server has stopped."""
        if not self.running:
            raise ServerStoppedError(f"the server for {self.bundle.ref} has stopped; start it again")

    def logs(self) -> str:
        """Everything the server has written to its standard output and error."""
        try:
            return (self._workdir / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        """Stop the server (gracefully, then by force after ``timeout`` seconds)."""
        if self.running:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self.close()
        _RUNNING.discard(self)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _summary(self) -> list[tuple[str, str]]:
        deployment = self.deployment
        if len(self.models) == 1:
            routes = [("methods", ", ".join(f"POST /{m}" for m in self.bundle.methods))]
        else:  # the unnamed routes are refused: each model answers under its name
            routes = [("models", ", ".join(f"POST /v1/models/{name}:predict" for name in self.models))]
        if deployment.canary or deployment.shadow:
            roles = [
                *((b, STABLE) for b in deployment.stable),
                *((b, f"{CANARY} {percent:g}%") for b, percent in deployment.canary),
                *((b, SHADOW) for b in deployment.shadow),
            ]
            routes.append(("versions", ", ".join(f"{bundle.ref} {role}" for bundle, role in roles)))
        if deployment.sticky_header:
            routes.append(("sticky header", deployment.sticky_header))
        return [
            *super()._summary(),
            ("status", "running" if self.running else f"stopped (exit code {self._process.returncode})"),
            *routes,
            ("pid", str(self.pid)),
        ]

    def _subject(self) -> str:
        return ", ".join(bundle.ref for bundle in self.deployment.stable)

    def __repr__(self) -> str:
        return f"<Server {self._subject()} at {self.url} ({'running' if self.running else 'stopped'})>"


def serve(
    ref: Ref | Sequence[Ref],
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    canary: Mapping[Ref, float] | str | Sequence[str] = (),
    shadow: Ref | Sequence[Ref] = (),
    sticky_header: str | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    timeout: float = 120,
    settings: ServeSettings | None = None,
    api_key: str | None = None,
    verify: bool | str | os.PathLike[str] | None = None,
    **options: Any,
) -> Server:
    """Serve a bundle (a Bundle, a reference or a path) on ``host:port`` in a child process and return
    once it answers; ``port=0`` picks a free port. Stop it with ``.stop()`` or a ``with`` block.

    Several versions and models, as ``notebook-deploy serve REF... --canary --shadow --sticky-header``: a list
    of refs serves several models, each under its name (``server.predict(X, model="iris")``); ``canary``
    (``{"churn:3f2a": 10}``, or ``["churn:3f2a=10"]``) sends that percent of its model's requests to each
    version, ``shadow`` (``"churn:9b1c"``, or a list) sends them a copy of every one, and ``sticky_header``
    (``"X-User"``) keeps the callers with one value of that header on one version. They are checked here,
    before the child starts: a ``SettingError`` names the option that is wrong.

    ``options`` are ``ServeSettings`` fields, e.g. ``workers=2``, ``batching=True``, ``max_batch_size=32``,
    ``grpc_port=0``, ``max_body_bytes=...``, ``tls_cert=``/``tls_key=`` files, ``auth=True``,
    ``keys_file=...``, ``follow=True`` (each ref then names a tag: ``"churn:prod"``). ``api_key`` is sent as
    ``Authorization: Bearer`` by the handle's ``predict`` and ``post``; ``verify`` is the certificate (or CA)
    file they trust over TLS, or False."""
    from .deployment import Deployment

    settings = (settings or ServeSettings()).with_options(**options)
    given: dict[str, Bundle] = {}  # the bundles given as objects, by the folder they travel to the child as

    def text(each: Ref) -> str:
        if isinstance(each, Bundle):
            given[str(each.path)] = each
            return str(each.path)
        return os.fspath(each)

    canaries = (
        [f"{text(r)}={percent}" for r, percent in canary.items()] if isinstance(canary, Mapping) else _listed(canary)
    )
    deployment = Deployment.parse(
        [text(r) for r in _listed(ref)],
        [str(c) for c in canaries],
        [text(r) for r in _listed(shadow)],
        sticky_header,
        load=lambda each: given[each] if each in given else load(each, store),
        follow=settings.follow,
    )
    deployment.check(settings)
    workdir = Path(tempfile.mkdtemp(prefix="notebook-deploy-server-"))
    _WORKDIRS.append(workdir)
    ready_file = workdir / "ready.json"
    root = store.root if isinstance(store, Store) else store  # keys and audit log default to the store's
    # A tag to follow goes by its name (the child resolves it in the store); the rest by the folders loaded here.
    served = (
        list(deployment.follow)
        if deployment.follow
        else [*(str(b.path) for b in deployment.stable), "--loaded-by-parent"]
    )
    command = [
        sys.executable,
        "-m",
        "notebook_deploy",
        *(["--store", str(root)] if root is not None else []),
        "serve",
        *served,
        *deployment.arguments(),
        "--host",
        host,
        "--port",
        str(port),
        "--ready-file",
        str(ready_file),
    ]
    command += settings.arguments()
    env = dict(os.environ, **{PARENT_PID_VARIABLE: str(os.getpid())})
    with open(workdir / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            log_text = (workdir / "server.log").read_text(errors="replace").strip()
            reason = (
                "did not start in time" if process.returncode in (None, -9) else f"exited with {process.returncode}"
            )
            served_refs = ", ".join(b.ref for b in deployment.bundles())
            raise ServeError(f"the server for {served_refs} {reason}. Its output:\n{log_text[-3000:]}")
        time.sleep(0.02)
    url = json.loads(ready_file.read_text())["url"]
    return Server(deployment, process, url, workdir, api_key=api_key, verify=verify)


def _listed(given: Ref | Sequence[Ref]) -> list[Ref]:
    """One ref or several, as a list (a string is one ref, not a sequence of letters)."""
    return [given] if isinstance(given, (str, os.PathLike, Bundle)) else list(given)


class Servers:
    """The local servers started through it, by id: what the notebook panel and the Jupyter server
    extension list, test and stop. A server that exits on its own stays listed, as stopped, with its logs."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._servers: dict[str, Server] = {}

    def start(self, ref: Ref | Sequence[Ref], port: int = 0, **options: Any) -> Server:
        """Serve ``ref`` (see ``serve``; ``options`` are its keywords: ``canary=``, ``workers=`` ...) and keep
        its handle."""
        server = serve(ref, port, store=self.store, **options)
        self._servers[server.id] = server
        return server

    def get(self, server_id: str) -> Server:
        """The server with this id; ``KeyError`` when there is none."""
        return self._servers[server_id]

    def stop(self, server_id: str) -> Server:
        """Stop the server with this id (it stays listed, as stopped)."""
        server = self.get(server_id)
        server.stop()
        return server

    def list(self) -> list[Server]:
        """Every server started here, oldest first."""
        return list(self._servers.values())


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()
    for workdir in _WORKDIRS:
        shutil.rmtree(workdir, ignore_errors=True)
