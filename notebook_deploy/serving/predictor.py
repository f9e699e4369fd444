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

from .. import generation
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

# A model that fails alike again (the same method, the same exception type) within this many seconds has
# the failure counted, not its traceback logged again: a model raising on every request under load would
# flood the log, and formatting the tracebacks cost more than the requests (a shadow raising on every copy
# took half the server's CPU).
FAILURE_LOG_SECONDS = 10.0

T = TypeVar("T")
Observer = Callable[[str, Any, Any], None]  # (method, model input, model output)


class _FailureLog:
    """A model's failures in the server's log without a flood: the first of each kind (method and exception
    type) with its traceback, then at most one a ``FAILURE_LOG_SECONDS``, with the count left unlogged."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self._lock = threading.Lock()  # the model thread and the event loop both report
        self._logged: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], int] = {}

    def record(self, method: str, error: Exception) -> None:
        kind, now = (method, type(error).__name__), time.monotonic()
        with self._lock:
            if now - self._logged.get(kind, -FAILURE_LOG_SECONDS) < FAILURE_LOG_SECONDS:
                self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
                return
            self._logged[kind] = now
            unlogged = self._unlogged.pop(kind, 0)
        since = f" ({unlogged} more alike since the last one logged)" if unlogged else ""
        log.error("%s of %s failed: %s: %s%s", method, self.ref, kind[1], error, since, exc_info=error)


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
        self._failures = _FailureLog(bundle.ref)
        self.observers: list[Observer] = []
        self.batch_observers: list[Callable[[str, int], None]] = []
        # Generations go through a batcher of their own, whatever ``batching`` says of rows: one at a time
        # where they cannot be batched (a generator function, or --no-batching), else those that arrive
        # while one runs are run together next.
        together = settings.batching is not False and generation.batchable(self.model)
        self._generations = Batcher(
            functools.partial(generation.generate_all, self.model),
            executor=self._executor,
            max_batch_size=settings.max_batch_size if together else 1,
            max_wait=settings.max_batch_wait_ms / 1000,
            on_batch=functools.partial(self._on_batch, "generate"),
        )

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
        self._generations.start()
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
        for batcher in [*self._batchers.values(), self._generations]:
            await batcher.stop()
        self._batchers.clear()
        self._executor.shutdown(wait=True)

    async def predict(self, method: str, data: Any) -> Any:
        """The model's ``method`` on ``data``. Raises ``Overloaded`` when the queue is full (nothing was
        accepted) and ``ModelError`` when the model raises."""
        call = self._calls[method]  # KeyError for a method the bundle does not have
        with _Admitted(self, method):
            batcher = self._batchers.get(method)
            if batcher is not None:
                result = await batcher.submit(data)
            elif method in self._inline and len(data) <= INLINE_MAX_ROWS:
                start, cpu = time.perf_counter(), time.thread_time()
                result = call(data)
                self._timed_inline(method, time.thread_time() - cpu, time.perf_counter() - start)
            else:
                result = await asyncio.get_running_loop().run_in_executor(self._executor, call, data)
        for observer in self.observers:
            try:
                observer(method, data, result)
            except Exception:  # noqa: BLE001 - monitoring must never fail a prediction
                log.exception("an observer of %s failed", method)
        return result

    async def run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, a model call other than a method on rows (embeddings), admitted and reported
        as ``predict`` does (``Overloaded``, ``ModelError``), in the model's thread."""
        with _Admitted(self, what):
            return await self.in_model_thread(call, *args)

    def generate(self, what: str, prompt: generation.Prompt, sampling: generation.Sampling) -> Generation:
        """Start a generation of ``prompt`` now (so that the prompts of one request, and requests that
        arrive together, are batched) and return it: iterate it for each piece of text as it is made,
        then the ``Generated``; close it when the client goes away, and the model stops making its tokens.
        Raises ``Overloaded`` when the queue is full; the iteration raises ``ModelError``."""
        self._admit()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()
        stop = threading.Event()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        request = generation.Request(prompt, sampling, emit, stop.is_set)
        done = asyncio.ensure_future(self._generations.submit([request]))
        done.add_done_callback(lambda _: self._release())
        return Generation(what, done, pieces, stop, functools.partial(self._reported, what))

    def _admit(self) -> None:
        """Count a model call in ``pending``, or refuse it with ``Overloaded`` when the queue is full."""
        if self.pending >= self.settings.max_queue:
            raise Overloaded(f"the server is at its limit of {self.settings.max_queue} waiting requests: retry shortly")
        self.pending += 1

    def _release(self) -> None:
        self.pending -= 1

    @contextlib.contextmanager
    def _reported(self, method: str) -> Iterator[None]:
        """Whatever the model raises in the block, logged and raised as ``ModelError``."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - whatever the model raises is reported, and serving goes on
            raise self._model_error(method, error) from error

    def _model_error(self, method: str, error: Exception) -> ModelError:
        """``error``, raised by the model's ``method``, logged, and what the caller is told of it."""
        self._failures.record(method, error)
        if self.settings.debug_errors:
            return ModelError(f"the model's {method} raised {type(error).__name__}: {error}")
        # its text may hold data, paths or code of the model's: callers get where to look, not what it said
        return ModelError(
            f"the model's {method} raised an error; the server's log has it (serve with --debug-errors "
            "to return it to callers)"
        )

    def _timed_inline(self, method: str, seconds: float, wall: float) -> None:
        """Count an inline call that took ``seconds`` of this thread's CPU and ``wall`` seconds in all; send
        the method to the model thread when calls turn out slow."""
        calls = self._inline_calls[method] = self._inline_calls[method] + 1
        if wall > INLINE_BLOCKED_SECONDS:  # the model waited on something else, with the loop stopped
            self._to_thread(method, f"a call held the event loop for {wall * 1000:.0f} ms")
        if seconds <= INLINE_SECONDS:
            return
        slow = self._slow_calls[method] = self._slow_calls[method] + 1
        # slower than at start (its input matters): use the thread
        if seconds > INLINE_LONGEST_SECONDS:
            self._to_thread(method, f"a call took {seconds * 1000:.0f} ms of CPU")
        elif slow >= INLINE_SLOW_CALLS and slow > INLINE_SLOW_SHARE * calls:
            self._to_thread(method, f"{slow} of {calls} calls took over {INLINE_SECONDS * 1000:g} ms of CPU")

    def _to_thread(self, method: str, why: str) -> None:
        if method in self._inline:
            self._inline.discard(method)
            log.warning("%s of %s runs in the model thread from now on: %s", method, self.bundle.ref, why)

    def _on_batch(self, method: str, rows: int) -> None:
        for observer in self.batch_observers:
            observer(method, rows)


