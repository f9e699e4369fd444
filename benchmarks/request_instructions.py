"""Instructions per request of notebook-deploy's request path next to the raw ASGI app's: a count, not a time.

On a shared machine the time of one request drifts by a third from one minute to the next (see
benchmarks/serving.py's paired rounds), which hides a difference of a few percent. The number of machine
instructions a request takes does not drift: valgrind's cachegrind counts them. Each app runs in its own
process under `valgrind --tool=cachegrind`, once answering no request and once answering --requests, every
one of them driven through the app's ASGI interface in-process (no socket, no HTTP parser: those are
uvicorn's, the same for both); the difference, divided by the requests, is the app's instructions per
request, model call included. The apps: benchmarks/raw_asgi.py (orjson, numpy, model.predict) and what
`notebook-deploy serve --no-batch` runs (runner.serving_app, its fast lane answering /predict, with request
validation, metrics and drift monitoring), on serving.py's cheap model (LogisticRegression, 20 features).

Under valgrind a call is about 50 times slower, so the server would judge the model slow and move it to its
model thread (predictor.INLINE_*): the child raises those limits, to count the path a real server takes.
valgrind comes from Debian: apt-get install -y valgrind.

Run: .venv/bin/python benchmarks/request_instructions.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import notebook_deploy as nd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serving import make_models  # noqa: E402 - the same cheap model serving.py drives

# The child: load one app, start it, answer `count` requests in-process.
CHILD = r"""
import asyncio, json, os, sys
which, count, store, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode()
if which == "raw":
    sys.path.insert(0, os.environ["BENCH_DIR"])
    from raw_asgi import app
    path = "/"
else:
    from notebook_deploy.serving import predictor, runner
    from notebook_deploy.serving.deployment import Deployment
    from notebook_deploy.serving.settings import ServeSettings
    from notebook_deploy.store import Store
    predictor.INLINE_SECONDS, predictor.INLINE_LONGEST_SECONDS, predictor.INLINE_BLOCKED_SECONDS = 10.0, 100.0, 100.0
    app = runner.serving_app(Deployment((Store(store).get("bench-cheap"),)), ServeSettings(batching=False))
    path = "/predict"
headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
answers = []

async def receive():
    return {"type": "http.request", "body": body, "more_body": False}

async def send(message):
    if message["type"] == "http.response.body":
        answers.append(message["body"])

async def main():
    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    await outbox.get()
    if which != "raw":
        await asyncio.sleep(0.1)
        await app._built  # the warm-up has timed the model and the whole app is built: as under load
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers, "query_string": b"",
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1)}
    for _ in range(20 + count):  # 20 first, in both runs, so that first-call work is not counted
        await app(dict(scope), receive, send)
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    print(json.dumps({"answer": answers[-1].decode(), "answers": len(answers)}))

asyncio.run(main())
"""


def instructions(which: str, count: int, store: Path, body: bytes, model: Path) -> tuple[int, str]:
    """The instructions cachegrind counted in a child that answers ``count`` requests, and its last answer."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            which,
            str(count),
            str(store),
            body.decode(),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_DIR": str(HERE), "RAW_ASGI_MODEL": str(model)},
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode or found is None:
        raise SystemExit(f"the {which} child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", "")), json.loads(done.stdout.splitlines()[-1])["answer"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per app [1000]")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is missing: install it with `apt-get install -y valgrind` (Debian), then run this again.")
        return 2
    _, model, X = make_models()["cheap"]
    body = json.dumps({"instances": X[:1].tolist()}).encode()
    with tempfile.TemporaryDirectory(prefix="nd-bench-instructions-") as scratch:
        folder = Path(scratch)
        (folder / "cheap.pkl").write_bytes(pickle.dumps(model))
        nd.capture(model, name="bench-cheap", sample=X[:5], store=nd.Store(folder))
        runs = [(which, count) for which in ("raw", "nd") for count in (0, args.requests)]
        with ThreadPoolExecutor(max_workers=2) as pool:  # each run is counted on its own: two at once is fine
            counted = dict(
                zip(runs, pool.map(lambda run: instructions(*run, folder, body, folder / "cheap.pkl"), runs))
            )
    per_request = {
        which: (counted[which, args.requests][0] - counted[which, 0][0]) / args.requests for which in ("raw", "nd")
    }
    answers = {which: counted[which, args.requests][1] for which in ("raw", "nd")}
    print(f"instructions per request, app in-process (model call included), {args.requests} requests each:")
    print(f"  raw ASGI                    {per_request['raw']:11,.0f}   answer {answers['raw']}")
    print(f"  notebook-deploy (no-batch)  {per_request['nd']:11,.0f}   answer {answers['nd']}")
    print(
        f"  raw / notebook-deploy: {per_request['raw'] / per_request['nd']:.3f}x "
        f"(notebook-deploy does {per_request['nd'] / per_request['raw'] - 1:+.1%} of the raw app's work a request)"
    )
    if answers["raw"] != answers["nd"]:
        print("the two apps answered differently: the counts do not compare the same work")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
