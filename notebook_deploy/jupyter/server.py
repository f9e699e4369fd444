"""The Jupyter server extension behind the JupyterLab sidebar "Deployments".

REST routes under ``{base_url}notebook-deploy/`` (docs/jupyter-rest-api.md) that adapt the core calls
(``Store``, ``Servers``, ``Tasks``) to JSON. Every route needs the Jupyter server's authentication and
its authorizer's permission on the resource ``notebook_deploy`` (``read``, ``write`` or ``execute``);
work that blocks (reading bundles, starting a server, the predict and generate proxies) runs in a thread,
so the server's event loop stays free. Errors are ``{"message": ...}`` with the error class's ``status`` (errors.py).
The local servers started here stop when the Jupyter server's process exits (``serve``'s atexit hook),
or, should it die without cleaning up, by themselves.

Configured in the Jupyter server's config: ``c.NotebookDeploy.store = "/path/to/store"``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import requests
import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import url_path_join
from traitlets import Unicode, default
from traitlets.config import Configurable

from ..compare import compare
from ..errors import (
    NotebookDeployError,
)
from ..files import default_root
from ..image.reference import ImageReference
from ..serving.process import Servers
from ..serving.watch import Monitor
from ..store import Store
from ..tasks import Tasks
from ..version import __version__

NAMESPACE = "notebook-deploy"
SETTINGS_KEY = "notebook_deploy"
AUTH_RESOURCE = "notebook_deploy"  # the resource Jupyter's Authorizer is asked about for every route
CANCEL_WAIT_SECONDS = 2.0  # how long DELETE tasks/{id} waits for a cancelled task to stop

T = TypeVar("T")
Fields = dict[str, tuple[type, ...]]  # field name -> the JSON types it may have


class NotebookDeploy(Configurable):
    """The extension's state: the store it shows, and the servers and tasks started through it."""

    store = Unicode(
        help="The folder of the bundle store (default: $NOTEBOOK_DEPLOY_HOME, else ~/.notebook_deploy).", config=True
    )

    @default("store")
    def _default_store(self) -> str:
        return str(default_root())

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bundle_store = Store(Path(self.store).expanduser())
        self.servers = Servers(self.bundle_store)
        self.tasks = Tasks(self.bundle_store)
        self._monitors: dict[str, Monitor] = {}

    def monitor(self, server_id: str) -> Monitor:
        """The monitor of a server started here, made at the first look, so that its series spans every
        viewer's polls (a ``KeyError`` for an unknown id, ``ServerStoppedError`` for a stopped server)."""
        server = self.servers.get(server_id)
        server.check_running()  # even when the last read is recent enough to answer from
        return self._monitors.setdefault(server_id, Monitor(server))

    def exact_ref(self, ref: str) -> str:
        """``name:version`` for a reference to a bundle in the store (paths are refused)."""
        return ":".join(self.bundle_store.resolve(ref))


