"""Serving throughput and latency: notebook-deploy next to a raw ASGI app, BentoML 1.4 and MLflow 3.

One run serves the same scikit-learn model with each server in turn (never two driven at once: each server is
alone on the machine while measured) and drives it with the same load from `wrk` on loopback: single-row
JSON requests, 2 wrk threads, 16 and 64 connections, after a warm-up that is not counted. Two models:

- cheap (LogisticRegression, 20 features): per-request overhead of the servers; notebook-deploy unbatched,
  the raw ASGI baseline (benchmarks/raw_asgi.py: orjson + numpy + model.predict, nothing else), BentoML
  (a @bentoml.service with one non-batchable @bentoml.api) and MLflow (`mlflow models serve`);
- batching (RandomForestClassifier, 100 trees): a single-row predict has a fixed cost of milliseconds, so
  adaptive batching helps; notebook-deploy unbatched and batched (--batch --max-batch-size 64
  --max-batch-wait-ms 2), with the others as reference.

Prints a table per model and concurrency (req/s, p50 and p99 latency, errors = non-2xx responses plus
socket errors), the ratios the serving issue sets targets for (notebook-deploy >= 0.9x raw ASGI and >= 2x
BentoML and MLflow at 16 connections, the first from a paired run: both servers up at once and driven in
turn for --pairs short rounds, the median ratio held to the target, since a shared machine's speed drifts
over the minutes between single runs; batched >= 2x unbatched at 64 connections with no non-2xx; start to
first 200 <= 1.2x raw ASGI's), each as PASS or MISS, and the versions of every tool. Start to first 200 is
the time from launching the server's process to its first 200 answer to the real request (polled every
20 ms), the median of --starts launches. Every server binds 127.0.0.1 on a free port, runs one
worker, logs no access lines, and must return the same prediction as the in-process model.predict for the
request row before it is loaded. Before each run the script waits (up to a minute) for the machine to be
quiet (--patience); the "other cpu" column shows how many cores other processes used during the run (flagged above 0.15).

BentoML and MLflow run in their own virtualenvs under ~/.cache/notebook-deploy-bench/, created on first
use (under a minute with a warm pip cache) with scikit-learn pinned to the version in this project's venv,
so the very same model pickle loads in all of them. They hold what `pip install bentoml` / `mlflow` gives,
which has no uvloop or httptools; --uvloop adds both (venvs *-uvloop), so every uvicorn runs the same loop
and HTTP parser as this venv's. `wrk` comes from Debian: apt-get install -y wrk.

Run: .venv/bin/python benchmarks/serving.py [--duration 10 | --quick] [--only nd,raw,bentoml,mlflow]
     [--models cheap,batching] [--uvloop]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable  # this project's venv: notebook-deploy and the raw ASGI app run here
CACHE = Path(os.environ.get("NOTEBOOK_DEPLOY_BENCH_CACHE", Path.home() / ".cache" / "notebook-deploy-bench"))
HOST = "127.0.0.1"
QUIET = {
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PYTHONUNBUFFERED": "1",
}
TARGETS = {"raw": 0.9, "bentoml": 2.0, "mlflow": 2.0, "batched": 2.0}
START_TARGET = 1.2  # notebook-deploy's start to first 200 at most this many times the raw app's
SERVERS = ("nd", "raw", "bentoml", "mlflow")
LABELS = {
    "nd": "notebook-deploy",
    "nd-batched": "notebook-deploy batched",
    "raw": "raw ASGI (uvicorn)",
    "bentoml": "BentoML",
    "mlflow": "MLflow",
}
NOISY = 0.15  # cores used by other processes during a run above which its row is flagged
BATCH_OPTIONS = ["--batch", "--max-batch-size", "64", "--max-batch-wait-ms", "2"]

# The BentoML service: one API taking a list of rows, no batching, the same pickle as the others.
BENTO_SERVICE = '''
import os
import pickle

import bentoml
import numpy as np


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Model:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MODEL_PICKLE"], "rb") as file:
            self.model = pickle.load(file)

    @bentoml.api(batchable=False)
    def predict(self, instances: list[list[float]]) -> dict:
        rows = np.asarray(instances, dtype=np.float64)
        return {"predictions": self.model.predict(rows).tolist()}
'''

# Run in the MLflow venv: the same pickle, saved as an MLflow model (flavour sklearn, pyfunc). MLflow 3's
# default format, skops, refuses forests (untrusted sklearn.tree._tree.Tree) unless told to trust them;
# cloudpickle keeps the very object the others serve, and the format only matters at load time.
MLFLOW_SAVE = '''
import pickle, sys
import mlflow.sklearn
with open(sys.argv[1], "rb") as file:
    model = pickle.load(file)
mlflow.sklearn.save_model(model, sys.argv[2], serialization_format="cloudpickle")
'''


# ---------------------------------------------------------------------------------------------- models


def make_models() -> dict[str, tuple[str, object, np.ndarray]]:
    """Both models, deterministic. They are trained once, here, and pickled with the stdlib pickle; the
    other venvs pin the same scikit-learn, so they unpickle the identical model (not retrained), which the
    prediction check before each load confirms."""
    X, y = make_classification(n_samples=2000, n_features=20, n_informative=10, random_state=0)
    cheap = LogisticRegression(max_iter=1000).fit(X, y)
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
    return {
        "cheap": ("LogisticRegression, 20 features", cheap, X),
        "batching": ("RandomForestClassifier, 100 trees, 20 features", forest, X),
    }


# ----------------------------------------------------------------------------------------------- venvs


def ensure_venv(name: str, requirements: list[str]) -> tuple[Path, float | None]:
    """The venv CACHE/name with `requirements`, created if missing or made for other requirements.
    Returns its python and how long creating it took (None if it was there)."""
    root = CACHE / name
    python, marker = root / "bin" / "python", root / ".bench-requirements"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python, None
    print(
        f"creating the {name} venv in {root} (one-off, a few minutes): pip install {' '.join(requirements)}", flush=True
    )
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    log = root.parent / f"{name}-pip.log"
    started = time.perf_counter()
    with log.open("w") as out:
        for command in (
            [PYTHON, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
        ):
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"creating the {name} venv failed: {' '.join(command)}\n{tail(log)}")
    marker.write_text(wanted)
    return python, time.perf_counter() - started


def versions(python: str | Path, distributions: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(d):\n    try: return m.version(d)\n    except m.PackageNotFoundError: return '-'\n"
        "print(json.dumps({d: v(d) for d in sys.argv[1:]}))"
    )
    result = subprocess.run([str(python), "-c", code, *distributions], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


# --------------------------------------------------------------------------------------------- servers


@dataclass
class Launch:
    """How to start one server and where it answers predictions."""

    key: str
    command: list[str]
    path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    timeout: float = 90.0
    note: str = ""
    prepare: Callable[[], None] | None = None  # run first, e.g. to save the model in the server's format


@dataclass
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    other_cpu: float = 0.0  # cores busy with processes other than the server and wrk during the run

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Running:
    """A server in its own process group, stopped on exit with all its descendants (SIGTERM to the group
    first, so arbiters stop their workers; then SIGKILL to whatever of the tree is left)."""

    def __init__(self, launch: Launch, port: int, folder: Path):
        self.launch, self.url = launch, f"http://{HOST}:{port}{launch.path}"
        self.started = time.perf_counter()
        self.log = folder / f"{launch.key}.log"
        self.out = self.log.open("wb")
        self.process = subprocess.Popen(
            launch.command,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=launch.cwd,
            start_new_session=True,
            env={**os.environ, **QUIET, **launch.env},
        )

    def wait_for_prediction(self, body: bytes) -> list:
        """Poll with the real request until it is answered with predictions; bounded by launch.timeout."""
        deadline, last = time.monotonic() + self.launch.timeout, "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{LABELS.get(self.launch.key, self.launch.key)} exited with {self.process.returncode} before "
                    f"answering; its log:\n{tail(self.log)}"
                )
            try:
                status, payload = post(self.url, body, timeout=5)
                if status == 200:
                    return json.loads(payload)["predictions"]
                last = f"HTTP {status}: {payload[:300]!r}"
            except (OSError, ValueError, KeyError) as error:
                last = repr(error)
            time.sleep(0.02)
        raise RuntimeError(
            f"{LABELS.get(self.launch.key, self.launch.key)} gave no prediction within {self.launch.timeout:.0f} s "
            f"(last: {last}); its log:\n{tail(self.log)}"
        )

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc) -> None:
        group = self.process.pid
        members = set(tree(group))
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            for kill, target in [(os.killpg, group)] + [(os.kill, pid) for pid in members if pid != group] * (
                sig == signal.SIGKILL
            ):
                try:
                    kill(target, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.process.poll()
                members &= set(processes())  # reaped or exited: gone
                if not members:
                    break
                time.sleep(0.1)
            if not members:
                break
        self.process.wait()
        self.out.close()


# ------------------------------------------------------------------------------------------------- wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all but idle and iowait) since boot."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def processes() -> dict[int, tuple[int, float]]:
    """Every live process but zombies: pid -> (parent pid, CPU seconds used)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            rest = stat.read_text().rsplit(")", 1)[1].split()
            if rest[0] == "Z":  # exited, not reaped yet
                continue
            found[int(stat.parent.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / TICK)
        except (OSError, IndexError, ValueError):
            continue
    return found


def tree(root: int) -> dict[int, float]:
    """The live processes descending from root (root included): pid -> CPU seconds used. Not a process
    group: BentoML starts its worker in a session of its own."""
    table, members = processes(), {}
    if root in table:
        members[root] = table[root][1]
    grew = True
    while grew:
        grew = False
        for pid, (parent, seconds) in table.items():
            if parent in members and pid not in members:
                members[pid] = seconds
                grew = True
    return members


def tree_seconds(root: int) -> float:
    return sum(tree(root).values())


def wait_until_quiet(limit: float = 0.15, patience: float = 120) -> float:
    """Wait (at most `patience` s) until other processes use under `limit` of a core; returns the last
    sample. Everything of this benchmark is idle when this runs."""
    deadline, said = time.monotonic() + patience, 0.0
    while True:
        before, t0 = busy_seconds(), time.monotonic()
        time.sleep(1)
        load = (busy_seconds() - before) / (time.monotonic() - t0)
        if load < limit or time.monotonic() > deadline:
            return load
        if time.monotonic() - said > 10:
            print(f"    waiting: other processes keep {load:.2f} cores busy", flush=True)
            said = time.monotonic()


def wrk(url: str, lua: Path, connections: int, seconds: float, group: int | None = None) -> Load:
    """One wrk run; `group` is the server's pid, whose process tree's CPU is not counted as other load."""
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    children, machine = os.times(), busy_seconds()
    server = tree_seconds(group) if group else 0.0
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    after = os.times()
    ours = (
        after.children_user
        + after.children_system
        - children.children_user
        - children.children_system
        + after.user
        + after.system
        - children.user
        - children.system
        + (tree_seconds(group) - server if group else 0.0)
    )
    other_cpu = max(0.0, (busy_seconds() - machine - ours) / elapsed)
    output = result.stdout + result.stderr
    if result.returncode:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{output}")

    def latency(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
        return float(found[1]) * UNITS[found[2]] if found else float("nan")

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Load(
        float(rate[1]),
        latency("50"),
        latency("99"),
        int(non_2xx[1]) if non_2xx else 0,
        sum(int(n) for n in sockets.groups()) if sockets else 0,
        other_cpu,
    )


def write_lua(folder: Path, body: bytes) -> Path:
    lua = folder / "post.lua"
    lua.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body.decode()}]==]\n'
    )
    return lua


