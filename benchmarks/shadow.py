"""Several versions under wrk load (issue 16's acceptance): a shadow must not hurt the callers, and a
canary gets its share. The same server under the same load, without a shadow, with a shadow that raises
on every copy, with one that sleeps 50 ms per copy, and with a canary at 10%.

Each configuration serves the stable model (a LogisticRegression, 20 features) with `notebook-deploy
serve`, one worker, unbatched; the shadows get a copy of every request, run as spare capacity allows
(each round prints how many copies the shadow answered). The runs alternate (none, raising,
sleeping, none, ...) for --rounds rounds, each after a warm-up that is not counted, so the spread of the
runs without a shadow is the noise the others are held against. Before the load, the same request is
sent to each server 20 times: each answer must be the prediction of the version its X-Model-Version
header names (with a shadow, always the stable one).

The canary's share is read from the server's /metrics (answers per version, before and after the
load) and held against a 99% binomial interval around 10%.

Sticky callers under load: one server with a canary at 50% and --sticky-header X-User, loaded by 8 wrk
processes at once, each sending as one caller (its own X-User) over 2 connections; a Lua response hook
counts the versions each caller met. Each caller must meet one version only, and both versions must be
met by some caller.

Prints requests/s, p50 and p99 per run, the canary's share, then per shadow the median p99 against the runs without a
shadow and whether it is at most their highest p99 plus their spread (PASS) or not (MISS), and the
non-2xx count (must be 0). wrk comes from Debian (apt-get install -y wrk).

Run: .venv/bin/python benchmarks/shadow.py [--duration 10] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from serving import PYTHON, Launch, Running, free_port, wait_until_quiet, write_lua, wrk
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.serving.router import VERSION_HEADER
from notebook_deploy.serving.watch import parse_metrics

CANARY_PERCENT = 10
STICKY_CALLERS = 8

# Counts, per wrk thread, the versions that answered; done() prints them as "version <ref> <count>".
STICKY_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) versions = {} end
function response(status, headers, body)
  local version = headers["x-model-version"] or headers["X-Model-Version"] or ("status " .. status)
  versions[version] = (versions[version] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for version, count in pairs(thread:get("versions")) do total[version] = (total[version] or 0) + count end
  end
  for version, count in pairs(total) do io.write("version " .. version .. " " .. count .. "\\n") end
end
"""


class Raising:
    """A shadow that raises on every row but those of its sample (its capture runs it on them)."""

    def __init__(self, sample: np.ndarray) -> None:
        self.sample = {tuple(row) for row in sample.tolist()}

    def predict(self, rows):
        if any(tuple(row) not in self.sample for row in np.asarray(rows).tolist()):
            raise RuntimeError("the shadow fails")
        return np.zeros(len(rows), dtype=int)


class Sleeping:
    """A shadow that takes 50 ms a call, then answers zeros."""

    def predict(self, rows):
        time.sleep(0.05)
        return np.zeros(len(rows), dtype=int)


def answers(url: str) -> dict:
    """The server's answers so far, per version, from its /metrics."""
    with urllib.request.urlopen(url.replace("/predict", "/metrics"), timeout=10) as response:
        return parse_metrics(response.read().decode())[0]