class ApiError(tornado.web.HTTPError):
    """An answer other than 2xx, with the message the client shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


def _found(kind: str, lookup: Callable[[str], T], key: str) -> T:
    """``lookup(key)``, with an unknown key (``KeyError``) as a 404."""
    try:
        return lookup(key)
    except KeyError:
        raise ApiError(404, f"no {kind} {key!r} was started here; GET {kind}s lists them") from None


def _check_fields(body: dict[str, Any], required: Fields, optional: Fields) -> dict[str, Any]:
    """``body`` if it has every required field, no unknown one, and each of the right type (null is
    allowed for optional fields); otherwise a 400 saying what was wrong."""
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join([*required, *optional])
        raise ApiError(400, f"unknown field {', '.join(map(repr, unknown))}; this route takes {allowed}")
    missing = [field for field in required if body.get(field) is None]
    if missing:
        raise ApiError(400, f"the body needs {', '.join(map(repr, missing))}")
    for field, types in {**required, **optional}.items():
        value = body.get(field)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):  # JSON true is no integer
            expected = " or ".join(_JSON_NAMES[t] for t in types)
            raise ApiError(400, f"field {field!r} must be {expected}, not {type(value).__name__} {value!r:.80}")
    return body


_JSON_NAMES = {str: "a string", int: "an integer", list: "a list"}
SERVER_FIELDS: tuple[Fields, Fields] = ({"ref": (str,)}, {"port": (int,)})
PREDICT_FIELDS: tuple[Fields, Fields] = ({"instances": (list,)}, {"method": (str,)})
TAG_FIELDS: tuple[Fields, Fields] = ({"version": (str,)}, {})
TASK_FIELDS: dict[str, tuple[Fields, Fields]] = {
    "push": ({"kind": (str,), "ref": (str,), "image": (str,)}, {"backend": (str,), "base": (str,), "platform": (str,)}),
    "verify": ({"kind": (str,), "ref": (str,)}, {}),
}


class DeployHandler(APIHandler):
    """The base of every route: the extension's state, JSON bodies, and answers computed in a thread."""

    # Jupyter's authorizer is asked for "read" (GET), "write" (POST, PUT, DELETE: delete, tag, start a
    # server or a task, stop one) or "execute" (the predict and generate proxies) on this resource, so a
    # deployment can give a user the sidebar's lists without the power to change anything.
    auth_resource = AUTH_RESOURCE

    @property
    def deploy(self) -> NotebookDeploy:
        return self.settings[SETTINGS_KEY]

    def json_object(self) -> dict[str, Any]:
        """The request body as a JSON object; a 400 saying why when it is not one."""
        try:
            body = json.loads(self.request.body or b"")
        except ValueError as error:
            raise ApiError(400, f"the body is not JSON ({error})") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}")
        return body

    def body(self, fields: tuple[Fields, Fields]) -> dict[str, Any]:
        """The request body, checked against ``(required, optional)`` fields."""
        return _check_fields(self.json_object(), *fields)

    async def answer(self, work: Callable[[], Any], status: int = 200) -> None:
        """Run ``work`` in a thread and send what it returns as JSON; errors become ``{"message"}``."""
        data = await self.in_thread(work)
        self.set_status(status)
        self.finish(json.dumps(data))

    async def in_thread(self, work: Callable[[], T]) -> T:
        """``work()`` run in a thread; its errors as ``ApiError`` (a ``NotebookDeployError`` keeps its status)."""
        try:
            return await asyncio.to_thread(work)
        except ApiError:
            raise
        except NotebookDeployError as error:
            raise ApiError(error.status, str(error)) from error
        except Exception as error:
            self.log.exception("notebook-deploy: %s %s failed", self.request.method, self.request.path)
            raise ApiError(500, f"{type(error).__name__}: {error}") from error

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"message": ...}`` for an ``ApiError``; Jupyter's own answer for anything else (403, ...)."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            self.finish(json.dumps({"message": error.message}))
        else:
            super().write_error(status_code, **kwargs)


class VersionHandler(DeployHandler):
    """``GET version``: the package version and the store's folder."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(lambda: {"version": __version__, "store": str(self.deploy.bundle_store.root)})


class BundlesHandler(DeployHandler):
    """``GET bundles``: every name with its tags and versions."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(lambda: {"bundles": self.deploy.bundle_store.summaries()})


class BundleHandler(DeployHandler):
    """``GET`` (details) and ``DELETE bundles/{name}/{version}``."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str, version: str) -> None:
        await self.answer(lambda: self.deploy.bundle_store.details(f"{name}:{version}"))

    @tornado.web.authenticated
    @authorized
    async def delete(self, name: str, version: str) -> None:
        await self.answer(lambda: {"deleted": self.deploy.bundle_store.delete(f"{name}:{version}").ref})


class CompareHandler(DeployHandler):
    """``GET compare?old=REF&new=REF[&measure=1]``: the deployment diff of two versions (``compare``);
    start, latency and peak memory only with ``measure=1``, since that runs each version in a fresh Python."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        old, new = (self.query_ref(name) for name in ("old", "new"))
        measure = self.get_query_argument("measure", "0")
        if measure not in ("0", "1"):
            raise ApiError(400, f"query 'measure' must be 0 or 1, not {measure!r}")
        store = self.deploy.bundle_store
        await self.answer(
            lambda: compare(
                self.deploy.exact_ref(old), self.deploy.exact_ref(new), store=store, measure_serving=measure == "1"
            ).to_dict()
        )

    def query_ref(self, name: str) -> str:
        """The reference in the query argument ``name``; a 400 when it is missing or empty."""
        ref = self.get_query_argument(name, "")
        if not ref:
            raise ApiError(400, f"query {name!r} is missing: GET compare?old=NAME:VERSION&new=NAME:VERSION")
        return ref


