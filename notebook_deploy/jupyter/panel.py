"""``notebook_deploy.panel()``: an ipywidgets panel that captures, serves and pushes the kernel's models.

A thin adapter over the core: capture through ``capture_variable`` (what ``%deploy`` calls, with the
recipe when the session is being recorded), local servers through ``Servers``, pushes through ``Tasks``.
Every action runs in a daemon thread, so the kernel stays free; widgets are only updated by assigning
their values, which ipykernel (7.1 or newer) sends from any thread. Each action shows the code that does
the same in a cell, and each failure a message that says what to do next.
"""

from __future__ import annotations

import base64
import html
import inspect
import json
import os
import sys
import threading
import types
from collections.abc import Callable
from concurrent import futures
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..bundle import Bundle
from ..errors import NotebookDeployError, ServeError
from ..methods import INFERENCE_METHODS, default_method, is_torch_module
from ..schema import is_dataframe, takes_bytes
from ..serving.process import Server, Servers
from ..store import Store, name_from
from ..tasks import CANCELLED, FAILED, SUCCEEDED, Task, Tasks
from .monitor import MonitorWidget
from .recorder import active_recorder
from .variable import capture_variable
from .variable import summary as capture_summary

GENERATE = "generate"  # the Method that streams a text generator's answer (POST /generate)
BACKENDS = ("auto", "daemonless", "docker")
_LOG_TAIL = 4000


def looks_like_data(value: Any) -> bool:
    """A NumPy array, a DataFrame or a non-empty list: what can be a capture's sample."""
    return (
        (isinstance(value, np.ndarray) and value.ndim >= 1)
        or is_dataframe(value)
        or (isinstance(value, list) and bool(value))
    )


def looks_like_model(value: Any) -> bool:
    """An object with an inference method (``predict``, ``predict_proba``, ``transform``, ...) or a torch
    module; classes, modules, functions and data are not models."""
    if isinstance(value, (type, types.ModuleType)) or inspect.isroutine(value) or looks_like_data(value):
        return False
    try:
        if any(callable(getattr(value, method, None)) for method in INFERENCE_METHODS):
            return True
    except Exception:  # noqa: BLE001 - an object whose attributes fail to resolve is no model
        return False
    return is_torch_module(value)