def sticky_callers(url: str, lua: Path, seconds: float) -> dict[str, dict[str, int]]:
    """Load ``url`` with STICKY_CALLERS wrk processes at once, each one caller (its own X-User over two
    connections); the versions each caller met, with their counts."""
    running = {
        caller: subprocess.Popen(
            ["wrk", "-t1", "-c2", f"-d{seconds:g}s", "-H", f"X-User: {caller}", "-s", str(lua), url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for caller in (f"caller-{k}" for k in range(STICKY_CALLERS))
    }
    met = {}
    for caller, process in running.items():
        out, _ = process.communicate(timeout=seconds + 60)
        met[caller] = {m[1]: int(m[2]) for m in re.finditer(r"^version (\S+(?: \d+)?) (\d+)$", out, re.M)}
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    with tempfile.TemporaryDirectory() as scratch:
        folder, store = Path(scratch), nd.Store(Path(scratch) / "store")
        stable = nd.capture(LogisticRegression(max_iter=500).fit(X, y), "shadowed", X[:5], store=store)
        shadows = {
            "raising": nd.capture(Raising(X[:5]), "shadowed", X[:5], store=store),
            "sleeping": nd.capture(Sleeping(), "shadowed", X[:5], store=store),
        }
        canary = nd.capture(LogisticRegression(C=0.01).fit(X, y), "shadowed", X[:5], store=store)
        row = X[100:101]  # not in the sample: the raising shadow raises on it
        body = json.dumps({"instances": row.tolist()}).encode()
        lua = write_lua(folder, body)
        configurations = {"none": []} | {name: ["--shadow", bundle.ref] for name, bundle in shadows.items()}
        configurations["canary"] = ["--canary", f"{canary.ref}={CANARY_PERCENT:g}"]
        runs: dict[str, list] = {name: [] for name in configurations}
        shares: list[tuple[float, float]] = []  # the canary's answers, and all answers, of each canary run
        for round_ in range(args.rounds):
            for name, extra in configurations.items():
                port = free_port()
                command = [PYTHON, "-m", "notebook_deploy", "--store", str(store.root), "serve", stable.ref]
                command += ["--port", str(port), "--no-batch", "--workers", "1", *extra]
                with Running(Launch(f"shadow-{name}", command, "/predict"), port, folder) as server:
                    server.wait_for_prediction(body)
                    for _ in range(20):  # each answer is the prediction of the version its header names
                        request = urllib.request.Request(
                            server.url, data=body, headers={"content-type": "application/json"}
                        )
                        with urllib.request.urlopen(request, timeout=10) as response:
                            answer, answered_by = json.loads(response.read()), response.headers[VERSION_HEADER]
                        named = canary if answered_by and canary.version in answered_by else stable
                        assert extra or answered_by is None, f"{name}: answered by {answered_by}"
                        assert answer["predictions"] == named.model.predict(row).tolist(), f"{name}: {answer}"
                    wait_until_quiet()
                    wrk(server.url, lua, args.connections, 2)  # warm-up, not counted
                    before = answers(server.url)
                    load = wrk(server.url, lua, args.connections, args.duration, server.process.pid)
                    after = answers(server.url)
                    counted = {v: after[v].requests - (before[v].requests if v in before else 0) for v in after}
                    if name == "canary":
                        shares.append((counted.get(canary.version, 0.0), sum(counted.values())))
                runs[name].append(load)
                # a shadow uses spare capacity only: under a load that keeps the server busy it sees a sample
                copies = (
                    f"  shadow answered {counted.get(shadows[name].version, 0):.0f} of "
                    f"{counted.get(stable.version, 0):.0f} copies"
                    if name in shadows
                    else ""
                )
                print(
                    f"round {round_ + 1} {name:<9} {load.requests_per_second:8.0f} req/s  p50 {load.p50_ms:6.2f} ms"
                    f"  p99 {load.p99_ms:6.2f} ms  non-2xx {load.non_2xx}  other cpu {load.other_cpu:.2f}{copies}",
                    flush=True,
                )

        # sticky callers under load: each meets one version, and both versions are met
        sticky_lua = folder / "sticky.lua"
        sticky_lua.write_text(lua.read_text() + STICKY_LUA)
        port = free_port()
        command = [
            PYTHON,
            "-m",
            "notebook_deploy",
            "--store",
            str(store.root),
            "serve",
            stable.ref,
            "--port",
            str(port),
        ]
        command += ["--no-batch", "--workers", "1", "--canary", f"{canary.ref}=50", "--sticky-header", "X-User"]
        with Running(Launch("shadow-sticky", command, "/predict"), port, folder) as server:
            server.wait_for_prediction(body)
            wait_until_quiet()
            met = sticky_callers(server.url, sticky_lua, args.duration)
    print()
    for caller, versions in met.items():
        print(f"sticky {caller}: " + ", ".join(f"{version} x{count}" for version, count in versions.items()))
    one_each = all(len(versions) == 1 for versions in met.values())
    both = {version for versions in met.values() for version in versions} == {stable.ref, canary.ref}
    print(
        f"sticky callers under load ({STICKY_CALLERS} at once, canary at 50%): each met one version: "
        f"{'PASS' if one_each else 'MISS'}; both versions met: {'PASS' if both else 'MISS'}"
    )

    share = CANARY_PERCENT / 100
    for answered, total in shares:
        spread = 2.5758 * math.sqrt(total * share * (1 - share))  # a 99% interval (normal approximation)
        inside = abs(answered - total * share) <= spread
        print(
            f"\ncanary at {CANARY_PERCENT:g}%: {answered:.0f} of {total:.0f} answers ({answered / total:.2%}); "
            f"99% interval {total * share - spread:.0f} to {total * share + spread:.0f}: {'PASS' if inside else 'MISS'}"
        )
    base = [load.p99_ms for load in runs["none"]]
    low, high = min(base), max(base)
    spread = high - low
    print(f"\nwithout a shadow: p99 {statistics.median(base):.2f} ms (runs from {low:.2f} to {high:.2f} ms)")
    for name in shadows:
        p99s = [load.p99_ms for load in runs[name]]
        median = statistics.median(p99s)
        errors = sum(load.errors for load in runs[name])
        within = median <= high + spread  # no worse than the slowest run without a shadow, plus its spread
        rate = statistics.median(load.requests_per_second for load in runs[name]) / statistics.median(
            load.requests_per_second for load in runs["none"]
        )
        print(
            f"shadow {name:<9} p99 {median:.2f} ms ({median / statistics.median(base):.2f}x), "
            f"req/s {rate:.2f}x, errors {errors}: "
            f"{'PASS' if within and errors == 0 else 'MISS'} (at most the no-shadow runs' highest p99 plus their spread)"
        )


if __name__ == "__main__":
    sys.exit(main())