class TagHandler(DeployHandler):
    """``PUT`` (point at a version) and ``DELETE bundles/{name}/tags/{tag}``."""

    @tornado.web.authenticated
    @authorized
    async def put(self, name: str, tag: str) -> None:
        version = self.body(TAG_FIELDS)["version"]
        await self.answer(
            lambda: {
                "name": name,
                "tag": tag,
                "version": self.deploy.bundle_store.tag(f"{name}:{version}", tag).version,
            }
        )

    @tornado.web.authenticated
    @authorized
    async def delete(self, name: str, tag: str) -> None:
        def untag() -> dict[str, Any]:
            self.deploy.bundle_store.untag(name, tag)
            return {"name": name, "tag": tag, "version": None}

        await self.answer(untag)


class ServersHandler(DeployHandler):
    """``GET servers`` and ``POST servers`` (start one, answering once it is ready)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(lambda: {"servers": [server.to_dict() for server in self.deploy.servers.list()]})

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body(SERVER_FIELDS)
        port = body.get("port") or 0
        if not 0 <= port <= 65535:
            raise ApiError(400, f"field 'port' must be from 0 (any free port) to 65535, not {port}")
        await self.answer(lambda: self.deploy.servers.start(self.deploy.exact_ref(body["ref"]), port).to_dict(), 201)


class ServerHandler(DeployHandler):
    """``DELETE servers/{id}``: stop it (it stays listed, as stopped)."""

    @tornado.web.authenticated
    @authorized
    async def delete(self, server_id: str) -> None:
        await self.answer(lambda: _found("server", self.deploy.servers.stop, server_id).to_dict())


class ServerLogsHandler(DeployHandler):
    """``GET servers/{id}/logs``."""

    @tornado.web.authenticated
    @authorized
    async def get(self, server_id: str) -> None:
        await self.answer(lambda: {"logs": _found("server", self.deploy.servers.get, server_id).logs()})


class MonitorHandler(DeployHandler):
    """``GET servers/{id}/monitor``: the monitoring view's Vega-Lite charts, sampled from the server's own
    metrics at each call (at most once a second, however many viewers poll)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, server_id: str) -> None:
        await self.answer(lambda: _found("server", self.deploy.monitor, server_id).refresh())


def predict_answer(response: requests.Response) -> dict[str, Any]:
    """The REST API's PredictAnswer: the model server's status and its body (JSON, else the text)."""
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        answer = response.text
    return {"status": response.status_code, "body": answer}


class PredictHandler(DeployHandler):
    """``POST servers/{id}/predict``: the model server's own answer to ``{"instances"}``, errors included."""

    @tornado.web.authenticated
    @authorized("execute")  # it runs the model
    async def post(self, server_id: str) -> None:
        body = self.body(PREDICT_FIELDS)

        def predict() -> dict[str, Any]:
            server = _found("server", self.deploy.servers.get, server_id)
            return predict_answer(server.post(body.get("method") or "predict", {"instances": body["instances"]}))

        await self.answer(predict)