class DeployPanel(widgets.VBox):
    """The deploy panel: pick a model and sample, Capture, Serve locally (test it, read its log, Stop), Push.

    ``busy`` tells whether an action is running and ``wait()`` waits for them; ``bundle``, ``server`` and
    ``task`` are the last captured bundle, the running server and the last push (a ``Task``)."""

    def __init__(
        self, namespace: dict[str, Any], *, shell: Any = None, store: Store | None = None, model: str | None = None
    ) -> None:
        super().__init__()
        self.namespace = namespace
        self.shell = shell
        self.store = store
        self.servers = Servers(store)
        self.tasks = Tasks(store)
        self.bundle: Bundle | None = None
        self.server: Server | None = None
        self.task: Task | None = None
        self.error: str | None = None
        self._working: dict[str, str] = {}  # action -> what the status says meanwhile
        self._futures: dict[str, futures.Future[None]] = {}
        self._lock = threading.RLock()
        self._build()
        self.refresh()
        if model in self.model_dropdown.options:
            self.model_dropdown.value = model
        elif model is not None:
            self._show_error(f"{model!r} is not a model variable of this kernel: choose one in Model.")

    # -- layout ------------------------------------------------------------------------------------
    def _build(self) -> None:
        w = widgets
        wide = w.Layout(width="auto", flex="1 1 auto")
        self.model_dropdown = w.Dropdown(description="Model", options=[], value=None)
        self.sample_dropdown = w.Dropdown(
            description="Sample",
            options=[],
            value=None,
            tooltip="a few rows of the model's input (the first 5 are used)",
        )
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", tooltip="scan the kernel's variables again"
        )
        self.name_text = w.Text(description="Name", placeholder="the bundle's name")
        self.version_text = w.Text(description="Version", placeholder="latest", tooltip="a version id or a tag")
        self.capture_button = w.Button(description="Capture", button_style="primary", icon="camera")
        self.summary = w.HTML()
        self.serve_button = w.Button(description="Serve locally", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.method_dropdown = w.Dropdown(description="Method", options=["predict"], value="predict")
        self.request_box = w.Textarea(
            description="Request",
            placeholder='{"instances": [[...], ...]}',
            layout=w.Layout(width="100%", height="5em"),
        )
        # for a model of images or bytes: each file uploaded is a row, sent as base64 in place of the box
        self.upload = w.FileUpload(description="Files", multiple=True, layout=w.Layout(display="none"))
        self.send_button = w.Button(description="Send", icon="paper-plane")
        self.http_status = w.Label()
        self.response = w.HTML()
        self.response.add_class("nd-response")
        self.server_log = w.HTML()
        self.monitor_box = w.VBox()  # the running server's live charts (a MonitorWidget)
        self.image_text = w.Text(description="Image", placeholder="registry.example.com/models/iris:1", layout=wide)
        self.backend_dropdown = w.Dropdown(description="Backend", options=BACKENDS, value="auto")
        self.base_text = w.Text(description="Base", placeholder="python:3.X-slim (default)")
        self.push_button = w.Button(description="Push", button_style="warning", icon="upload")
        self.cancel_button = w.Button(description="Cancel", icon="times")
        self.progress = w.FloatProgress(description="Overall", min=0.0, max=1.0, value=0.0)
        self.layer_bars = w.VBox()
        self.status = w.HTML()
        self.status.add_class("nd-status")
        self.code = w.Textarea(
            description="Code",
            layout=w.Layout(width="100%", height="6em"),
            tooltip="the code that does the last action: paste it into a cell",
        )

        self.refresh_button.on_click(lambda _: self.refresh())
        self.capture_button.on_click(lambda _: self.capture())
        self.serve_button.on_click(lambda _: self.serve())
        self.stop_button.on_click(lambda _: self.stop())
        self.send_button.on_click(lambda _: self.send())
        self.push_button.on_click(lambda _: self.push())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.model_dropdown.observe(self._model_chosen, "value")

        def heading(text: str) -> widgets.HTML:
            return w.HTML(f"<b>{text}</b>")

        note = (
            "Credentials come from the environment or the Docker config (<code>docker login</code>); "
            "the panel never asks for them."
        )
        self.children = [
            w.HTML("<h4 style='margin:0'>notebook-deploy</h4>"),
            self.status,
            heading("Bundle"),
            w.HBox([self.model_dropdown, self.sample_dropdown, self.refresh_button]),
            w.HBox([self.name_text, self.version_text]),
            self.capture_button,
            self.summary,
            heading("Local server"),
            w.HBox([self.serve_button, self.stop_button]),
            self.request_box,
            w.HBox([self.method_dropdown, self.upload, self.send_button, self.http_status]),
            self.response,
            self.server_log,
            self.monitor_box,
            heading("Container image"),
            w.HBox([self.image_text, self.backend_dropdown, self.base_text]),
            w.HTML(f"<small>{note}</small>"),
            w.HBox([self.push_button, self.cancel_button, self.progress]),
            self.layer_bars,
            self.code,
        ]
        self.add_class("nd-panel")
        self._sync()

    # -- state -------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether an action (capture, serve, send, stop, push) is still running."""
        return any(not f.done() for f in self._futures.values())

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running actions; True when all ended within ``timeout`` seconds."""
        _, pending = futures.wait(list(self._futures.values()), timeout)
        return not pending

    @property
    def ref(self) -> str:
        """The bundle reference the Name and Version fields give (``name`` alone means its latest)."""
        name, version = self.name_text.value.strip(), self.version_text.value.strip()
        return f"{name}:{version}" if name and version else name

    def refresh(self) -> None:
        """Scan the namespace again for models and samples, keeping the choices that are still there."""
        hidden = getattr(self.shell, "user_ns_hidden", {})
        names = [
            n for n, v in list(self.namespace.items()) if not n.startswith("_") and not (n in hidden and hidden[n] is v)
        ]
        models = [n for n in names if looks_like_model(self.namespace[n])]
        samples = [n for n in names if looks_like_data(self.namespace[n])]
        _set_options(self.model_dropdown, models)
        _set_options(self.sample_dropdown, samples)
        if models and self.error and self.error.startswith("No model"):
            self._show_error(None)
        elif not models:
            self._show_error(
                "No model in the kernel yet: fit one (anything with predict, predict_proba or "
                "transform, or a torch module), then press Refresh."
            )

    def _model_chosen(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:
            self.name_text.value = name_from(change["new"])
            self.version_text.value = ""

    # -- actions -----------------------------------------------------------------------------------
    def capture(self) -> None:
        """Capture the chosen model with the chosen sample (and its recipe when the session is recorded)."""
        variable, sample, name = self.model_dropdown.value, self.sample_dropdown.value, self.name_text.value.strip()
        if variable is None:
            return self._show_error(
                "Choose a Model: a variable holding a fitted model (press Refresh after training one)."
            )
        if sample is None:
            return self._show_error(
                "Choose a Sample: a few rows of the model's input (an array, a DataFrame or a list in the kernel, "
                "e.g. X_test). Capture infers the request schema from it and runs the model on it to find the "
                "packages it needs."
            )
        recorder = active_recorder(self.shell) if self.shell is not None else None
        history = recorder.history() if recorder is not None else None  # read here: the kernel's thread
        if history is not None:
            code = f"%deploy {variable} --name {name} --sample {sample}"
        else:
            code = f"bundle = nd.capture({variable}, name={json.dumps(name)}, sample={sample}[:5]{self._store_arg()})"

        def work() -> None:
            bundle, notes = capture_variable(
                self.namespace, variable, name=name or None, sample=sample, history=history, store=self.store
            )
            self.bundle = bundle
            self.version_text.value = bundle.version
            self.summary.value = _pre(capture_summary(bundle, notes))

        self._start("capture", f"capturing {variable}…", work, code)

    def serve(self) -> None:
        """Serve the bundle that Name and Version give in a child process (stopping this panel's last server)."""
        ref = self.ref
        if not ref:
            return self._show_error("Capture a model first, or type a bundle name (and a version) in Name and Version.")

        def work() -> None:
            if self.server is not None and self.server.running:
                self.server.stop()
            try:
                self.server = self.servers.start(ref)
            except NotebookDeployError as error:
                self.server_log.value = _pre(str(error))
                raise
            methods = self.server.bundle.methods
            generates = self.server.generates  # a text generator: its answer is streamed into the panel
            self.method_dropdown.options = [GENERATE, *methods] if generates else methods
            self.method_dropdown.value = GENERATE if generates else default_method(methods)
            files = takes_bytes(self.server.bundle.input_schema)
            self.upload.layout.display = None if files else "none"
            self.upload.value = ()
            # a sample of images is pages of base64: the files are sent instead, the box says so
            sample = [] if files else self.server.bundle.sample["instances"][:2]
            prompt = self.server.bundle.sample["instances"][0] if generates else None
            self.request_box.value = json.dumps({"prompt": prompt} if generates else {"instances": sample})
            self.request_box.placeholder = "or pick files: each is a row" if files else '{"instances": [[...], ...]}'
            for old in self.monitor_box.children:
                old.close()
            self.monitor_box.children = [MonitorWidget(self.server)]
            self._show_logs()

        self._start(
            "serve",
            f"starting a server for {ref}…",
            work,
            f"server = nd.serve({json.dumps(ref)}{self._store_arg()})\nserver.url",
        )

    def send(self) -> None:
        """POST the Request box's JSON (or the files picked, for a model of images or bytes) to the
        server's chosen method and show the answer."""
        server, method = self.server, self.method_dropdown.value
        if server is None or not server.running:
            return self._show_error("No server is running: press Serve locally first.")
        uploads = list(self.upload.value) if takes_bytes(server.bundle.input_schema) else []
        try:
            payload = (
                {"instances": [_base64(u["content"]) for u in uploads]}
                if uploads
                else json.loads(self.request_box.value)
            )
        except ValueError as error:
            return self._show_error(f"The request is not JSON ({error}): write {{\"instances\": [row, ...]}}.")

        if method == GENERATE:
            return self._generate(server, payload)

        def work() -> None:
            answer = server.post(method, payload)
            self.http_status.value = f"HTTP {answer.status_code}"
            try:
                body = json.dumps(answer.json())
            except ValueError:
                body = answer.text
            self.response.value = _pre(body)
            self._show_logs()

        self._start(
            "send",
            f"sending a request to {server.url}/{method}…",
            work,
            f"server.post({json.dumps(method)}, {_request_code(payload, uploads)}).json()",
        )

    def stop(self) -> None:
        """Stop this panel's server."""
        server = self.server
        if server is None or not server.running:
            return self._show_error("No server is running.")

        def work() -> None:
            self.servers.stop(server.id)
            self._show_logs()

        self._start("stop", "stopping the server…", work, "server.stop()")

    def push(self) -> None:
        """Build the bundle's image and push it to Image, with a progress bar per layer; Cancel stops it."""
        ref, image = self.ref, self.image_text.value.strip()
        backend, base = self.backend_dropdown.value, self.base_text.value.strip() or None
        if not ref:
            return self._show_error("Capture a model first, or type a bundle name (and a version) in Name and Version.")
        if not image:
            return self._show_error("Type the image to push to in Image, e.g. registry.example.com/models/iris:1.")
        options = f", backend={json.dumps(backend)}" + (f", base={json.dumps(base)}" if base else "")
        self.progress.value, self.progress.bar_style, self.layer_bars.children = 0.0, "", []

        def work() -> None:
            self.task = self.tasks.push(ref, image, backend=backend, base=base, watch=self._show_push)
            self._sync()  # Cancel is enabled once there is a task to cancel
            self.task.wait()
            self._show_push(self.task)
            if self.task.state == FAILED:
                raise NotebookDeployError(f"The push failed: {self.task.error}. {_push_hint(self.task.error or '')}")

        self._start(
            "push",
            f"pushing {ref} to {image}…",
            work,
            f"nd.push({json.dumps(ref)}, {json.dumps(image)}{options}{self._store_arg()})",
        )

    def cancel(self) -> None:
        """Cancel the running push (it stops at its next chunk; no tag points at a partial image)."""
        if self.task is not None and not self.task.done:
            self.task.cancel()

    # -- running and showing -----------------------------------------------------------------------
    def _generate(self, server: Server, payload: Any) -> None:
        """Stream a generator's answer into the response, piece by piece as the server sends it."""
        if not isinstance(payload, dict) or not ({"prompt", "messages"} & payload.keys()):
            return self._show_error('Write {"prompt": "..."} (or {"messages": [...]}) to generate text.')
        fields = dict(payload)
        prompt = fields.pop("messages", None) or fields.pop("prompt")

        def work() -> None:
            self.http_status.value = "streaming…"
            text = ""
            try:
                for piece in server.generate(prompt, **fields):
                    text += piece
                    self.response.value = _pre(text)
            except ServeError as error:
                self.http_status.value = "failed"
                self.response.value = _pre(f"{text}\n{error}" if text else str(error))
                return
            self.http_status.value = "done"

        self._start(
            "send",
            f"generating at {server.url}/generate…",
            work,
            f"for piece in server.generate({json.dumps(prompt)}{''.join(f', {k}={v!r}' for k, v in fields.items())}):\n"
            "    print(piece, end='')",
        )

    def _start(self, action: str, doing: str, work: Callable[[], None], code: str) -> None:
        """Run ``work`` in a daemon thread; show ``doing`` meanwhile, then the outcome and ``code``."""
        future: futures.Future[None] = futures.Future()
        with self._lock:
            self.error = None
            self._working[action] = doing
            self._futures[action] = future
        self.code.value = f"import notebook_deploy as nd\n{code}"
        self._sync()

        def run() -> None:
            future.set_running_or_notify_cancel()
            try:
                work()
            except Exception as error:  # noqa: BLE001 - shown in the panel, with what to do next
                self._show_error(_message(action, error))
            finally:
                with self._lock:
                    self._working.pop(action, None)
                self._sync()
                future.set_result(None)

        threading.Thread(target=run, name=f"notebook-deploy-panel-{action}", daemon=True).start()

    def _show_error(self, message: str | None) -> None:
        with self._lock:
            self.error = message
        self._sync()

    def _show_logs(self) -> None:
        if self.server is not None:
            self.server_log.value = _pre(self.server.logs()[-_LOG_TAIL:], "max-height:10em;overflow:auto")

    def _show_push(self, task: Task) -> None:
        with self._lock:
            layers = task.to_dict()["layers"]
            bars = list(self.layer_bars.children)
            for i, layer in enumerate(layers):
                if i == len(bars):
                    bars.append(
                        widgets.FloatProgress(description=layer["digest"].split(":")[-1][:12], min=0.0, max=1.0)
                    )
                bars[i].value = layer["done"] / layer["total"] if layer["total"] else 1.0
                bars[i].bar_style = "success" if layer["done"] >= layer["total"] else ""
            if len(bars) != len(self.layer_bars.children):
                self.layer_bars.children = bars
            self.progress.value = task.progress
            self.progress.bar_style = {SUCCEEDED: "success", FAILED: "danger", CANCELLED: "warning"}.get(task.state, "")
        self._sync()

    def _sync(self) -> None:
        """Enable the buttons that apply now and render the status from the panel's state."""
        with self._lock:
            working = dict(self._working)
            running = self.server is not None and self.server.running
            self.capture_button.disabled = "capture" in working
            self.serve_button.disabled = "serve" in working or "stop" in working
            self.stop_button.disabled = not running or "stop" in working or "serve" in working
            self.send_button.disabled = not running or "send" in working
            self.push_button.disabled = "push" in working
            self.cancel_button.disabled = "push" not in working or self.task is None or self.task.done
            self.status.value = _status_html(self._status_lines(working))

    def _status_lines(self, working: dict[str, str]) -> list[tuple[str, str, str]]:
        """The status as (kind, text, html) lines; kind is ``error`` or ``info``."""
        lines = [("error", self.error, _text(self.error))] if self.error else []
        lines += [("info", doing, _text(doing)) for doing in working.values()]
        if self.bundle is not None:
            lines.append(("info", f"captured {self.bundle.ref}", f"captured <b>{_text(self.bundle.ref)}</b>"))
        if self.server is not None:
            data = self.server.to_dict()
            text = f"server for {data['ref']}: {data['status']} at {data['url']}"
            url = html.escape(data["url"])
            lines.append(
                (
                    "info",
                    text,
                    f"server for {_text(data['ref'])}: <b>{data['status']}</b> at "
                    f"<a href='{url}/docs' target='_blank'>{url}</a>",
                )
            )
        if self.task is not None:
            text = f"push to {self.task.target}: {self.task.state} ({self.task.progress:.0%}), {self.task.message}"
            lines.append(("info", text, _text(text)))
        return lines

    def _store_arg(self) -> str:
        return f", store={json.dumps(str(self.store.root))}" if self.store is not None else ""

    def __repr__(self) -> str:
        if "status" not in self.__dict__:  # not built yet
            return super().__repr__()
        head = f"notebook-deploy panel (model {self.model_dropdown.value}, sample {self.sample_dropdown.value})"
        return "\n  ".join([head, *(text for _, text, _ in self._status_lines(dict(self._working)))])

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None:
            data["text/plain"] = repr(self)  # whole, where widgets are not shown
        return data


def panel(
    namespace: dict[str, Any] | None = None,
    *,
    model: str | None = None,
    store: Store | str | os.PathLike[str] | None = None,
) -> DeployPanel:
    """The deploy panel for this kernel's variables (or those of ``namespace``); ``model`` preselects one.

    import notebook_deploy as nd
    nd.panel()
    """
    shell = None
    if namespace is None:
        shell = _shell()
        if shell is None:
            raise NotebookDeployError(
                "panel() shows widgets in a notebook kernel; elsewhere pass "
                "namespace=globals() or use nd.capture, nd.serve and nd.push"
            )
        namespace = shell.user_ns
    return DeployPanel(
        namespace, shell=shell, store=Store(store) if isinstance(store, (str, os.PathLike)) else store, model=model
    )


def _base64(content: Any) -> str:
    return base64.b64encode(bytes(content)).decode()


def _request_code(payload: dict[str, Any], uploads: list[dict[str, Any]]) -> str:
    """The request as code to paste: the files by name (read and base64'd) rather than pages of base64."""
    if not uploads:
        return json.dumps(payload)
    rows = ", ".join(f"base64.b64encode(open({json.dumps(u['name'])}, 'rb').read()).decode()" for u in uploads)
    return f'{{"instances": [{rows}]}}'


def _shell() -> Any:
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _set_options(dropdown: widgets.Dropdown, names: list[str]) -> None:
    """Replace the options, keeping the value if it is still offered, else the first one."""
    kept = dropdown.value if dropdown.value in names else (names[0] if names else None)
    dropdown.options = names
    dropdown.value = kept


def _message(action: str, error: Exception) -> str:
    """What the panel says when ``action`` failed: the core's messages say what to do next already."""
    if isinstance(error, NotebookDeployError):
        text = str(error)
        return (
            text
            if action == "push"
            else f"{action.capitalize()} failed: {text.splitlines()[0]}"
            + (" (the server's output is below)" if action == "serve" and "\n" in text else "")
        )
    hints = {
        "capture": "check that the model runs on the sample in a cell, e.g. model.predict(X[:5])",
        "serve": "check the server log below",
        "send": "check that the server is running (its log is below)",
        "stop": "the server's process may be gone already",
    }
    return f"{action.capitalize()} failed: {type(error).__name__}: {error}. Next: {hints.get(action, 'try again')}."


def _push_hint(error: str) -> str:
    if "reference" in error or "repository name" in error or "valid tag" in error:
        return "Check the Image field: registry/repository:tag, e.g. localhost:5000/models/iris:1."
    if "401" in error or "403" in error or "credential" in error.lower() or "denied" in error:
        return "Log in with docker login (or set the registry credentials in the environment), then Push again."
    return "Check that the registry answers and the base image can be read, then Push again."


def _text(text: str) -> str:
    """``text`` escaped for an element's content (quotes stay readable)."""
    return html.escape(text, quote=False)


def _pre(text: str, style: str = "") -> str:
    return f"<pre style='white-space:pre-wrap;margin:0;{style}'>{_text(text)}</pre>"


def _status_html(lines: list[tuple[str, str, str]]) -> str:
    if not lines:
        return "<div>Choose a model and a sample, then Capture.</div>"
    return "".join(
        f"<div style='color:#b00020'>⚠ {markup}</div>" if kind == "error" else f"<div>{markup}</div>"
        for kind, _, markup in lines
    )
