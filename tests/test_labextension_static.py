"""Static checks of the JupyterLab extension, run with the tests so that CI runs them: ``tsc --noEmit``
(``tsconfig.json``), eslint (``eslint.config.mjs``: typescript-eslint's recommended rules) and prettier's
check (``.prettierrc``), in ``labextension/``; and the TypeScript types of the REST resources
(``labextension/src/types.ts``) checked against what the Python side really answers: real resources,
built the way the server extension's handlers build them, are written into a generated ``.ts`` file as
typed constants and compiled with ``tsc`` (an object literal gets excess-property checks, so a field
Python adds, drops, renames or retypes fails it).

The node modules are installed here with ``jlpm install`` once a session (``jlpm`` comes with JupyterLab,
installed by ``pip install -e '.[test]'``; node and the npm registry are needed, as for ``tests/test_ui.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from node import LABEXTENSION, jlpm, jlpm_install
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import notebook_deploy as nd
from notebook_deploy.compare import compare
from notebook_deploy.jupyter.server import predict_answer
from notebook_deploy.serving.deployment import Deployment
from notebook_deploy.serving.process import Server
from notebook_deploy.serving.watch import Monitor
from notebook_deploy.tasks import Task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``labextension/node_modules`` as ``yarn.lock`` says: ``jlpm install`` once a session (about two
    seconds when nothing changed; the first run on a fresh machine downloads the packages)."""
    jlpm_install()
    return LABEXTENSION / "node_modules"


@pytest.mark.parametrize("script", ["typecheck", "lint:check", "prettier:check"])
def test_labextension_static_check_passes(node_modules: Path, script: str) -> None:
    found = jlpm([script])
    assert found.returncode == 0, f"jlpm {script} failed:\n{(found.stdout + found.stderr)[-6000:]}"


# -- the REST resources' TypeScript types against the Python shapes -----------------------------------

TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "skipLibCheck": True,
        "exactOptionalPropertyTypes": False,
        "module": "esnext",
        "moduleResolution": "node",
        "target": "ES2018",
        "lib": ["ES2018"],
        "types": [],
    },
}


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory, pipeline: Any, customers: Any) -> dict[str, Any]:
    """One real resource of each type ``src/types.ts`` exports, as the handlers of
    ``notebook_deploy/jupyter/server.py`` answer it (the same store, server and task methods)."""
    frame, target = customers
    store = nd.Store(tmp_path_factory.mktemp("ts-store"))
    bundle = nd.capture(pipeline, name="customers", sample=frame.head(), reference=frame, store=store)
    store.tag(bundle.ref, "prod")
    summaries = store.summaries()  # GET bundles
    details = store.details(bundle.ref)  # GET bundles/{name}/{version}
    # A Server as Servers.start makes it, around a real (idle) child process: GET/POST/DELETE servers
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        server = Server(Deployment((bundle,)), process, "http://127.0.0.1:8123", tmp_path_factory.mktemp("server"))
        server_dict = server.to_dict()
        monitored = Monitor(server).charts()  # GET servers/{id}/monitor answers refresh(), i.e. charts()
    finally:
        process.kill()
        process.wait()
    push = Task("push", bundle.ref, "localhost:5000/customers:1")  # what Tasks.push answers at first
    push.layer("sha256:" + "ab" * 32, 10, 100)
    push.result = {"image": "localhost:5000/customers:1", "digest": "sha256:" + "cd" * 32}
    push.state, push.finished = "succeeded", push.started
    verify = Task("verify", bundle.ref)
    answer = requests.Response()  # the model server's answer, as Server.post returns it
    answer.status_code, answer._content = 200, json.dumps({"predictions": [0, 1]}).encode()
    comparison = compare(bundle.ref, _without_income(frame, target, store).ref, store=store)  # GET compare&measure=1
    compared = comparison.to_dict()
    # the lock of both is this venv's: a changed pin, as to_dict writes one, for its type
    comparison.lock_changed = [("scikit-learn", "1.6.1", "1.7.2")]
    return {
        "IBundleSummary": summaries[0],
        "IDamagedVersion": {"name": "customers", "version": "0000", "path": "/s/customers/0000", "reason": "bad"},
        "IVersionSummary": summaries[0]["versions"][0],
        "IBundleDetails": details,
        "IRecipeCell": {"source": "clf.fit(X, y)", "execution_count": 3},
        "IServer": server_dict,
        "IPredictAnswer": predict_answer(answer),
        "IMonitorAnswer": monitored,
        "ITask": push.to_dict(),
        "ITask_verify": verify.to_dict(),
        "ITaskLayer": push.to_dict()["layers"][0],
        "IComparison": compared,
        "IComparison_lock": comparison.to_dict(),
        "ISchemaChange": compared["schema"][0],
        "IReplay": compared["sample"],
        "IMethodReplay": compared["sample"]["methods"]["predict"],
        "IDisagreement": compared["sample"]["worst"][0],
        "ILatencies": compared["sample"]["methods"]["predict"]["candidate_ms"],
        "IFootprint": compared["footprints"]["new"],
        "ILockChange": comparison.to_dict()["lock"]["changed"][0],
    }


