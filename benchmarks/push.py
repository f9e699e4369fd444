"""Pushing a scikit-learn bundle's image without a daemon: time and bytes, side by side in one run.

Prints: the first push (time, bytes uploaded); re-pushes after a model-only change (the median time of
three changes, and bytes uploaded, next to the median time of building and uploading each one's bundle
layer alone with the registry client, and the targets of issue 15: <= 3 s and <= 2x that upload); a push of the unchanged image again (target <= 2 s);
and the image's size next to the image `docker build` makes from
the generated build context (`containerize`) on the same base. It starts its own registry, Docker
daemon and Debian Python base with the test suite's helpers (run scripts/install-test-deps.sh first).
Run: .venv/bin/python benchmarks/push.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from containers import DockerDaemon, push_python_base  # noqa: E402
from registries import Registry as LocalRegistry  # noqa: E402

import notebook_deploy as nd  # noqa: E402
from notebook_deploy.display import human_size  # noqa: E402
from notebook_deploy.image.build import BUNDLE_DIR  # noqa: E402
from notebook_deploy.image.context import containerize  # noqa: E402
from notebook_deploy.image.layers import Entry, build_layer  # noqa: E402
from notebook_deploy.image.registry import Blob, Registry  # noqa: E402

REPUSHES = 3  # model-only changes re-pushed; their median time is the one compared


def main() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((2000, 8)), rng.integers(0, 2, 2000)
    with (
        tempfile.TemporaryDirectory() as scratch,
        LocalRegistry("none", Path(scratch) / "registry") as registry,
        DockerDaemon() as docker,
    ):
        store = nd.Store(Path(scratch) / "store")  # its own layer cache too: the first push builds every layer
        base = push_python_base(registry.host)
        first = nd.capture(
            RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y), name="forest", sample=X[:5], store=store
        )
        started = time.perf_counter()
        pushed = nd.push(first, f"{registry.host}/models/forest:1", base=base, backend="daemonless", store=store)
        first_seconds = time.perf_counter() - started

        # Three model-only changes, each re-pushed, then the same bundle's layer built and uploaded alone to a
        # repository that has nothing (the floor); the medians are compared, as one push of a quarter of a
        # second is at the mercy of a busy machine.
        client = Registry(registry.host, scheme="http", credentials=None)
        repushes, alones, bundle_layers = [], [], []
        for change in range(REPUSHES):
            second = nd.capture(
                RandomForestClassifier(n_estimators=60 + change, random_state=1).fit(X, y),
                name="forest",
                sample=X[:5],
                store=store,
            )
            started = time.perf_counter()
            repushed = nd.push(
                second, f"{registry.host}/models/forest:{change + 2}", base=base, backend="daemonless", store=store
            )
            repushes.append(time.perf_counter() - started)
            bundle_layers.append(max(repushed.sizes[d] for d, what in repushed.blobs.items() if what == "uploaded"))
            started = time.perf_counter()
            layer = build_layer(
                [Entry(f"{BUNDLE_DIR}/{f.name}", f) for f in sorted(second.path.iterdir())],
                Path(scratch) / f"alone-{change}.tgz",
            )
            client.push_blob(f"models/upload-only-{change}", Blob(layer.digest, layer.size, path=layer.path))
            alones.append(time.perf_counter() - started)
        second_seconds, alone_seconds = statistics.median(repushes), statistics.median(alones)
        bundle_layer = bundle_layers[-1]

        started = time.perf_counter()
        unchanged = nd.push(
            second, f"{registry.host}/models/forest:{REPUSHES + 1}-again", base=base, backend="daemonless", store=store
        )
        unchanged_seconds = time.perf_counter() - started

        image = f"{registry.host}/models/forest:1"
        docker.docker("pull", image)
        pushed_size = int(docker.docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
        context = containerize(first, Path(scratch) / "context", base=base)
        started = time.perf_counter()
        docker.docker("build", "--network", "host", "-t", "models/forest:dockerfile", str(context))
        build_seconds = time.perf_counter() - started
        built_size = int(docker.docker("image", "inspect", "--format", "{{.Size}}", "models/forest:dockerfile").stdout)

    print(
        f"first push (base mounted, 3 layers + config): {first_seconds:7.2f} s  {human_size(pushed.uploaded_bytes):>10} uploaded"
    )
    print(
        f"re-push after a model-only change (median of {REPUSHES}): {second_seconds:5.2f} s  {human_size(repushed.uploaded_bytes):>10} uploaded"
        f"  (bundle layer {human_size(bundle_layer)}; ratio {repushed.uploaded_bytes / bundle_layer:.2f})"
    )
    print(f"the bundle layer built and uploaded alone:     {alone_seconds:7.2f} s  (median of {REPUSHES})")
    print(
        f"  each re-push: {', '.join(f'{t:.2f}' for t in repushes)} s; each layer alone: {', '.join(f'{t:.2f}' for t in alones)} s"
    )
    print(
        f"push of the unchanged image again:             {unchanged_seconds:7.2f} s  "
        f"{human_size(unchanged.uploaded_bytes):>10} uploaded"
    )
    for what, measured, target in (
        ("re-push after a model-only change <= 3 s", second_seconds, 3.0),
        ("re-push <= 2x the bundle layer alone", second_seconds / alone_seconds, 2.0),
        ("unchanged push <= 2 s", unchanged_seconds, 2.0),
    ):
        print(f"  {what:<45} {measured:7.2f}  {'PASS' if measured <= target else 'MISS'}")
    print(f"image size, daemonless push:                   {human_size(pushed_size):>20}")
    print(
        f"image size, docker build of the context:       {human_size(built_size):>20}  ({build_seconds:.1f} s to build;"
        f" ratio {pushed_size / built_size:.2f})"
    )
    print(
        json.dumps(
            {
                "first_push_s": round(first_seconds, 2),
                "first_push_bytes": pushed.uploaded_bytes,
                "repush_s": round(second_seconds, 2),
                "repush_bytes": repushed.uploaded_bytes,
                "bundle_layer_alone_s": round(alone_seconds, 2),
                "unchanged_push_s": round(unchanged_seconds, 2),
                "bundle_layer_bytes": bundle_layer,
                "image_bytes": pushed_size,
                "dockerfile_image_bytes": built_size,
            }
        )
    )


if __name__ == "__main__":
    main()
