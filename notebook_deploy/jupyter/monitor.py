"""The monitoring charts of a running server in a notebook: the Vega-Lite specs that ``serving.watch``
makes (the same as the JupyterLab sidebar's), shown as ``application/vnd.vegalite.v5+json`` outputs that
JupyterLab draws itself, refreshed by a button or, with Live on, every ``interval`` seconds from a
daemon thread. Outputs are set by assigning the Output widget's ``outputs``, which works from any thread.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from ..errors import NotebookDeployError
from ..serving.watch import VEGA_LITE_MIME, Monitor

INTERVAL = 2.0


class MonitorWidget(widgets.VBox):
    """Live charts of ``server`` (a ``Server`` from ``nd.serve``, or any handle with ``url`` and ``get``):
    requests/s, latency, error rate and batch sizes per version, and drift per feature.

    import notebook_deploy as nd
    from notebook_deploy.jupyter.monitor import MonitorWidget
    MonitorWidget(server)
    """

    def __init__(self, server: Any, interval: float = INTERVAL) -> None:
        super().__init__()
        self.monitor = Monitor(server)
        self.interval = interval
        self.answer: dict[str, Any] | None = None
        self.error: str | None = None
        self.refresh_button = widgets.Button(description="Refresh charts", icon="refresh")
        self.live = widgets.ToggleButton(description="Live", icon="heartbeat", tooltip=f"refresh every {interval:g} s")
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.refresh_button.on_click(lambda _: self.refresh())
        self.live.observe(self._live_changed, "value")
        self._stop = threading.Event()
        self.children = [widgets.HBox([self.refresh_button, self.live, self.status]), self.output]
        self.add_class("nd-monitor")

    def refresh(self) -> None:
        """Read the server's metrics now and redraw the charts; a failure is shown in place."""
        try:
            answer = self.monitor.refresh()
        except NotebookDeployError as error:
            self.error = str(error)
            self.status.value = f"<span style='color:var(--jp-error-color1)'>{html.escape(self.error)}</span>"
            return
        self.answer, self.error = answer, None
        self.status.value = html.escape(self._summary())
        self.output.outputs = tuple(
            {"output_type": "display_data", "data": {VEGA_LITE_MIME: spec, "text/plain": spec["title"]}, "metadata": {}}
            for spec in answer["charts"].values()
        )

    def close(self) -> None:
        """Stop refreshing, then close the widget."""
        self._stop.set()
        super().close()

    def _live_changed(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._stop.clear()
            threading.Thread(target=self._run, name="notebook-deploy monitor", daemon=True).start()
        else:
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            if self.error is not None:  # a stopped server: no point asking again
                self.live.value = False
                return
            self._stop.wait(self.interval)

    def _summary(self) -> str:
        answer = self.answer
        if answer is None:
            return f"monitor of {self.monitor.server.url}: not read yet (press Refresh charts, or Live)"
        drift = answer["drift"]["message"]
        return f"monitor of {answer['url']}: {answer['points']} points, read at {answer['updated']}; drift: {drift}"

    def __repr__(self) -> str:
        if "status" not in self.__dict__:  # not built yet
            return super().__repr__()
        return self.error or self._summary()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None:
            data["text/plain"] = repr(self)  # where widgets are not shown
        return data