class GenerateHandler(DeployHandler):
    """``POST servers/{id}/generate``: a text generator's ``POST /generate`` (``{"prompt"}`` or
    ``{"messages"}``), its Server-Sent Events passed on as they arrive, so the sidebar shows the text as
    it is made. The model server's refusals (not a generator, a bad prompt) are ``{"message"}`` errors."""

    @tornado.web.authenticated
    @authorized("execute")  # it runs the model
    async def post(self, server_id: str) -> None:
        body = self.json_object()
        server = _found("server", self.deploy.servers.get, server_id)
        response = await self.in_thread(lambda: server.post("generate", body, stream=True))
        with response:
            if response.status_code != 200:
                raise ApiError(response.status_code, _generate_refusal(server.bundle.ref, response))
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            chunks = response.iter_content(chunk_size=None)
            while chunk := await self.in_thread(lambda: next(chunks, b"")):
                self.write(chunk)
                await self.flush()
        self.finish(set_content_type="text/event-stream")


def _generate_refusal(ref: str, response: requests.Response) -> str:
    """Why the model server refused a generation, in the words the sidebar shows."""
    if response.status_code == 404:
        return f"the server for {ref} has no POST /generate: its model is not a text generator"
    detail = predict_answer(response)["body"]
    if isinstance(detail, dict):
        detail = detail.get("detail", detail)
    return f"the model server answered {response.status_code}: {detail}"


class TasksHandler(DeployHandler):
    """``GET tasks`` and ``POST tasks`` (start a push or a verify in the background)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.answer(lambda: {"tasks": [task.to_dict() for task in self.deploy.tasks.list()]})

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_object()
        kind = body.get("kind")
        if kind not in TASK_FIELDS:
            raise ApiError(400, f"field 'kind' must be one of {', '.join(map(repr, TASK_FIELDS))}, not {kind!r}")
        _check_fields(body, *TASK_FIELDS[kind])
        deploy = self.deploy

        def start() -> dict[str, Any]:
            ref = deploy.exact_ref(body["ref"])
            if kind == "verify":
                return deploy.tasks.verify(ref).to_dict()
            ImageReference.parse(body["image"])  # a malformed image reference is a 400 now, not a failed task
            options = {field: body[field] for field in ("backend", "base", "platform") if body.get(field) is not None}
            return deploy.tasks.push(ref, body["image"], **options).to_dict()

        await self.answer(start, 202)


class TaskHandler(DeployHandler):
    """``GET tasks/{id}`` and ``DELETE tasks/{id}`` (cancel it)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.answer(lambda: _found("task", self.deploy.tasks.get, task_id).to_dict())

    @tornado.web.authenticated
    @authorized
    async def delete(self, task_id: str) -> None:
        def cancel() -> dict[str, Any]:
            task = _found("task", self.deploy.tasks.get, task_id)
            task.cancel()
            task.wait(CANCEL_WAIT_SECONDS)
            return task.to_dict()

        await self.answer(cancel)


_NAME = r"(?P<name>[^/]+)"
ROUTES: list[tuple[str, type[DeployHandler]]] = [
    ("version", VersionHandler),
    ("bundles", BundlesHandler),
    ("compare", CompareHandler),
    (f"bundles/{_NAME}/tags/(?P<tag>[^/]+)", TagHandler),
    (f"bundles/{_NAME}/(?P<version>[^/]+)", BundleHandler),
    ("servers", ServersHandler),
    ("servers/(?P<server_id>[^/]+)", ServerHandler),
    ("servers/(?P<server_id>[^/]+)/logs", ServerLogsHandler),
    ("servers/(?P<server_id>[^/]+)/monitor", MonitorHandler),
    ("servers/(?P<server_id>[^/]+)/predict", PredictHandler),
    ("servers/(?P<server_id>[^/]+)/generate", GenerateHandler),
    ("tasks", TasksHandler),
    ("tasks/(?P<task_id>[^/]+)", TaskHandler),
]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where Jupyter finds this server extension."""
    return [{"module": "notebook_deploy.jupyter.server"}]


def _load_jupyter_server_extension(server_app: ServerApp) -> None:
    """Create the extension's state from the server's config and register the routes."""
    deploy = NotebookDeploy(config=server_app.config)
    web_app = server_app.web_app
    web_app.settings[SETTINGS_KEY] = deploy
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base_url, NAMESPACE, pattern), handler) for pattern, handler in ROUTES])
    server_app.log.info("notebook-deploy: the Deployments routes serve the store at %s", deploy.bundle_store.root)
