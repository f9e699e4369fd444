"""Run as a script in a fresh interpreter: load a stored model (a pickle, or pretrained.json), call its methods on a sample, and report
every module that loaded and the outputs (the MLflow approach to finding what a model really needs).

Usage: python -m notebook_deploy.capturing.probe MODEL_FILE INPUT_PICKLE METHODS_JSON BLOCKED_JSON REPORT_DIR
(as a module, not a script path: a script's folder would go first on sys.path and its neighbours, such
as secrets.py, would shadow the standard library)

BLOCKED_JSON lists top-level module names whose import must fail, so that packages a library merely
tries to import when present (pandas from scikit-learn, for one) can be shown not to be needed.
Only the standard library, notebook_deploy.methods, .errors, .pretrained and .weights (which import
nothing else) load before the first
snapshot of ``sys.modules``, so that everything loaded afterwards is the model's own doing.

The warm probe server (``warm.py``) runs the same ``block`` and ``run_job`` in a child it forks, so the
two paths cannot drift apart.
"""

import importlib.abc
import json
import pickle
import sys
from collections.abc import Mapping

# Imported before any blocker is installed: where notebook-deploy is an installed distribution (not on
# PYTHONPATH) the blocked list names it too, and a later import of it would fail in every probe.
from notebook_deploy.methods import resolve_method
from notebook_deploy.pretrained import load_model


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: set) -> None:
        self.blocked = blocked

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - the finder protocol
        if name.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the notebook-deploy probe)", name=name)
        return None


def block(blocked: list[str]) -> None:
    """Make every import of the ``blocked`` top-level modules fail from now on."""
    sys.meta_path.insert(0, _Blocker(set(blocked)))


def run_job(
    model_path: str,
    input_path: str,
    methods: list[str],
    report_dir: str,
    preloaded: Mapping[str, str | None] | None = None,
) -> None:
    """Load the model and the input, call ``methods``, and write modules.json and outputs.pkl.

    ``preloaded`` (module → file) are modules that were imported before, on the model's behalf (the warm
    server's preload): they are in ``sys.modules`` already, so the snapshot cannot see them load, and they
    are reported as loaded."""
    before = set(sys.modules)
    model = load_model(model_path)
    with open(input_path, "rb") as f:
        data = pickle.load(f)
    outputs = {name: resolve_method(model, name)(data) for name in methods}
    loaded = sorted(set(sys.modules) - before)
    report = dict(preloaded or {})
    report.update({name: getattr(sys.modules[name], "__file__", None) for name in loaded if name in sys.modules})
    with open(f"{report_dir}/modules.json", "w") as f:
        json.dump(report, f)
    with open(f"{report_dir}/outputs.pkl", "wb") as f:
        pickle.dump(outputs, f, protocol=5)


def main(model_path: str, input_path: str, methods_json: str, blocked_json: str, report_dir: str) -> None:
    block(json.loads(blocked_json))
    run_job(model_path, input_path, json.loads(methods_json), report_dir)


if __name__ == "__main__":
    main(*sys.argv[1:6])