# ------------------------------------------------------------------------------------------------ main


def serve_options() -> tuple[list[str], list[str], str]:
    """The serve options for the unbatched and batched runs that `serve --help` lists, and a note on
    what it does not list yet."""
    helptext = subprocess.run(
        [PYTHON, "-m", "notebook_deploy", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    has = lambda option: re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helptext) is not None  # noqa: E731
    missing = [
        o for o in ("--no-batch", "--batch", "--max-batch-size", "--max-batch-wait-ms", "--workers") if not has(o)
    ]
    workers = ["--workers", "1"] if has("--workers") else []
    unbatched = ["--no-batch", *workers] if has("--no-batch") else workers
    batched = [*BATCH_OPTIONS, *workers] if all(has(o) for o in BATCH_OPTIONS if o.startswith("--")) else workers
    note = (
        (
            f"note: `notebook-deploy serve --help` does not list {', '.join(missing)} yet: "
            f"{'the batched configuration runs WITHOUT batching, ' if batched == workers else ''}"
            f"passing only what it lists"
        )
        if missing
        else ""
    )
    return unbatched, batched, note


def launches(
    keys: list[str],
    model_key: str,
    pickle_path: Path,
    store: Path,
    folder: Path,
    pythons: dict[str, Path],
    unbatched: list[str],
    batched: list[str],
    batching_note: str,
) -> list[Launch]:
    out = []
    nd_serve = [
        PYTHON,
        "-m",
        "notebook_deploy",
        "--store",
        str(store),
        "serve",
        f"bench-{model_key}",
        "--host",
        HOST,
        "--log-level",
        "warning",
    ]
    for key in keys:
        if key == "nd":
            out.append(Launch("nd", [*nd_serve, *unbatched], "/predict", timeout=60))
            if model_key == "batching":
                out.append(Launch("nd-batched", [*nd_serve, *batched], "/predict", timeout=60, note=batching_note))
        elif key == "raw":
            out.append(
                Launch(
                    "raw",
                    [
                        PYTHON,
                        "-m",
                        "uvicorn",
                        "raw_asgi:app",
                        "--app-dir",
                        str(HERE),
                        "--host",
                        HOST,
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    "/",
                    env={"RAW_ASGI_MODEL": str(pickle_path)},
                    timeout=60,
                )
            )
        elif key == "bentoml":
            service = folder / f"bento-{model_key}"
            service.mkdir(exist_ok=True)
            (service / "service.py").write_text(BENTO_SERVICE)
            python = pythons["bentoml"]
            out.append(
                Launch(
                    "bentoml",
                    [str(python), "-m", "bentoml", "serve", "service:Model", "--host", HOST],
                    "/predict",
                    cwd=service,
                    timeout=120,
                    env={"BENCH_MODEL_PICKLE": str(pickle_path), "BENTOML_HOME": str(folder / "bentoml-home")},
                )
            )
        elif key == "mlflow":
            python = pythons["mlflow"]
            saved = folder / f"mlflow-{model_key}"

            def save(python: Path = python, saved: Path = saved) -> None:
                result = subprocess.run(
                    [str(python), "-c", MLFLOW_SAVE, str(pickle_path), str(saved)],
                    env={**os.environ, **QUIET},
                    capture_output=True,
                    text=True,
                )
                if result.returncode:
                    raise RuntimeError(f"saving the MLflow model failed:\n{result.stderr[-3000:]}")

            out.append(
                Launch(
                    "mlflow",
                    [
                        str(python),
                        "-m",
                        "mlflow",
                        "models",
                        "serve",
                        "-m",
                        str(saved),
                        "--env-manager",
                        "local",
                        "-h",
                        HOST,
                    ],
                    "/invocations",
                    timeout=120,
                    # mlflow execs `uvicorn` from PATH, which reads UVICORN_* (no access log)
                    env={
                        "PATH": f"{python.parent}:{os.environ.get('PATH', '')}",
                        "UVICORN_ACCESS_LOG": "false",
                        "UVICORN_LOG_LEVEL": "warning",
                        "MLFLOW_TRACKING_URI": (folder / "mlruns").as_uri(),
                    },
                    prepare=save,
                )
            )
    return out


def paired_rounds(
    pair: list[Launch],
    body: bytes,
    lua: Path,
    folder: Path,
    rounds: int,
    seconds: float,
    warmup: float,
    patience: float,
) -> list[float]:
    """The ratio of the first server's req/s to the second's at 16 connections, one per round: both run at
    once (the one not driven is idle) and are driven in turn, the order swapped every round, so that each
    ratio compares the two a few seconds apart. On a shared machine whose speed drifts over a run, the
    median of these ratios says more than two runs minutes apart do."""
    print(f"\n== paired run: {' and '.join(LABELS[launch.key] for launch in pair)}, {rounds} rounds", flush=True)
    with contextlib.ExitStack() as running:
        servers = []
        for launch in pair:
            port = free_port()
            launch = replace(launch, command=[*launch.command, *port_option(launch, port)])
            server = running.enter_context(Running(launch, port, folder))
            server.wait_for_prediction(body)
            wrk(server.url, lua, 16, warmup)
            servers.append(server)
        ratios = []
        for number in range(rounds):
            order = servers if number % 2 == 0 else servers[::-1]
            rates = {}
            for server in order:
                wait_until_quiet(patience=patience)
                rates[server.launch.key] = wrk(server.url, lua, 16, seconds, server.process.pid).requests_per_second
            first, second = (server.launch.key for server in servers)
            ratios.append(rates[first] / rates[second])
            print(
                f"  round {number + 1}: {LABELS[first]} {rates[first]:.0f} req/s, {LABELS[second]} "
                f"{rates[second]:.0f} req/s: {ratios[-1]:.2f}x",
                flush=True,
            )
        for server in servers:  # what a server said while measured (a method moved off the event loop, say)
            said = [line for line in server.log.read_text(errors="replace").splitlines() if "WARNING" in line]
            if said:
                print(f"  {LABELS[server.launch.key]} logged: " + "\n    ".join(said[-5:]), flush=True)
    return ratios


def port_option(launch: Launch, port: int) -> list[str]:
    return ["-p", str(port)] if launch.key == "mlflow" else ["--port", str(port)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per run [10]")
    parser.add_argument("--quick", action="store_true", help="3 s runs and 2 s warm-ups")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of uncounted load first [3]")
    parser.add_argument("--only", default=",".join(SERVERS), help=f"servers to run, of {','.join(SERVERS)}")
    parser.add_argument("--models", default="cheap,batching", help="models to run, of cheap,batching")
    parser.add_argument(
        "--patience",
        type=float,
        default=120,
        help="longest wait for a quiet machine before each run, then it runs flagged [120]",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="add uvloop and httptools to the BentoML and MLflow venvs (named *-uvloop), so their "
        "uvicorn runs the same loop and HTTP parser as this venv's when it has them",
    )
    parser.add_argument(
        "--starts", type=int, default=3, help="launches per server whose start to first 200 is timed [3]"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=7,
        help="rounds of the paired run of notebook-deploy and raw ASGI (cheap model, 16 connections), "
        "whose median ratio is the one held to its target; 0 skips it [7]",
    )
    args = parser.parse_args()
    duration, warmup = (3.0, 2.0) if args.quick else (args.duration, args.warmup)
    keys = [k for k in SERVERS if k in args.only.split(",")]
    model_keys = [m for m in ("cheap", "batching") if m in args.models.split(",")]
    if unknown := set(args.only.split(",")) - set(SERVERS):
        parser.error(f"unknown servers {sorted(unknown)}: pick from {','.join(SERVERS)}")

    if shutil.which("wrk") is None:
        print("wrk is missing: install it with `apt-get install -y wrk` (Debian), then run this again.")
        return 2
    started_all = time.perf_counter()
    pins = [f"scikit-learn=={sklearn.__version__}", "numpy"]
    if args.uvloop:
        pins += ["uvloop", "httptools"]
    venvs = {"bentoml": ["bentoml>=1.4,<1.5", *pins], "mlflow": ["mlflow>=3,<4", *pins]}
    pythons, created = {}, {}
    for name in [k for k in ("bentoml", "mlflow") if k in keys]:
        pythons[name], created[name] = ensure_venv(name + ("-uvloop" if args.uvloop else ""), venvs[name])
        found = versions(pythons[name], ["scikit-learn"])["scikit-learn"]
        if found != sklearn.__version__:  # then the pickle would not be the same model
            raise SystemExit(f"the {name} venv has scikit-learn {found}, this one {sklearn.__version__}")

    unbatched, batched, batching_note = serve_options()
    if batching_note:
        print(batching_note)
    if "nd" in keys:
        print(
            f"notebook-deploy serve options: unbatched {' '.join(unbatched) or '(none)'}; "
            f"batched {' '.join(batched) or '(none)'}"
        )
    results: dict[tuple[str, str, int], Load] = {}
    starts: dict[tuple[str, str], float] = {}  # (model, server) -> median seconds from launch to first 200
    paired: list[float] = []  # notebook-deploy / raw ASGI req/s, one per round of the paired run
    failures: list[str] = []
    connections = (16, 64)
    with tempfile.TemporaryDirectory(prefix="nd-bench-serving-") as scratch:
        folder = Path(scratch)
        store = folder / "store"
        for model_key, (description, model, X) in make_models().items():
            if model_key not in model_keys:
                continue
            row = X[:1]
            body = json.dumps({"instances": row.tolist()}).encode()
            expected = model.predict(row).tolist()
            pickle_path = folder / f"{model_key}.pkl"
            pickle_path.write_bytes(pickle.dumps(model))
            if "nd" in keys:
                nd.capture(model, name=f"bench-{model_key}", sample=X[:5], store=store)
            lua = write_lua(folder, body)
            print(f"\n== {model_key} model: {description}; request {len(body)} bytes, expected {expected}", flush=True)
            for launch in launches(
                keys, model_key, pickle_path, store, folder, pythons, unbatched, batched, batching_note
            ):
                port = free_port()
                launch.command += port_option(launch, port)
                label = LABELS[launch.key]
                try:
                    if launch.prepare is not None:
                        launch.prepare()
                    timed = []
                    for _ in range(max(args.starts, 1) - 1):
                        wait_until_quiet(patience=args.patience)
                        other = free_port()  # a launch only timed, on a port of its own
                        relaunch = replace(launch, command=launch.command[:-2] + port_option(launch, other))
                        with Running(relaunch, other, folder) as server:
                            server.wait_for_prediction(body)
                            timed.append(time.perf_counter() - server.started)
                    wait_until_quiet(patience=args.patience)
                    with Running(launch, port, folder) as server:
                        got = server.wait_for_prediction(body)
                        timed.append(time.perf_counter() - server.started)
                        ready = starts[model_key, launch.key] = sorted(timed)[len(timed) // 2]
                        same = got == expected
                        print(
                            f"  {label:<26} answered in {ready:5.2f} s (median of {len(timed)}): predictions {got} "
                            f"{'== model.predict' if same else '!= model.predict ' + str(expected)}",
                            flush=True,
                        )
                        if not same:
                            failures.append(f"{label} ({model_key}): wrong prediction {got}, expected {expected}")
                            continue
                        wrk(server.url, lua, 16, warmup)
                        for conns in connections:
                            wait_until_quiet(patience=args.patience)
                            load = wrk(server.url, lua, conns, duration, server.process.pid)
                            results[model_key, launch.key, conns] = load
                            print(
                                f"    {conns:>2} connections: {load.requests_per_second:9.1f} req/s  "
                                f"p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  errors {load.errors}"
                                f"  other cpu {load.other_cpu:.2f}",
                                flush=True,
                            )
                except RuntimeError as error:
                    failures.append(f"{label} ({model_key}): {error}")
                    print(f"  {label}: FAILED: {error}", flush=True)
            if model_key == "cheap" and {"nd", "raw"} <= set(keys) and args.pairs > 0:
                pair = launches(["nd", "raw"], model_key, pickle_path, store, folder, pythons, unbatched, batched, "")
                try:
                    paired = paired_rounds(pair, body, lua, folder, args.pairs, duration / 2, warmup, args.patience)
                except RuntimeError as error:
                    failures.append(f"paired run: {error}")
                    print(f"  paired run: FAILED: {error}", flush=True)

    report(results, starts, model_keys, connections, duration, batching_note, paired)
    print("\nversions:")
    tools = {
        "this venv": versions(
            PYTHON,
            [
                "notebook-deploy",
                "fastapi",
                "starlette",
                "uvicorn",
                "uvloop",
                "httptools",
                "orjson",
                "numpy",
                "scikit-learn",
            ],
        )
    }
    if "bentoml" in pythons:
        tools["bentoml venv"] = versions(
            pythons["bentoml"], ["bentoml", "starlette", "uvicorn", "uvloop", "httptools", "numpy", "scikit-learn"]
        )
    if "mlflow" in pythons:
        tools["mlflow venv"] = versions(
            pythons["mlflow"], ["mlflow", "fastapi", "uvicorn", "uvloop", "httptools", "numpy", "scikit-learn"]
        )
    print(
        f"  python {sys.version.split()[0]}; "
        f"{subprocess.run(['wrk', '-v'], capture_output=True, text=True).stdout.split(' Copyright')[0].strip()}"
    )
    for venv, found in tools.items():
        print(f"  {venv}: " + ", ".join(f"{d} {v}" for d, v in found.items()))
    for name, seconds in created.items():
        print(
            f"  {name} venv: "
            + (f"created in {seconds:.0f} s" if seconds is not None else f"reused ({pythons[name].parent.parent})")
        )
    print(f"total time {time.perf_counter() - started_all:.0f} s")
    for failure in failures:
        print(f"\nFAILED: {failure}")
    return 1 if failures else 0


def report(
    results: dict[tuple[str, str, int], Load],
    starts: dict[tuple[str, str], float],
    model_keys: list[str],
    connections: tuple[int, ...],
    duration: float,
    batching_note: str,
    paired: list[float],
) -> None:
    for model_key in model_keys:
        for conns in connections:
            rows = [(key, load) for (m, key, c), load in results.items() if m == model_key and c == conns]
            if not rows:
                continue
            print(f"\n{model_key} model, {conns} connections, {duration:g} s, single-row requests")
            print(f"  {'server':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'other cpu':>10}")
            for key, load in rows:
                flag = "  <- machine not quiet" if load.other_cpu > NOISY else ""
                print(
                    f"  {LABELS[key]:<26} {load.requests_per_second:9.1f} {load.p50_ms:8.2f} "
                    f"{load.p99_ms:8.2f} {load.errors:7d} {load.other_cpu:10.2f}{flag}"
                )

    print("\nstart to first 200 (median s)   notebook-deploy  raw ASGI   ratio  target  result")
    for model_key in model_keys:
        ours, raw = starts.get((model_key, "nd")), starts.get((model_key, "raw"))
        if ours is None or raw is None:
            continue
        verdict = "PASS" if ours / raw <= START_TARGET else "MISS"
        print(
            f"  {model_key + ' model':<30} {ours:15.2f} {raw:9.2f} {ours / raw:6.2f}x  <= {START_TARGET:g}x  {verdict}"
        )

    print("\nratios (req/s)                                          measured  target  result")

    def ratio(
        label: str, top: Load | None, bottom: Load | None, target: float, extra_ok: bool = True, extra: str = ""
    ) -> None:
        if top is None or bottom is None:
            print(f"  {label:<52} {'n/a':>8}  >= {target:g}x  not run")
            return
        value = top.requests_per_second / bottom.requests_per_second
        verdict = "PASS" if value >= target and extra_ok else "MISS"
        print(f"  {label:<52} {value:7.2f}x  >= {target:g}x  {verdict}{extra}")

    get = lambda m, k, c: results.get((m, k, c))  # noqa: E731
    if paired:
        middle = sorted(paired)[len(paired) // 2]
        verdict = "PASS" if middle >= TARGETS["raw"] else "MISS"
        label = f"notebook-deploy / raw ASGI (cheap, 16 conns, paired: median of {len(paired)})"
        print(f"  {label:<52} {middle:7.2f}x  >= {TARGETS['raw']:g}x  {verdict}")
        ours, raw = get("cheap", "nd", 16), get("cheap", "raw", 16)
        single = (
            f"; the single runs above, minutes apart: {ours.requests_per_second / raw.requests_per_second:.2f}x"
            if ours and raw
            else ""
        )
        print(f"    (rounds: {', '.join(f'{r:.2f}' for r in paired)}{single})")
    else:
        ratio(
            "notebook-deploy / raw ASGI (cheap, 16 conns)",
            get("cheap", "nd", 16),
            get("cheap", "raw", 16),
            TARGETS["raw"],
        )
    ratio(
        "notebook-deploy / BentoML (cheap, 16 conns)",
        get("cheap", "nd", 16),
        get("cheap", "bentoml", 16),
        TARGETS["bentoml"],
    )
    ratio(
        "notebook-deploy / MLflow (cheap, 16 conns)",
        get("cheap", "nd", 16),
        get("cheap", "mlflow", 16),
        TARGETS["mlflow"],
    )
    batched = get("batching", "nd-batched", 64)
    non_2xx = None if batched is None else batched.non_2xx
    ratio(
        "batched / unbatched (batching model, 64 conns)",
        batched,
        get("batching", "nd", 64),
        TARGETS["batched"],
        extra_ok=non_2xx == 0,
        extra=f" ({non_2xx} non-2xx)" if non_2xx is not None else "",
    )
    if batching_note:
        print(f"  ({batching_note})")
    print("  for reference, at 64 connections (no target):")
    for other in ("raw", "bentoml", "mlflow"):
        top, bottom = get("cheap", "nd", 64), get("cheap", other, 64)
        if top and bottom:
            print(
                f"    notebook-deploy / {LABELS[other]:<20} {top.requests_per_second / bottom.requests_per_second:5.2f}x"
            )


if __name__ == "__main__":
    sys.exit(main())