def _without_income(frame: Any, target: Any, store: nd.Store) -> nd.Bundle:
    """A newer version of ``customers`` that no longer reads ``income``: a breaking change, other answers."""
    preprocess = ColumnTransformer(
        [("num", StandardScaler(), ["age"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    model = make_pipeline(preprocess, LogisticRegression(C=0.01)).fit(frame[["age", "city"]], target)
    return nd.capture(model, name="customers", sample=frame[["age", "city"]].head(), store=store)


def _check_types(folder: Path, resources: dict[str, Any], node_modules: Path) -> subprocess.CompletedProcess[str]:
    """Write ``const NAME: TYPE = <json>;`` for each resource next to a copy of ``types.ts`` and run tsc."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(LABEXTENSION / "src" / "types.ts", folder / "types.ts")
    types = sorted({name.split("_")[0] for name in resources})
    lines = [f"import type {{ {', '.join(types)} }} from './types';", ""]
    for name, value in resources.items():
        lines.append(f"export const {name.lower()}: {name.split('_')[0]} = {json.dumps(value, indent=2)};")
    (folder / "resources.ts").write_text("\n".join(lines) + "\n")
    (folder / "tsconfig.json").write_text(json.dumps({**TSCONFIG, "files": ["resources.ts", "types.ts"]}))
    tsc = node_modules / "typescript" / "bin" / "tsc"
    return subprocess.run(
        ["node", str(tsc), "-p", str(folder / "tsconfig.json")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_rest_types_match_the_python_resources(
    tmp_path: Path, resources: dict[str, Any], node_modules: Path
) -> None:
    missing = set(_exported_interfaces()) - {name.split("_")[0] for name in resources}
    assert not missing, f"no Python resource checked against {sorted(missing)}: add one to resources()"
    found = _check_types(tmp_path / "real", resources, node_modules)
    assert found.returncode == 0, f"src/types.ts does not fit what Python answers:\n{found.stdout}{found.stderr}"

    # The check can fail: a required key dropped, a key added, and a type changed are each named by tsc.
    comparison = resources["IComparison"]
    assert comparison["breaking"] and comparison["schema"][0]["breaking"], comparison["schema"]  # what was checked
    assert comparison["sample"]["worst"] and comparison["footprints"], comparison
    mutated = json.loads(json.dumps(resources))
    del mutated["IServer"]["docs_url"]
    mutated["IVersionSummary"]["size_bytes"] = mutated["IVersionSummary"].pop("size")
    mutated["ITask"]["progress"] = "10%"
    mutated["IComparison"]["sizes"]["older"] = mutated["IComparison"]["sizes"].pop("old")
    found = _check_types(tmp_path / "mutated", mutated, node_modules)
    assert found.returncode != 0
    assert "'docs_url' is missing" in found.stdout, found.stdout
    assert '"size_bytes"' in found.stdout, found.stdout
    assert "'string' is not assignable to type 'number'" in found.stdout, found.stdout
    assert '"older"' in found.stdout, found.stdout


def _exported_interfaces() -> list[str]:
    source = (LABEXTENSION / "src" / "types.ts").read_text()
    return re.findall(r"^export interface (\w+)", source, flags=re.M)
