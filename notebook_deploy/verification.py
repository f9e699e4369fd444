"""Rebuild a bundle's model from its recipe in a fresh kernel and compare it with the captured one.

The recipe's cells run in a new kernel (this Python, or a fresh virtual environment built from the
bundle's lock) in a scratch folder holding the recipe's data files, checked against their recorded
hashes. A last cell calls the rebuilt model on the stored sample; its outputs must equal the stored
outputs: labels exactly, numbers within a tolerance. The report names the first cell that failed or
the first output that differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import display
from .api import load
from .bundle import LOCK_FILE, RECIPE_FILE, RECIPE_LOCK_FILE, Bundle, file_sha256
from .capturing.fetched import REPLAY_CELL, replay_mapping
from .capturing.recipe import data_file_map
from .cell_errors import failed_cell
from .errors import NotebookDeployError
from .files import file_lock
from .schema import differences, to_jsonable
from .store import Store

# The last cell of a replay. Standard library only, so it runs in a fresh environment too; a plain
# callable serves as predict, as in notebook_deploy.methods.resolve_method.
_OUTPUT_CELL = """\
import pickle as _nd_pickle
with open({input!r}, "rb") as _nd_file:
    _nd_input = _nd_pickle.load(_nd_file)
_nd_model = {target}
_nd_outputs = {{m: (getattr(_nd_model, m) if hasattr(_nd_model, m) else _nd_model)(_nd_input) for m in {methods!r}}}
with open({output!r}, "wb") as _nd_file:
    _nd_pickle.dump(_nd_outputs, _nd_file)
"""


@dataclass
class Verification:
    """The result of ``verify``: true when the recipe rebuilt a model that gives the stored outputs."""

    ref: str
    reproducible: bool
    summary: str
    environment: str
    seconds: float
    failed_cell: int | None = None  # the execution count of the recipe cell that raised
    differences: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.reproducible

    def _rows(self) -> list[tuple[str, str]]:
        rows = [
            ("result", "reproducible" if self.reproducible else "NOT reproducible"),
            ("detail", self.summary),
            ("environment", self.environment),
            ("time", f"{self.seconds:.1f} s"),
        ]
        return rows + [("difference", d) for d in self.differences[1:6]]

    def __str__(self) -> str:
        return display.text_table(f"Verification of {self.ref}", self._rows())

    def _repr_html_(self) -> str:
        return display.html_table(f"Verification of {self.ref}", self._rows())


def verify(
    ref: str | Bundle,
    *,
    fresh_env: bool = False,
    environments: str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    timeout: float = 900,
    store: Store | None = None,
    progress: Callable[[str], None] | None = None,
) -> Verification:
    """Replay the bundle's recipe in a fresh kernel and compare the rebuilt model's outputs on the
    stored sample with the stored outputs. ``fresh_env`` runs the kernel in a new virtual environment
    built from the bundle's lock and the recipe's own requirements; ``environments`` keeps those in a
    folder, one per set of pins, for the next verification with the same pins. Data files come from the bundle when included, else from
    ``data_dir`` or where the notebook read them."""
    import nbformat

    bundle = load(ref, store)
    recipe = bundle.recipe_summary
    if not recipe:
        raise NotebookDeployError(
            f"{bundle.ref} has no recipe to verify: capture it with %deploy in the notebook, or with "
            "notebook_deploy.deploy_notebook(...), so that the cells that built it are kept"
        )
    say = progress or (lambda message: None)
    started = time.monotonic()
    environment = "a fresh virtual environment built from the locks" if fresh_env else "this Python environment"

    def result(ok: bool, summary: str, **extra: Any) -> Verification:
        return Verification(bundle.ref, ok, summary, environment, time.monotonic() - started, **extra)

    with tempfile.TemporaryDirectory(prefix="notebook-deploy-verify-") as scratch_name:
        scratch = Path(scratch_name)
        work = _replay_folder(scratch / "work", recipe)
        work.mkdir(parents=True)
        problem = _place_data(bundle, recipe, work, data_dir)
        if problem:
            return result(False, problem)
        notebook = nbformat.reads((bundle.path / RECIPE_FILE).read_text(), as_version=4)
        with open(scratch / "input.pkl", "wb") as f:
            pickle.dump(bundle.input_schema.decode(bundle.sample["instances"]), f)
        leading = 0
        if recipe.get("fetched"):  # the URLs whose bytes the bundle kept answer from them
            (scratch / "fetched.json").write_text(json.dumps(replay_mapping(bundle.path, recipe["fetched"])))
            notebook.cells.insert(
                0, nbformat.v4.new_code_cell(REPLAY_CELL.format(mapping=str(scratch / "fetched.json")))
            )
            leading = 1
        notebook.cells.append(
            nbformat.v4.new_code_cell(
                _OUTPUT_CELL.format(
                    input=str(scratch / "input.pkl"),
                    output=str(scratch / "output.pkl"),
                    target=recipe["target"],
                    methods=bundle.methods,
                )
            )
        )
        kernel = (
            _fresh_kernel(bundle, scratch, say, Path(environments) if environments else None) if fresh_env else None
        )
        say(f"replaying {len(notebook.cells) - 1} cells in a fresh kernel")
        failure = _execute(notebook, work, kernel, timeout, leading)
        if failure:
            cell, message = failure
            return result(False, message, failed_cell=cell)
        with open(scratch / "output.pkl", "rb") as out:
            rebuilt = to_jsonable(pickle.load(out))
    found = [
        d
        for method in bundle.methods
        for d in differences(bundle.sample["outputs"][method], rebuilt[method], method, rtol, atol)
    ]
    if found:
        return result(False, found[0], differences=found)
    rows = len(bundle.sample["instances"])
    return result(
        True, f"the rebuilt model gives the stored outputs of {', '.join(bundle.methods)} on {rows} sample rows"
    )


def _replay_folder(root: Path, recipe: dict[str, Any]) -> Path:
    """Where the replay runs: ``root`` itself, or a folder under it as deep as the recipe's data files go
    up (``../data/x.csv``), named as the session's folders were, so that the same relative paths reach
    the same files."""
    relative = [Path(f["path"]).parts for f in recipe["files"] if not Path(f["path"]).is_absolute()]
    up = max((next((i for i, part in enumerate(parts) if part != ".."), len(parts)) for parts in relative), default=0)
    session = Path(recipe.get("workdir") or ".").resolve().parts[1:]
    return root.joinpath(*session[len(session) - up :]) if up else root


def _place_data(bundle: Bundle, recipe: dict[str, Any], work: Path, data_dir: str | None) -> str | None:
    """Copy the recipe's data files into ``work`` at their recorded paths; a problem, if any, as text."""
    in_bundle = data_file_map(recipe["files"])
    for data in recipe["files"]:
        relative = not Path(data["path"]).is_absolute()
        candidates = []
        if data["path"] in in_bundle:
            candidates.append(bundle.path / in_bundle[data["path"]])
        if data_dir is not None:
            candidates.append(Path(data_dir, data["path"]))
        candidates.append(Path(recipe.get("workdir", "."), data["path"]) if relative else Path(data["path"]))
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            return f"data file {data['path']} is not available: pass data_dir=, or capture with include_data=True"
        if data["sha256"] and file_sha256(source) != data["sha256"]:
            return f"data file {data['path']} ({source}) changed since capture: its sha256 differs"
        if relative:
            destination = Path(os.path.normpath(work / data["path"]))
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
    return None


