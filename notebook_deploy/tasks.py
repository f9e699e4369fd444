"""Long work (a push, a verify) run in a background thread, with progress to poll and a way to cancel.

The notebook panel and the Jupyter server extension start work here and poll it, so neither blocks its
event loop (the kernel's, the server's) and both report the same progress. A push reports bytes per
layer; cancelling stops it at the next chunk it sends, and the registry is left as a push that failed
leaves it: blobs may be there, no tag points at a partial image.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .errors import Cancelled, NotebookDeployError
from .store import Store

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

_ids = itertools.count(1)


class Task:
    """One piece of background work: its state, progress (0 to 1), per-layer bytes, message and result."""

    def __init__(self, kind: str, ref: str, target: str | None = None) -> None:
        self.id = str(next(_ids))
        self.kind = kind
        self.ref = ref
        self.target = target
        self.state = RUNNING
        self.message = "starting"
        self.layers: dict[str, tuple[int, int]] = {}  # digest -> (bytes done, bytes in all)
        self.result: Any = None
        self.error: str | None = None
        self.started = _now()
        self.finished: str | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._watchers: list[Callable[[Task], None]] = []

    @property
    def progress(self) -> float:
        """The fraction done: bytes sent over bytes known for a push; 1 once the task succeeded."""
        if self.state == SUCCEEDED:
            return 1.0
        with self._lock:
            done = sum(d for d, _ in self.layers.values())
            total = sum(t for _, t in self.layers.values())
        return done / total if total else 0.0

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def watch(self, callback: Callable[[Task], None]) -> None:
        """Call ``callback(task)`` on every change (from the task's thread), and once more at the end."""
        self._watchers.append(callback)

    def cancel(self) -> None:
        """Ask the work to stop; it stops at its next progress report (a push: its next chunk)."""
        self._cancel.set()
        self._changed()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end; True when the task ended within ``timeout`` seconds."""
        return self._done.wait(timeout)

    def to_dict(self) -> dict[str, Any]:
        """The task as JSON-ready data (the REST API's Task)."""
        with self._lock:
            layers = [{"digest": d, "done": done, "total": total} for d, (done, total) in self.layers.items()]
        return {
            "id": self.id,
            "kind": self.kind,
            "ref": self.ref,
            "target": self.target,
            "state": self.state,
            "progress": self.progress,
            "message": self.message,
            "layers": layers,
            "result": self.result,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
        }

    # -- called by the work ----------------------------------------------------------------------
    def report(self, message: str) -> None:
        """Set the message; raises ``Cancelled`` when the task was cancelled."""
        self._check()
        self.message = message
        self._changed()

    def layer(self, digest: str, done: int, total: int) -> None:
        """Record a layer's bytes (a push's ``progress`` callback); raises ``Cancelled`` when cancelled."""
        self._check()
        with self._lock:
            self.layers[digest] = (done, total)
            finished = sum(1 for d, t in self.layers.values() if d >= t)
            count = len(self.layers)
        self.message = f"pushing: {finished} of {count} layers sent"
        self._changed()

    def _check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"{self.kind} of {self.ref} was cancelled")

    def _run(self, work: Callable[[Task], tuple[Any, str]]) -> None:
        try:
            self.result, self.message = work(self)
            self.state = SUCCEEDED
        except Cancelled as error:
            self.state, self.error, self.message = CANCELLED, str(error), "cancelled"
        except Exception as error:  # noqa: BLE001 - whatever failed is reported to whoever polls
            self.state, self.message = FAILED, "failed"
            self.error = str(error) if isinstance(error, NotebookDeployError) else f"{type(error).__name__}: {error}"
        finally:
            self.finished = _now()
            self._done.set()
            self._changed()

    def _changed(self) -> None:
        for watcher in list(self._watchers):
            try:
                watcher(self)
            except Exception:  # noqa: BLE001,S110 - a display that fails must not fail the work
                pass

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.kind} {self.ref} {self.state} {self.progress:.0%}: {self.message}>"


class Tasks:
    """The tasks started in this process, by id; each runs in its own daemon thread."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._tasks: dict[str, Task] = {}

    def push(
        self,
        ref: str,
        image: str,
        *,
        backend: str = "auto",
        base: str | None = None,
        platform: str = "linux/amd64",
        watch: Callable[[Task], None] | None = None,
    ) -> Task:
        """Build and push bundle ``ref``'s image to ``image`` in the background (see ``notebook_deploy.push``)."""
        from .image.publish import push

        def work(task: Task) -> tuple[Any, str]:
            task.report("building the image")
            result = push(
                ref, image, base=base, platform=platform, backend=backend, store=self.store, progress=task.layer
            )
            summary = {
                "image": result.image,
                "digest": result.digest,
                "blobs": result.blobs,
                "uploaded_bytes": result.uploaded_bytes,
                "backend": result.backend,
            }
            return summary, f"pushed {result.image}@{result.digest}"

        return self._start(Task("push", ref, image), work, watch)

    def verify(self, ref: str, *, watch: Callable[[Task], None] | None = None, **options: Any) -> Task:
        """Replay bundle ``ref``'s recipe in a fresh kernel in the background (see ``notebook_deploy.verify``)."""
        from .verification import verify

        def work(task: Task) -> tuple[Any, str]:
            result = verify(ref, store=self.store, progress=task.report, **options)
            return {"ok": result.reproducible, "summary": result.summary}, result.summary

        return self._start(Task("verify", ref), work, watch)

    def get(self, task_id: str) -> Task:
        """The task with this id; ``KeyError`` when there is none."""
        return self._tasks[task_id]

    def list(self) -> list[Task]:
        """Every task started here, oldest first."""
        return list(self._tasks.values())

    def _start(self, task: Task, work: Callable[[Task], tuple[Any, str]], watch: Callable[[Task], None] | None) -> Task:
        if watch is not None:
            task.watch(watch)
        self._tasks[task.id] = task
        threading.Thread(
            target=task._run, args=(work,), name=f"notebook-deploy-{task.kind}-{task.id}", daemon=True
        ).start()
        return task


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
