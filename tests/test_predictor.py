"""The Predictor: where a model call runs (event loop for fast small calls, else the model thread)."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np

import notebook_deploy as nd
from notebook_deploy.serving.predictor import Predictor
from notebook_deploy.serving.settings import ServeSettings


class _ThreadReporter:
    """Answers with whether it ran on the calling (event loop) thread; slow when a row starts with 9 (10 ms
    of CPU) or 10 (60 ms of CPU); blocked without using the CPU (as on I/O) when it starts with 11."""

    loop_thread: int | None = None

    def predict(self, rows):
        rows = np.asarray(rows)
        if rows[0, 0] == 11:
            time.sleep(0.3)
        elif rows[0, 0] >= 9:
            start = time.thread_time()
            while time.thread_time() - start < (0.01 if rows[0, 0] == 9 else 0.06):
                pass
        return np.full(len(rows), threading.get_ident() == type(self).loop_thread)


def _where(store, calls: list[np.ndarray]) -> list[bool]:
    """Whether each call of a fresh predictor ran on the event loop's thread."""
    bundle = nd.capture(_ThreadReporter(), name="where", sample=np.zeros((3, 2)), store=store)
    predictor = Predictor(bundle, ServeSettings(batching=False))

    async def scenario():
        type(predictor.model).loop_thread = threading.get_ident()
        await predictor.start()
        predictor.time_methods()  # as the app does in the background once it serves
        try:
            return [bool((await predictor.predict("predict", rows)).all()) for rows in calls]
        finally:
            await predictor.stop()

    return asyncio.run(scenario())


def test_fast_small_calls_run_on_the_loop_and_large_ones_on_the_model_thread(store):
    assert _where(store, [np.zeros((1, 2)), np.zeros((100, 2)), np.zeros((1, 2))]) == [True, False, True]


def test_a_lone_slow_call_keeps_the_method_on_the_loop(store):
    slow = np.full((1, 2), 9.0)  # 10 ms: slower than measured at start, as a descheduled process can be
    assert _where(store, [np.zeros((1, 2))] * 200 + [slow, np.zeros((1, 2))]) == [True] * 202


def test_repeatedly_slow_calls_send_the_method_to_the_model_thread(store, caplog):
    slow = np.full((1, 2), 9.0)
    with caplog.at_level("WARNING", logger="notebook_deploy.serving"):
        assert _where(store, [slow, slow, slow, slow, np.zeros((1, 2))])[-1] is False
    moved = [r.getMessage() for r in caplog.records if "model thread" in r.getMessage()]
    assert len(moved) == 1, moved  # said once, when it moved, not at each slow call after
    assert moved[0].startswith("predict of where:") and moved[0].endswith(
        "runs in the model thread from now on: 3 of 3 calls took over 1 ms of CPU"
    ), moved


def test_one_very_slow_call_sends_the_method_to_the_model_thread_at_once(store, caplog):
    with caplog.at_level("WARNING", logger="notebook_deploy.serving"):
        assert _where(store, [np.full((1, 2), 10.0), np.zeros((1, 2))]) == [True, False]
    said = re.findall(r"runs in the model thread from now on: a call took (\d+) ms of CPU", caplog.text)
    assert len(said) == 1 and int(said[0]) >= 50, caplog.text  # the call burns 60 ms of CPU


def test_a_call_blocked_without_the_cpu_sends_the_method_to_the_model_thread(store):
    assert _where(store, [np.full((1, 2), 11.0), np.zeros((1, 2))]) == [True, False]


class _Failing:
    """Raises ValueError on rows starting with 1, KeyError on rows starting with 2; answers its all-zero
    sample."""

    def predict(self, rows):
        rows = np.asarray(rows)
        if rows[0, 0] == 1:
            raise ValueError("a one")
        if rows[0, 0] == 2:
            raise KeyError("a two")
        return np.zeros(len(rows))


def test_a_model_failing_alike_logs_its_traceback_once_then_counts(store, caplog, monkeypatch):
    from notebook_deploy.errors import ModelError
    from notebook_deploy.serving import predictor as predictor_module

    bundle = nd.capture(_Failing(), name="failing", sample=np.zeros((3, 2)), store=store)
    predictor = Predictor(bundle, ServeSettings(batching=False))

    def logged() -> list[tuple[str, bool]]:
        return [(r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == "notebook_deploy.serving"]

    async def send(firsts: list[int]) -> None:
        for first in firsts:
            try:
                await predictor.predict("predict", np.full((1, 2), float(first)))
            except ModelError:
                pass

    async def scenario() -> list[tuple[str, bool]]:
        await predictor.start()
        try:
            await send([1, 1, 1, 2, 1, 2])
            first = logged()
            caplog.clear()
            monkeypatch.setattr(predictor_module, "FAILURE_LOG_SECONDS", 0.0)  # as if the interval had gone by
            await send([1])
            return first
        finally:
            await predictor.stop()

    with caplog.at_level("ERROR", logger="notebook_deploy.serving"):
        first = asyncio.run(scenario())
    assert first == [
        (f"predict of {bundle.ref} failed: ValueError: a one", True),
        (f"predict of {bundle.ref} failed: KeyError: 'a two'", True),
    ]
    assert logged() == [
        (f"predict of {bundle.ref} failed: ValueError: a one (3 more alike since the last one logged)", True)
    ]
