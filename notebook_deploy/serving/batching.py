"""Adaptive micro-batching: concurrent requests to one method are joined into one model call.

The policy follows the model rather than a fixed clock. One batch runs at a time; while it runs, new
requests queue, and when it ends everything queued (up to ``max_batch_size`` rows) becomes the next batch.
So under light load a request is called alone at once, and under heavy load batches grow to what arrives
during one model call. Only when recent batches were larger than what is queued does the batcher wait,
at most ``max_wait`` seconds after the first request arrived, for the batch to fill.

A batch whose call raises, or whose output does not have one entry per row, is run again request by
request, so that one bad request fails alone. Written here rather than taken from a library: Ray Serve's
and BentoML's batchers are tied to their own runtimes, and MLServer's waits a fixed time.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from ..schema import concat_rows, take_rows

# Weight of the newest batch in the running average of batch sizes that decides whether to wait.
_SMOOTHING = 0.2


@dataclass
class _Request:
    data: Any
    rows: int
    future: asyncio.Future[Any]
    arrived: float = field(default=0.0)


class Batcher:
    """Joins concurrent calls of ``call`` into batches, run on ``executor``; ``on_batch(rows)`` is told
    each batch's size."""

    def __init__(
        self,
        call: Callable[[Any], Any],
        *,
        executor: Executor,
        max_batch_size: int,
        max_wait: float,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._call = call
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._queue: collections.deque[_Request] = collections.deque()
        self._arrival = asyncio.Event()
        self._executor = executor
        self._typical = 1.0  # running average of requests per batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Finish every queued request, then stop."""
        self._stopping = True
        self._arrival.set()
        if self._task is not None:
            await self._task

    async def submit(self, data: Any) -> Any:
        """Call the model on ``data`` as part of a batch and return this request's share of the output."""
        loop = asyncio.get_running_loop()
        request = _Request(data, len(data), loop.create_future(), loop.time())
        self._queue.append(request)
        self._arrival.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._arrival.clear()
                await self._arrival.wait()
                continue
            batch = await self._collect(loop)
            self._typical += _SMOOTHING * (len(batch) - self._typical)
            await self._dispatch(loop, batch)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        deadline = first.arrived + self.max_wait
        while rows < self.max_batch_size:
            if self._queue:
                if rows + self._queue[0].rows > self.max_batch_size:
                    break
                request = self._queue.popleft()
                batch.append(request)
                rows += request.rows
                continue
            remaining = deadline - loop.time()
            if self._stopping or remaining <= 0 or len(batch) >= self._typical:
                break
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        rows = sum(r.rows for r in batch)
        self._on_batch(rows)
        if len(batch) > 1:
            try:
                output = await loop.run_in_executor(self._executor, self._call, concat_rows([r.data for r in batch]))
            except Exception:  # noqa: BLE001 - retried request by request below, so each gets its own error
                output = None
            if output is not None and _has_rows(output, rows):
                start = 0
                for request in batch:
                    _settle(request.future, result=take_rows(output, start, start + request.rows))
                    start += request.rows
                return
        for request in batch:
            try:
                _settle(request.future, result=await loop.run_in_executor(self._executor, self._call, request.data))
            except Exception as error:  # noqa: BLE001 - handed to the waiting request
                _settle(request.future, error=error)


def _has_rows(output: Any, rows: int) -> bool:
    try:
        return len(output) == rows
    except TypeError:
        return False


def _settle(future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
