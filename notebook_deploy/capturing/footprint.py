"""What serving a bundle costs, measured in a fresh interpreter: start, latency, peak memory.

Usage: python -m notebook_deploy.capturing.footprint BUNDLE_DIR [CALLS]

Prints one JSON object: ``start_seconds`` (open the bundle, check its files, unpickle, answer the first
sample row: what a server does before its first answer; the interpreter's start and notebook-deploy's
own imports, the same for every version, are left out), ``latency_ms``
(p50 and p99 of CALLS single-row answers, the sample's rows in turn, through the bundle's request
schema) and ``peak_rss_bytes`` (the process's peak resident memory). A fresh process per version, so
one version's imports and caches do not flatter the other's (``compare`` runs it).
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import NotebookDeployError


def measure(bundle_dir: str | Path, calls: int = 50, timeout: float = 300) -> dict[str, Any]:
    """Run this module on ``bundle_dir`` in a fresh Python and return what it printed."""
    command = [sys.executable, "-m", __name__, str(bundle_dir), str(calls)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NotebookDeployError(f"measuring {bundle_dir} took over {timeout:.0f} s") from None
    if result.returncode != 0:
        raise NotebookDeployError(
            f"the bundle {bundle_dir} could not be loaded and called in a fresh Python: "
            + (result.stderr.strip().splitlines() or ["no message"])[-1]
        )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def main(bundle_dir: str, calls: int) -> None:
    from ..bundle import Bundle
    from ..methods import resolve_method

    started = time.perf_counter()
    bundle = Bundle.open(bundle_dir)
    schema = bundle.input_schema
    call = resolve_method(bundle.model, bundle.methods[0])
    rows = bundle.sample["instances"]
    call(schema.decode(rows[:1]))
    start = time.perf_counter() - started
    seconds = []
    for i in range(calls):
        began = time.perf_counter()
        call(schema.decode([rows[i % len(rows)]]))
        seconds.append(time.perf_counter() - began)
    print(json.dumps({"start_seconds": start, "latency_ms": latency_ms(seconds), "peak_rss_bytes": peak_rss()}))


def latency_ms(seconds: list[float]) -> dict[str, float]:
    """p50 and p99 of call times given in seconds, in milliseconds to the microsecond (p99: the smallest
    time at least 99% of the calls took no longer than)."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {"p50": round(statistics.median(ordered) * 1000, 3), "p99": round(p99 * 1000, 3)}


def peak_rss() -> int:
    """This process's peak resident memory in bytes. Linux's VmHWM, which starts afresh at exec; not
    getrusage's ru_maxrss, which keeps the parent's peak across fork and exec (so a small child of a
    large parent would report the parent's size)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux, the fallback elsewhere


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50)