def _fresh_kernel(bundle: Bundle, scratch: Path, say: Callable[[str], None], environments: Path | None) -> Any:
    """A kernel manager for a new virtual environment with exactly the bundle's lock and the recipe's own
    requirements installed: in ``scratch``, or kept in ``environments`` under a hash of those pins and
    used again for the same pins (made complete or not at all: a failed install leaves nothing there)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    locks = [bundle.path / name for name in (LOCK_FILE, RECIPE_LOCK_FILE) if (bundle.path / name).is_file()]
    if environments is None:
        venv = scratch / "venv"
        _build_environment(venv, locks, bundle.ref, say)
    else:
        pins = "".join(
            sorted(
                line for lock in locks for line in lock.read_text().splitlines() if line and not line.startswith("#")
            )
        )
        key = hashlib.sha256(f"{sys.version}\n{pins}".encode()).hexdigest()[:16]
        environments.mkdir(parents=True, exist_ok=True)
        venv = environments / key
        with file_lock(environments / f".{key}.lock"):
            if (venv / _COMPLETE).exists():
                say(f"using the environment {venv}, built earlier for the same pins")
            else:
                shutil.rmtree(venv, ignore_errors=True)  # a build that was cut short
                try:
                    _build_environment(venv, locks, bundle.ref, say)
                except BaseException:
                    shutil.rmtree(venv, ignore_errors=True)
                    raise
                (venv / _COMPLETE).touch()
    python = venv / "bin" / "python"
    spec = scratch / "kernels" / "notebook-deploy-verify"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "verify",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(scratch / "kernels")])
    return KernelManager(kernel_name="notebook-deploy-verify", kernel_spec_manager=specs)


_COMPLETE = ".notebook-deploy-complete"  # written last into a kept environment: every pin is installed


def _build_environment(venv: Path, locks: list[Path], ref: str, say: Callable[[str], None]) -> None:
    say(f"creating a virtual environment from {' and '.join(lock.name for lock in locks)}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    requirements = [argument for lock in locks for argument in ("-r", str(lock))]
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements, "ipykernel"],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        raise NotebookDeployError(
            f"installing {' and '.join(lock.name for lock in locks)} of {ref} failed:\n{install.stderr[-3000:]}"
        )


def _execute(notebook: Any, work: Path, kernel: Any, timeout: float, leading: int) -> tuple[int | None, str] | None:
    """Run the notebook; on an error, the execution count of the failing recipe cell and what failed where.
    The first ``leading`` cells and the last are the replay's own, not the recipe's."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    options: dict[str, Any] = {"timeout": timeout, "resources": {"metadata": {"path": str(work)}}}
    client = (
        NotebookClient(notebook, km=kernel, **options)
        if kernel is not None
        else NotebookClient(notebook, kernel_name="python3", **options)
    )
    try:
        client.execute()
    except CellExecutionError as error:
        failed = failed_cell(notebook)
        if failed is None or failed.index == len(notebook.cells) - 1:
            return None, f"the output check raised {failed.error if failed else f'{error.ename}: {error.evalue}'}"
        if failed.index < leading:
            return None, f"answering the fetched URLs from the bundle's kept bytes raised {failed.error}"
        count = notebook.cells[failed.index].metadata.get("notebook_deploy", {}).get("execution_count")
        number = failed.code_cell - leading
        return count, f"cell [{count}] (code cell {number} of the recipe){failed.where()} raised {failed.error}"
    finally:
        if kernel is not None and kernel.has_kernel:  # nbclient leaves a kernel it was handed running
            kernel.shutdown_kernel(now=True)
    return None
