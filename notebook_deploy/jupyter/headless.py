"""Run a notebook headless and capture a model from its kernel, with the recipe of what ran."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..bundle import Bundle
from ..errors import CaptureError
from ..store import Store

_CAPTURE_CELL = """\
import json as _nd_json
from notebook_deploy.jupyter.extension import deploy_from_kernel as _nd_deploy
_nd_bundle, _nd_notes = _nd_deploy(get_ipython(), {variable!r}, name={name!r}, sample={sample!r},
                                   include_data={include_data!r}, allow_secrets={allow_secrets!r}, store={store!r})
with open({result!r}, "w") as _nd_file:
    _nd_json.dump({{"path": str(_nd_bundle.path), "notes": _nd_notes}}, _nd_file)
"""


def deploy_notebook(
    path: str | os.PathLike[str],
    model: str,
    *,
    name: str | None = None,
    sample: str | None = None,
    include_data: bool = False,
    allow_secrets: bool = False,
    store: Store | str | os.PathLike[str] | None = None,
    timeout: float = 900,
    kernel_name: str = "python3",
) -> Bundle:
    """Execute the notebook at ``path`` top to bottom in a fresh kernel (in its own folder), then
    capture the variable ``model`` from that kernel with its recipe, as ``%deploy`` would."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    store = store if isinstance(store, Store) else Store(store)
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-run-") as scratch:
        result = Path(scratch, "result.json")
        notebook.cells.insert(0, nbformat.v4.new_code_cell("%load_ext notebook_deploy"))
        notebook.cells.append(nbformat.v4.new_code_cell(_CAPTURE_CELL.format(
            variable=model, name=name, sample=sample, include_data=include_data,
            allow_secrets=allow_secrets, store=str(store.root), result=str(result),
        )))
        client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name,
                                resources={"metadata": {"path": str(path.resolve().parent)}})
        try:
            # JPY_SESSION_NAME, as Jupyter sets it for a notebook's kernel: the bundle's provenance names the notebook
            client.execute(env={**os.environ, "JPY_SESSION_NAME": str(path.resolve())})
        except CellExecutionError as error:
            failed = next((i for i, c in enumerate(notebook.cells)
                           if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
            where = "the capture" if failed == len(notebook.cells) - 1 else f"code cell {failed} of {path.name}"
            raise CaptureError(f"{where} failed: {error.ename}: {error.evalue}") from None
        return Bundle.open(json.loads(result.read_text())["path"])
