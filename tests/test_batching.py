"""Adaptive micro-batching: the Batcher alone under asyncio, and batching in a served app."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

import notebook_deploy as nd
from notebook_deploy.serving.batching import Batcher


class _Recorder:
    """A model call that doubles its rows, remembers each batch's size, and takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.01, fail_on_negative: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.fail_on_negative = fail_on_negative

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.sizes.append(len(rows))
        time.sleep(self.delay)
        if self.fail_on_negative and (rows < 0).any():
            raise ValueError("negative input")
        return rows[:, 0] * 2


def _batcher(call, **options) -> Batcher:
    return Batcher(call, executor=ThreadPoolExecutor(max_workers=1), **options)


async def _submit_all(batcher: Batcher, values: list[float]) -> list[object]:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(np.array([[v]])) for v in values), return_exceptions=True)
    finally:
        await batcher.stop()


def test_concurrent_requests_are_joined_and_each_gets_its_own_rows():
    call = _Recorder()
    batcher = _batcher(call, max_batch_size=16, max_wait=0.005)
    values = [float(v) for v in range(100)]
    results = asyncio.run(_submit_all(batcher, values))
    assert [r.tolist() for r in results] == [[2 * v] for v in values]
    assert sum(call.sizes) == 100
    assert max(call.sizes) > 1, "no requests were joined"
    assert max(call.sizes) <= 16


def test_requests_of_several_rows_are_split_back_in_order():
    call = _Recorder()
    batcher = _batcher(call, max_batch_size=64, max_wait=0.005)

    async def scenario():
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(np.arange(n, dtype=float).reshape(-1, 1) + 100 * n) for n in (1, 3, 5, 2))
            )
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    for n, result in zip((1, 3, 5, 2), results):
        assert result.tolist() == [2 * (v + 100 * n) for v in range(n)]


def test_one_failing_request_fails_alone():
    call = _Recorder(fail_on_negative=True)
    batcher = _batcher(call, max_batch_size=64, max_wait=0.005)
    values = [1.0, 2.0, -3.0, 4.0, 5.0] * 4
    results = asyncio.run(_submit_all(batcher, values))
    for value, result in zip(values, results):
        if value < 0:
            assert isinstance(result, ValueError)
        else:
            assert result.tolist() == [2 * value]


def test_an_output_without_one_entry_per_row_is_not_split():
    sizes: list[int] = []

    def total(rows: np.ndarray) -> np.ndarray:  # one number for the whole input: not batch-safe
        sizes.append(len(rows))
        return np.array([rows.sum()])

    batcher = _batcher(total, max_batch_size=8, max_wait=0.005)
    results = asyncio.run(_submit_all(batcher, [1.0, 2.0, 3.0, 4.0]))
    assert [r.tolist() for r in results] == [[1.0], [2.0], [3.0], [4.0]]


def test_light_load_is_not_delayed_and_batches_stay_single():
    call = _Recorder(delay=0)
    batcher = _batcher(call, max_batch_size=64, max_wait=10.0)  # waiting would show as a 10 s hang

    async def one_at_a_time():
        batcher.start()
        try:
            return [await batcher.submit(np.array([[float(v)]])) for v in range(5)]
        finally:
            await batcher.stop()

    results = asyncio.run(asyncio.wait_for(one_at_a_time(), timeout=5))
    assert len(results) == 5 and call.sizes == [1] * 5


def test_stop_answers_every_queued_request():
    call = _Recorder(delay=0.02)
    batcher = _batcher(call, max_batch_size=4, max_wait=0.001)

    async def scenario():
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(np.array([[float(v)]]))) for v in range(30)]
        await asyncio.sleep(0)
        await batcher.stop()
        return [p.result() for p in pending]

    assert len(asyncio.run(scenario())) == 30
    assert sum(call.sizes) == 30


class _BatchMean:
    """Centres each call's rows on their mean: the answer depends on the batch, so it must not be batched."""

    def predict(self, rows):
        rows = np.asarray(rows, dtype=float)
        return rows[:, 0] - rows[:, 0].mean()


def test_capture_records_whether_batch_calls_equal_single_calls(store, forest, iris):
    assert nd.capture(forest, name="forest", sample=iris[0][:5], store=store).manifest["model"]["batchable"] is True
    centred = nd.capture(_BatchMean(), name="centred", sample=np.arange(10.0).reshape(5, 2), store=store)
    assert centred.manifest["model"]["batchable"] is False
    from notebook_deploy.serving.predictor import Predictor
    from notebook_deploy.serving.settings import ServeSettings

    assert Predictor(centred, ServeSettings()).batching is False
    assert Predictor(centred, ServeSettings(batching=True)).batching is True  # the user may insist


class _Slow:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def predict(self, rows):
        time.sleep(self.delay)
        return np.asarray(rows, dtype=float).sum(axis=1)


def _post_concurrently(client: TestClient, path: str, bodies: list[dict], threads: int = 16) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda body: client.post(path, json=body), bodies))


def test_a_batched_app_answers_every_request_with_its_own_prediction(store):
    bundle = nd.capture(_Slow(0.005), name="slow", sample=np.ones((3, 2)), store=store)
    assert bundle.manifest["model"]["batchable"]
    with TestClient(nd.create_app(bundle, max_batch_size=8)) as client:
        bodies = [{"instances": [[float(i), 1.0]]} for i in range(64)]
        answers = _post_concurrently(client, "/predict", bodies)
        assert [a.json()["predictions"] for a in answers] == [[i + 1.0] for i in range(64)]
        metrics = client.get("/metrics").text
    count = _metric(metrics, "notebook_deploy_batch_size_count", method="predict")
    total = _metric(metrics, "notebook_deploy_batch_size_sum", method="predict")
    assert total == 64  # every row went through the batcher (the sample check at start runs outside it)
    assert count < 64, "requests were not joined into batches"


@pytest.mark.parametrize("batching", [True, False])
def test_a_full_queue_answers_503_with_retry_after_and_drops_nothing_accepted(store, batching):
    bundle = nd.capture(_Slow(0.0), name="slow", sample=np.ones((3, 2)), store=store)
    model = bundle.model
    model.delay = 0.3  # the served copy is slow; capture ran it fast
    with TestClient(nd.create_app(bundle, batching=batching, max_queue=2)) as client:
        answers = _post_concurrently(client, "/predict", [{"instances": [[1.0, 2.0]]}] * 8, threads=8)
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1"
            assert "limit of 2 waiting requests" in answer.json()["detail"]
        else:
            assert answer.json() == {"predictions": [3.0]}


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in the metrics:\n{text}")
