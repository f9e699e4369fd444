"""Run a notebook headless and capture a model from its kernel, with the recipe of what ran."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..bundle import Bundle
from ..cell_errors import failed_cell
from ..errors import CaptureError
from ..store import Store

_CAPTURE_CELL = """\
import json as _nd_json
from notebook_deploy.jupyter.variable import deploy_from_kernel as _nd_deploy
_nd_bundle, _nd_notes = _nd_deploy(get_ipython(), {variable!r}, name={name!r}, sample={sample!r},
                                   include_data={include_data!r}, reference_data={reference_data!r},
                                   keep_fetched={keep_fetched!r},
                                   allow_secrets={allow_secrets!r}, store={store!r})
with open({result!r}, "w") as _nd_file:
    _nd_json.dump({{"path": str(_nd_bundle.path), "notes": _nd_notes}}, _nd_file)
"""


def deploy_notebook(
    path: str | os.PathLike[str],
    model: str,
    *,
    name: str | None = None,
    sample: str | None = None,
    include_data: bool | int = True,
    reference_data: bool = False,
    keep_fetched: bool = False,
    allow_secrets: bool = False,
    store: Store | str | os.PathLike[str] | None = None,
    timeout: float = 900,
    kernel_name: str = "python3",
) -> Bundle:
    """Execute the notebook at ``path`` top to bottom in a fresh kernel (in its own folder), then
    capture the variable ``model`` from that kernel with its recipe, as ``%deploy`` would (data files
    copied up to 10 MiB each; ``reference_data`` records larger ones by path and sha256; ``keep_fetched``
    keeps the bytes of the URLs it fetched)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    store = store if isinstance(store, Store) else Store(store)
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-run-") as scratch:
        result = Path(scratch, "result.json")
        notebook.cells.insert(0, nbformat.v4.new_code_cell("%load_ext notebook_deploy"))
        notebook.cells.append(
            nbformat.v4.new_code_cell(
                _CAPTURE_CELL.format(
                    variable=model,
                    name=name,
                    sample=sample,
                    include_data=include_data,
                    reference_data=reference_data,
                    keep_fetched=keep_fetched,
                    allow_secrets=allow_secrets,
                    store=str(store.root),
                    result=str(result),
                )
            )
        )
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name=kernel_name,
            resources={"metadata": {"path": str(path.resolve().parent)}},
        )
        saved_counts = [c.get("execution_count") for c in notebook.cells if c.cell_type == "code"]
        try:
            # JPY_SESSION_NAME, as Jupyter sets it for a notebook's kernel: the bundle's provenance names the notebook
            client.execute(env={**os.environ, "JPY_SESSION_NAME": str(path.resolve())})
        except CellExecutionError as error:
            raise CaptureError(_failure(notebook, saved_counts, path.name, error)) from None
        return Bundle.open(json.loads(result.read_text())["path"])


def _failure(notebook: Any, saved_counts: list[int | None], name: str, error: Any) -> str:
    """What failed in a headless run, named as the notebook shows it: code cell, saved execution count, line.
    The first code cell (``%load_ext``) and the last (the capture) are ours, not the notebook's."""
    failed = failed_cell(notebook)
    if failed is None:
        return f"running {name} failed: {error.ename}: {error.evalue}"
    if failed.index == len(notebook.cells) - 1:
        return f"the capture failed: {failed.error}"
    number = failed.code_cell - 1  # the %load_ext cell in front is not the notebook's
    count = saved_counts[failed.code_cell - 1]
    shown = f" (saved as [{count}])" if count is not None else " (not run when last saved)"
    return f"code cell {number}{shown} of {name} failed{failed.where()}: {failed.error}"
