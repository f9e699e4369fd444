"""A model with 100 MB of weights captured, served and pushed: how far each step's peak memory grows.

Issue 17's target: no step grows its process's peak memory by more than the weights' size once. Each
step runs in a fresh interpreter that first sets up what it needs (the live model, for a capture), then
resets its peak (``/proc/self/clear_refs``), runs the step and reports how far ``VmHWM`` rose above the
memory it held before. Side by side, in the same kind of process, the raw baselines: pickling the model
into memory with cloudpickle (how a bundle held it before weights.safetensors) and ``torch.save`` to a
file. The server is measured as its whole process against a server of a torch model with the same lock,
the same input and output widths (so the same sample, OpenAPI example and drift reference) and tiny
weights: the difference is what the weights cost. The push goes to a local registry started here (tests/registries.py) on the Debian Python base
(tests/containers.py); its dependency layer (torch) is built once first with the thin model, so the
measured push builds and uploads the bundle layer.

Run: .venv/bin/python benchmarks/weights_memory.py   (Linux only: it reads /proc)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from containers import push_python_base  # noqa: E402
from registries import Registry as LocalRegistry  # noqa: E402

WIDTH = 2500  # four 2500x2500 float32 matrices: 100 MB
LAYERS = 4

SETUP = f"""
import os, sys, torch, notebook_deploy as nd
torch.manual_seed(0)
def make(width, layers):
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)]).eval()
def thin(width):  # the same input and output widths as make(width, ...), through one unit
    return torch.nn.Sequential(torch.nn.Linear(width, 1, bias=False), torch.nn.Linear(1, width, bias=False)).eval()
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
def measure(step):
    open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
    before = kib("VmRSS")
    step()
    print((kib("VmHWM") - before) * 1024)
WIDTH, LAYERS = {WIDTH}, {LAYERS}
"""


def grown(step: str, *args: str) -> int:
    """Bytes the peak resident memory of a fresh interpreter grew by while it ran ``step``."""
    code = SETUP + textwrap.dedent(step)
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return int(result.stdout.strip().splitlines()[-1])


def server_peak(code: str, *args: str) -> int:
    """VmHWM in bytes of a server started by ``code`` (which prints its pid and waits on stdin)."""
    process = subprocess.Popen(
        [sys.executable, "-c", SETUP + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    pid = int(process.stdout.readline())
    peak = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM:"))
    process.stdin.close()
    process.wait(timeout=120)
    return peak * 1024


def main() -> None:
    weights = WIDTH * WIDTH * LAYERS * 4
    with tempfile.TemporaryDirectory() as scratch, LocalRegistry("none", Path(scratch) / "registry") as registry:
        store = str(Path(scratch) / "store")
        rows = "torch.randn(3, WIDTH)"
        capture = grown(
            f"""
            model = make(WIDTH, LAYERS)
            measure(lambda: nd.capture(model, name="big", sample={rows}, store=sys.argv[1]))
            """,
            store,
        )
        grown(f"nd.capture(thin(WIDTH), name='thin', sample={rows}, store=sys.argv[1]); print(0)", store)
        cloudpickled = grown(
            """
            import cloudpickle
            model = make(WIDTH, LAYERS)
            measure(lambda: cloudpickle.dumps(model))
            """
        )
        saved = grown(
            """
            model = make(WIDTH, LAYERS)
            measure(lambda: torch.save(model.state_dict(), sys.argv[1]))
            """,
            str(Path(scratch) / "state.pt"),
        )
        raw_served = grown(
            """
            import gc, safetensors.torch
            safetensors.torch.save_file(make(WIDTH, LAYERS).state_dict(), sys.argv[1])
            gc.collect()
            def load_and_predict():
                model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH, bias=False, device="meta") for _ in range(LAYERS)])
                model.load_state_dict(safetensors.torch.load_file(sys.argv[1]), assign=True)
                with torch.no_grad():
                    model(torch.zeros(1, WIDTH))
            measure(load_and_predict)
            """,
            str(Path(scratch) / "weights.safetensors"),
        )
        raw_loaded = grown(  # the file the step above wrote
            """
            import safetensors.torch
            measure(lambda: safetensors.torch.load_file(sys.argv[1]))
            """,
            str(Path(scratch) / "weights.safetensors"),
        )
        serve_code = """
            server = nd.serve(sys.argv[2], store=sys.argv[1])
            server.predict(__import__("numpy").zeros((1, int(sys.argv[3])), dtype="float32"))
            print(server.pid, flush=True)
            sys.stdin.read()
            server.stop()
            """
        served_big = server_peak(serve_code, store, "big", str(WIDTH))
        served_thin = server_peak(serve_code, store, "thin", str(WIDTH))

        base = push_python_base(registry.host)
        push_code = """
            measure(lambda: nd.push(sys.argv[2], sys.argv[3], base=sys.argv[4], backend="daemonless", store=sys.argv[1]))
            """
        grown(push_code, store, "thin", f"{registry.host}/models/thin:1", base)  # builds the torch layer once
        pushed = grown(push_code, store, "big", f"{registry.host}/models/big:1", base)

    def line(what: str, size: int) -> str:
        return f"{what:<52} {size / 2**20:8.1f} MiB  {size / weights:5.2f}x the weights"

    print(f"weights: {weights / 2**20:.1f} MiB ({LAYERS} x {WIDTH}x{WIDTH} float32)")
    print(line("capture (nd.capture of the live model)", capture))
    print(line("  baseline: cloudpickle.dumps of the model", cloudpickled))
    print(line("  baseline: torch.save(state_dict) to a file", saved))
    print(line("serve (server's peak over a thin model's server)", served_big - served_thin))
    extra = served_big - served_thin - weights
    print(f"  of which beyond the weights held once: {extra / 2**20:+.1f} MiB (torch's working memory, buffers)")
    print(line("  baseline: safetensors load_file + one forward pass", raw_served))
    print(line("  baseline: safetensors load_file alone (mapped, not read)", raw_loaded))
    print(line("push (daemonless, the bundle layer built and sent)", pushed))
    worst = max(capture, served_big - served_thin, pushed) / weights
    over = (max(capture, served_big - served_thin, pushed) - weights) / 2**20
    print(
        f"target: each step <= 1.00x the weights; worst {worst:.3f}x: {'PASS' if worst <= 1 else f'MISS by {over:.1f} MiB'}"
    )
    beyond = (served_big - served_thin - raw_served) / 2**20
    print(f"serve against a bare safetensors load and one forward pass of the same weights: {beyond:+.1f} MiB")
    forward = (raw_served - raw_loaded) / 2**20
    print(
        f"the bare model's first forward pass adds {forward:+.1f} MiB to its load: load_file maps the file and the"
        " pass reads its pages in (a server runs its sample once before it is ready, so it holds them too)"
    )


if __name__ == "__main__":
    main()
