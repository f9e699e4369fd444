"""The raw baseline for benchmarks/serving.py: the least an ASGI server can do to answer a prediction.

Reads the body, orjson.loads, np.asarray(float64), model.predict, orjson.dumps. No routing, validation,
schema or error handling. The model is the pickle named by $RAW_ASGI_MODEL.
Run: .venv/bin/python -m uvicorn raw_asgi:app --app-dir benchmarks --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import orjson

with open(os.environ["RAW_ASGI_MODEL"], "rb") as file:
    model = pickle.load(file)

HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: accept startup and shutdown
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    rows = np.asarray(orjson.loads(body)["instances"], dtype=np.float64)
    payload = orjson.dumps({"predictions": model.predict(rows)}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": payload})
