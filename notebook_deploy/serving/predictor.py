"""The one path every protocol takes to the model: admission, batching or a worker thread, and observers.

Protocols (``serving/protocols``) turn their wire format into model input (an array or a DataFrame, as the
bundle's schema decodes it), await ``Predictor.predict`` and encode what it returns. Everything that
must see each prediction (metrics, drift monitoring, the prediction log) registers an observer here, so
that it sees the same traffic whichever protocol carried it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..bundle import Bundle
from ..errors import ModelError, Overloaded
from ..methods import resolve_method
from ..schema import take_rows
from .batching import Batcher
from .settings import ServeSettings

log = logging.getLogger("notebook_deploy.serving")

# A method whose one-row call takes less than this is called on the event loop for requests of up to
# INLINE_MAX_ROWS rows: handing it to the model thread and back would cost more than the call blocks the
# loop (measured on a LogisticRegression at 16 connections: 5400 → 6000 requests/s). Calls that turn out
# slow send the method back to the model thread for good: one call over INLINE_LONGEST_SECONDS, or
# INLINE_SLOW_CALLS calls over INLINE_SECONDS once they are more than INLINE_SLOW_SHARE of its calls. A
# lone slow call is most often the process descheduled under load, not the model: demoting on the first
# one sent a cheap model to the thread in about half the benchmark runs, at 0.78x the raw baseline
# instead of 0.9x. So calls are timed in the CPU time of the loop's thread, which does not count time
# descheduled (on a busy machine, wall time sent it to the thread after a few seconds all the same: the
# profile then showed 70% of samples in the model thread, waiting for the GIL); only a call that blocks the
# loop for INLINE_BLOCKED_SECONDS of wall time, as a model waiting on I/O does, is judged by wall time.
INLINE_SECONDS = 0.001
INLINE_MAX_ROWS = 16
INLINE_LONGEST_SECONDS = 0.05
INLINE_SLOW_CALLS = 3
INLINE_SLOW_SHARE = 0.01
INLINE_BLOCKED_SECONDS = 0.25

T = TypeVar("T")
Observer = Callable[[str, Any, Any], None]  # (method, model input, model output)


class Predictor:
    """Calls a bundle's model for every protocol, with batching where it is safe, and a bounded queue."""

    def __init__(self, bundle: Bundle, settings: ServeSettings, model: Any | None = None) -> None:
        self.bundle = bundle
        self.settings = settings
        self.model = bundle.model if model is None else model
        self._calls = {method: resolve_method(self.model, method) for method in bundle.methods}
        self.batching = bool(settings.batching if settings.batching is not None else bundle.batchable)
        # One thread calls the model. Python models mostly hold the GIL, so more threads would only
        # contend for it with the event loop (measured: 2.2x fewer requests/s with anyio's pool of 40);
        # processes (``workers``) are what scale a server across cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._batchers: dict[str, Batcher] = {}
        # Methods called in the event loop rather than the model thread; none until ``time_methods`` has
        # timed them, which the app does in the background once it answers requests.
        self._inline: set[str] = set()
        self._inline_calls: dict[str, int] = {}
        self._slow_calls: dict[str, int] = {}
        self.pending = 0
        self.observers: list[Observer] = []
        self.batch_observers: list[Callable[[str, int], None]] = []

    @property
    def methods(self) -> list[str]:
        return list(self._calls)

    def queued(self, method: str) -> int:
        """Requests of ``method`` waiting for a batch."""
        batcher = self._batchers.get(method)
        return batcher.queued if batcher is not None else 0

    def time_methods(self) -> None:
        """Time each method on one row of the sample, and call the fast ones inline from now on."""
        row = take_rows(self.bundle.input_schema.decode(self.bundle.sample["instances"]), 0, 1)
        fast = {method for method, call in self._calls.items() if _fast(call, row)}
        self._inline_calls = dict.fromkeys(fast, 0)
        self._slow_calls = dict.fromkeys(fast, 0)
        self._inline = fast

    async def in_model_thread(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in the thread that calls the model, so that no two model calls overlap."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    async def start(self) -> None:
        """Start the batchers (needs the running event loop)."""
        if not self.batching:
            return
        for method, call in self._calls.items():
            batcher = Batcher(
                call,
                executor=self._executor,
                max_batch_size=self.settings.max_batch_size,
                max_wait=self.settings.max_batch_wait_ms / 1000,
                on_batch=functools.partial(self._on_batch, method),
            )
            batcher.start()
            self._batchers[method] = batcher

    async def stop(self) -> None:
        """Answer every accepted request, then stop the batchers."""
        for batcher in self._batchers.values():
            await batcher.stop()
        self._batchers.clear()
        self._executor.shutdown(wait=True)

    async def predict(self, method: str, data: Any) -> Any:
        """The model's ``method`` on ``data``. Raises ``Overloaded`` when the queue is full (nothing was
        accepted) and ``ModelError`` when the model raises."""
        if method not in self._calls:
            raise KeyError(method)
        with self._admitted(method):
            batcher = self._batchers.get(method)
            if batcher is not None:
                result = await batcher.submit(data)
            else:
                if method in self._inline and len(data) <= INLINE_MAX_ROWS:
                    start, cpu = time.perf_counter(), time.thread_time()
                    result = self._calls[method](data)
                    self._timed_inline(method, time.thread_time() - cpu, time.perf_counter() - start)
                else:
                    result = await asyncio.get_running_loop().run_in_executor(self._executor, self._calls[method], data)
        for observer in self.observers:
            try:
                observer(method, data, result)
            except Exception:  # noqa: BLE001 - monitoring must never fail a prediction
                log.exception("an observer of %s failed", method)
        return result

    async def run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, a model call other than a method on rows (embeddings), admitted and reported
        as ``predict`` does (``Overloaded``, ``ModelError``), in the model's thread."""
        with self._admitted(what):
            return await self.in_model_thread(call, *args)

    async def stream(self, what: str, call: Callable[..., T], *args: Any) -> AsyncIterator[str | T]:
        """Run ``call(*args, emit, cancelled)`` in the model's thread (a generation) and yield each text
        ``emit`` is given as it comes, then what ``call`` returned. Closing the iterator early (the client
        went away) makes ``cancelled()`` True, so the call ends at its next step; calls after it wait for
        it in the model's one thread."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()
        stop = threading.Event()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        def ended(future: asyncio.Future[T]) -> None:
            if future.cancelled() or future.exception() is not None:  # retrieved here, even if abandoned
                return
            if stop.is_set():
                log.warning("%s cut short, its client gone: %s", what, future.result())

        with self._admitted(what):
            done: asyncio.Future[T] = loop.run_in_executor(self._executor, call, *args, emit, stop.is_set)  # type: ignore[arg-type]
            done.add_done_callback(ended)
            piece: asyncio.Task[str] | None = None
            try:
                while not done.done() or not pieces.empty():
                    piece = loop.create_task(pieces.get())
                    await asyncio.wait((piece, done), return_when=asyncio.FIRST_COMPLETED)
                    if piece.done():
                        yield piece.result()
                    else:
                        piece.cancel()
                yield await done
            finally:
                stop.set()
                if piece is not None:
                    piece.cancel()

    @contextlib.contextmanager
    def _admitted(self, method: str) -> Iterator[None]:
        """A model call counted in ``pending`` (refused with ``Overloaded`` when the queue is full), whose
        errors are logged and raised as ``ModelError``."""
        if self.pending >= self.settings.max_queue:
            raise Overloaded(f"the server is at its limit of {self.settings.max_queue} waiting requests: retry shortly")
        self.pending += 1
        try:
            yield
        except Exception as error:  # noqa: BLE001 - whatever the model raises is reported, and serving goes on
            log.error("%s of %s failed: %s: %s", method, self.bundle.ref, type(error).__name__, error, exc_info=error)
            if self.settings.debug_errors:
                raise ModelError(f"the model's {method} raised {type(error).__name__}: {error}") from error
            # its text may hold data, paths or code of the model's: callers get where to look, not what it said
            raise ModelError(
                f"the model's {method} raised an error; the server's log has it (serve with --debug-errors "
                "to return it to callers)"
            ) from error
        finally:
            self.pending -= 1

    def _timed_inline(self, method: str, seconds: float, wall: float) -> None:
        """Count an inline call that took ``seconds`` of this thread's CPU and ``wall`` seconds in all; send
        the method to the model thread when calls turn out slow."""
        calls = self._inline_calls[method] = self._inline_calls[method] + 1
        if wall > INLINE_BLOCKED_SECONDS:  # the model waited on something else, with the loop stopped
            self._inline.discard(method)
        if seconds <= INLINE_SECONDS:
            return
        slow = self._slow_calls[method] = self._slow_calls[method] + 1
        if seconds > INLINE_LONGEST_SECONDS or (slow >= INLINE_SLOW_CALLS and slow > INLINE_SLOW_SHARE * calls):
            self._inline.discard(method)  # slower than at start (its input matters): use the thread

    def _on_batch(self, method: str, rows: int) -> None:
        for observer in self.batch_observers:
            observer(method, rows)


def _fast(call: Callable[[Any], Any], row: Any) -> bool:
    """Whether ``call`` on ``row`` takes under ``INLINE_SECONDS`` (best of three)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        try:
            call(row)
        except Exception:  # noqa: BLE001 - a method that fails on the sample is not made inline
            return False
        best = min(best, time.perf_counter() - start)
    return best < INLINE_SECONDS