class _Admitted:
    """A model call counted in the predictor's ``pending`` (refused with ``Overloaded`` when the queue is
    full), whose errors are logged and raised as ``ModelError``. A class rather than a generator-based
    context manager: it is entered on every request's path, where two of those cost about 5 µs of a
    150 µs request of a small model."""

    __slots__ = ("predictor", "method")

    def __init__(self, predictor: Predictor, method: str) -> None:
        self.predictor, self.method = predictor, method

    def __enter__(self) -> None:
        self.predictor._admit()  # noqa: SLF001 - the predictor's own bookkeeping

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        self.predictor._release()  # noqa: SLF001
        if isinstance(error, Exception):  # whatever the model raises is reported, and serving goes on
            raise self.predictor._model_error(self.method, error) from error  # noqa: SLF001


class Generation:
    """A generation started by ``Predictor.generate``: iterating it gives each piece of text as the model
    makes it, then the ``Generated``; ``close`` (the client went away) makes the model stop at its next
    token."""

    def __init__(
        self,
        what: str,
        done: asyncio.Future[list[generation.Generated | Exception]],
        pieces: asyncio.Queue[str],
        stop: threading.Event,
        reported: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.what, self._done, self._pieces, self._stop, self._reported = what, done, pieces, stop, reported
        done.add_done_callback(self._ended)

    def close(self) -> None:
        self._stop.set()

    async def __aiter__(self) -> AsyncIterator[str | generation.Generated]:
        piece: asyncio.Task[str] | None = None
        try:
            while not self._done.done() or not self._pieces.empty():
                piece = asyncio.get_running_loop().create_task(self._pieces.get())
                await asyncio.wait((piece, self._done), return_when=asyncio.FIRST_COMPLETED)
                if piece.done():
                    yield piece.result()
                else:
                    piece.cancel()
            with self._reported():
                result = (await self._done)[0]
                if isinstance(result, Exception):
                    raise result
            yield result
        finally:
            self.close()
            if piece is not None:
                piece.cancel()

    def _ended(self, done: asyncio.Future[list[generation.Generated | Exception]]) -> None:
        if done.cancelled() or done.exception() is not None:  # retrieved here, even if abandoned
            return
        result = done.result()[0]
        if self._stop.is_set() and isinstance(result, generation.Generated):
            log.warning("%s cut short, its client gone: %s", self.what, result)


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
