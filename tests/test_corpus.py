"""Capture on real notebooks nobody here wrote: the corpus in tests/corpus/ (books' and libraries' galleries,
vendored with their licences; SOURCES.md lists them and every patch).

For each notebook, as a new user would: ``deploy_notebook`` without a sample, then the served model's
predictions on the notebook's own inputs must equal the notebook's own predictions (or, where the notebook
computes none, the captured outputs), ``verify`` must rebuild the model where the notebook is seeded, and
``verify --fresh-env`` must too for the cases marked so. Each case's results go to test-output/corpus/, from
which tests/corpus/table.py renders the table in docs/guide.md.

Fresh environments are kept in the tests' cache under a hash of their pins (``verify(environments=)``),
so cases with the same pins share one and a second run installs nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from venvs import CACHE

import notebook_deploy as nd
from notebook_deploy.schema import to_jsonable

CORPUS = Path(__file__).parent / "corpus"
CASES = json.loads((CORPUS / "cases.json").read_text())
RESULTS = Path(__file__).parent.parent / "test-output" / "corpus"

_OWN_CELL = """\
import pickle as _corpus_pickle
with open({path!r}, "wb") as _corpus_file:
    _corpus_pickle.dump({{"input": {input}, "output": {output}}}, _corpus_file)
"""


def _copy(case: dict[str, Any], tmp_path: Path) -> Path:
    """The case's source folder copied out of the repository (notebooks write plots and files beside
    them), with one cell appended that saves the notebook's own inputs and predictions, when it has them."""
    top = Path(case["notebook"]).parts[0]
    shutil.copytree(CORPUS / top, tmp_path / top)
    notebook_path = tmp_path / case["notebook"]
    if case.get("own"):
        notebook = nbformat.read(notebook_path, as_version=4)
        notebook.cells.append(
            nbformat.v4.new_code_cell(
                _OWN_CELL.format(
                    path=str(tmp_path / "own.pkl"), input=case["own"]["input"], output=case["own"]["output"]
                )
            )
        )
        nbformat.write(notebook, notebook_path)
    return notebook_path


def _same(served: Any, own: Any) -> bool:
    served, own = to_jsonable(served), to_jsonable(own)
    try:
        return bool(np.allclose(np.asarray(served, dtype=float), np.asarray(own, dtype=float), rtol=1e-6, atol=1e-9))
    except (TypeError, ValueError):
        return served == own


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_a_real_notebook_is_captured_served_and_rebuilt(
    case: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    monkeypatch.setenv("MPLBACKEND", "Agg")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"id": case["id"], "notebook": case["notebook"], "model": case["model"]}
    (RESULTS / f"{case['id']}.json").write_text(json.dumps(result))

    def record(**found: Any) -> None:
        result.update(found)
        (RESULTS / f"{case['id']}.json").write_text(json.dumps(result, indent=1))

    store = nd.Store(tmp_path / "store")
    notebook = _copy(case, tmp_path)
    bundle = nd.deploy_notebook(notebook, case["model"], store=store)
    recipe = bundle.manifest["recipe"]
    code_cells = sum(1 for c in nbformat.read(CORPUS / case["notebook"], as_version=4).cells if c.cell_type == "code")
    record(
        deploy="ok",
        sample=bundle.manifest["sample"]["source"],
        cells=code_cells,
        kept=len(recipe["executions"]),
        data=[f["path"] for f in recipe["files"]],
        recipe_requirements=len(recipe["requirements"]),
    )
    assert bundle.manifest["sample"]["source"], "no sample was found"

    with nd.serve(bundle, store=store) as server:
        if case.get("own"):
            with open(tmp_path / "own.pkl", "rb") as f:
                own = pickle.load(f)
            served = server.predict(own["input"])
            compared = "the notebook's own predictions"
            same = _same(served, own["output"])
        else:
            method = bundle.methods[0]
            served = server.predict(bundle.input_schema.decode(bundle.sample["instances"]), method)
            compared = "the outputs captured in the kernel"
            same = _same(served, bundle.sample["outputs"][method])
    record(served="equal" if same else "DIFFERENT", compared=compared)
    assert same, f"served {to_jsonable(served)!r:.300}, the notebook's {compared}"

    if case["seeded"]:
        report = nd.verify(bundle, store=store)
        record(verify="reproducible" if report else f"NOT: {report.summary}")
        assert report.reproducible, str(report)
    if case.get("fresh_env"):
        report = nd.verify(bundle, store=store, fresh_env=True, environments=CACHE / "corpus-environments")
        record(fresh_env="reproducible" if report else f"NOT: {report.summary}")
        assert report.reproducible, str(report)


def test_the_corpus_is_vendored_with_its_sources_and_licences() -> None:
    """Every case names a notebook that is here, and SOURCES.md names each and its licence file."""
    sources = (CORPUS / "SOURCES.md").read_text()
    assert len(CASES) >= 12
    for case in CASES:
        assert (CORPUS / case["notebook"]).is_file(), case["notebook"]
        assert case["id"] in sources, f"{case['id']} is not in SOURCES.md"
    for licence in (CORPUS / "licences").iterdir():
        assert licence.name in sources and licence.stat().st_size > 500
    assert sum(bool(c.get("fresh_env")) for c in CASES) * 2 >= len(CASES)


def test_the_gallery_notebooks_are_what_convert_makes_of_the_published_examples() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert", CORPUS / "sklearn" / "convert.py")
    convert = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(convert)  # type: ignore[union-attr]
    made = convert.notebooks()
    assert made and all(path.read_text() == text for path, text in made.items())
