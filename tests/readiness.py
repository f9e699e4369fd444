"""Waiting for an in-process app to be ready: it checks its stored sample in the background once it runs."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient


def wait_until_ready(client: TestClient, timeout: float = 30) -> dict[str, Any]:
    """The 200 answer of ``/readyz``, once it comes (within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get("/readyz")
        if answer.status_code == 200 or time.monotonic() > deadline:
            assert answer.status_code == 200, answer.text
            return answer.json()
        time.sleep(0.01)
