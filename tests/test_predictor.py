"""The Predictor: where a model call runs (event loop for fast small calls, else the model thread)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

import notebook_deploy as nd
from notebook_deploy.serving.predictor import Predictor
from notebook_deploy.serving.settings import ServeSettings


class _ThreadReporter:
    """Answers with whether it ran on the calling (event loop) thread; slow when a row starts with 9."""

    loop_thread: int | None = None

    def predict(self, rows):
        rows = np.asarray(rows)
        if rows[0, 0] == 9:
            time.sleep(0.01)
        return np.full(len(rows), threading.get_ident() == type(self).loop_thread)


def test_fast_small_calls_run_on_the_loop_until_one_is_slow(store):
    bundle = nd.capture(_ThreadReporter(), name="where", sample=np.zeros((3, 2)), store=store)
    predictor = Predictor(bundle, ServeSettings(batching=False))

    async def scenario():
        type(predictor.model).loop_thread = threading.get_ident()
        await predictor.start()
        try:
            small = await predictor.predict("predict", np.zeros((1, 2)))
            large = await predictor.predict("predict", np.zeros((100, 2)))
            await predictor.predict("predict", np.full((1, 2), 9.0))  # slower than measured at start
            after = await predictor.predict("predict", np.zeros((1, 2)))
        finally:
            await predictor.stop()
        return small, large, after

    small, large, after = asyncio.run(scenario())
    assert small.tolist() == [True]  # inline
    assert not large.any()  # many rows: the model thread
    assert after.tolist() == [False]  # demoted after the slow call
