"""The recipe: the executions that rebuild a model, in order, as a runnable notebook, with the data
files they read. It is built from an execution history (a live kernel's, or a saved notebook's) by
the slicer, refined by what the session recorder observed each execution do where it watched, and
stored in the bundle next to the pickle it can rebuild. Each kept cell says why it is kept."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import file_sha256
from .observation import FileAccess, Observation
from .slicing import DEFAULT_RULES, MAGIC_CALL, SliceRules, cell_nodes, slice_history


@dataclass
class History:
    """What ran in a session, in execution order: sources (IPython syntax) and their execution counts."""

    sources: list[str]
    counts: list[int]
    failed: set[int] = field(default_factory=set)  # execution counts that raised
    file_hashes: dict[str, str] = field(default_factory=dict)  # absolute path -> sha256 when first read
    workdir: str = field(default_factory=os.getcwd)  # where the session started
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "kernel"})
    warnings: list[str] = field(default_factory=list)
    observations: dict[int, Observation] = field(default_factory=dict)  # execution count -> what was seen


@dataclass
class DataFile:
    """A file the recipe reads that no kept execution writes."""

    path: str  # relative to the session's starting folder (may go up with ..), or absolute as the code gave it
    sha256: str | None
    size: int | None
    included: bool = False  # a copy is stored in the bundle (see ``bundle_name``)
    read_by: str | None = None  # the package that opened it (pandas, numpy, open() ...), when observed

    @property
    def bundle_name(self) -> str:
        return f"data-{(self.sha256 or '')[:12]}-{Path(self.path).name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recipe:
    """The executions to replay for ``target``, and what they need."""

    target: str
    cells: list[str]
    counts: list[int]
    failed: list[int]
    files: list[DataFile]
    environment_actions: list[str]
    warnings: list[str]
    source: dict[str, Any]
    workdir: str
    reasons: list[list[str]] = field(default_factory=list)  # per kept cell: why it is kept
    trimmed: list[int] = field(default_factory=list)  # execution counts kept only for some of their imports
    modules: list[str] = field(default_factory=list)  # top-level modules the kept executions import
    requirements: list[str] = field(default_factory=list)  # "name==version" the replay needs beside the lock
    urls: list[tuple[int, str]] = field(default_factory=list)  # (execution count, URL) the kept executions fetched
    fetched: list[dict[str, Any]] = field(default_factory=list)  # URLs whose bytes the bundle keeps (fetched.py)

    def to_notebook(self) -> Any:
        """A notebook of the kept executions; cells that raised when they ran are tagged so that a
        replay expects it (nbclient's ``raises-exception``). Cell ids are stable, so the same recipe is
        the same bytes."""
        import nbformat
        from nbformat.v4 import new_code_cell, new_notebook

        cells = []
        for source, count, reasons in zip(self.cells, self.counts, self.reasons or [[]] * len(self.cells)):
            metadata: dict[str, Any] = {
                "notebook_deploy": {
                    "execution_count": count,
                    "kept_because": reasons,
                    "trimmed_to_imports": count in self.trimmed,
                }
            }
            if count in self.failed:
                metadata["tags"] = ["raises-exception"]
            cell = new_code_cell(source, metadata=metadata)
            cell["id"] = f"execution-{count}"
            cells.append(cell)
        notebook = new_notebook(
            cells=cells,
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "notebook_deploy": {"target": self.target},
            },
        )
        nbformat.validate(notebook)
        return notebook

    def lock_text(self) -> str:
        """The text of recipe-requirements.txt: ``requirements``, one a line."""
        return (
            "# What the recipe's cells import beyond requirements.txt, pinned as captured. "
            "Written by notebook-deploy.\n" + "".join(f"{line}\n" for line in self.requirements)
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary kept in bundle.json."""
        return {
            "target": self.target,
            "executions": self.counts,
            "failed": self.failed,
            "files": [f.to_dict() for f in self.files],
            "environment_actions": self.environment_actions,
            "warnings": self.warnings,
            "source": self.source,
            "workdir": self.workdir,
            "reasons": self.reasons,
            "trimmed": self.trimmed,
            "requirements": self.requirements,
            "fetched": self.fetched,
        }


def build_recipe(history: History, target: str, *, rules: SliceRules = DEFAULT_RULES) -> Recipe:
    """Slice ``history`` for ``target`` (refined by its observations) and describe the data files the
    kept executions read, the URLs they fetched and their randomness."""
    observations = [history.observations.get(count) for count in history.counts]
    result = slice_history(history.sources, target, rules=rules, observations=observations, workdir=history.workdir)
    counts = [history.counts[i] for i in result.cells]
    kept = [o for o in (observations[i] for i in result.cells) if o]  # what was seen in the kept cells
    seen = {a.resolved: a for o in kept for a in o.reads}
    files = [_data_file(path, history, seen) for path in result.files_read]
    warnings = list(history.warnings) + result.warnings
    urls: list[tuple[int, str]] = []
    for index in result.cells:
        warnings += [f"cell [{history.counts[index]}]: {w}" for w in result.cell_warnings.get(index, [])]
        observation = observations[index]
        for url in observation.urls if observation else []:
            urls.append((history.counts[index], url))
            warnings.append(fetch_warning(history.counts[index], url))
    warnings += [
        f"data file {f.path} is gone: the recipe cannot be replayed without it" for f in files if f.size is None
    ]
    return Recipe(
        target=target,
        cells=[result.sources.get(i, history.sources[i]) for i in result.cells],
        counts=counts,
        failed=[c for c in counts if c in history.failed],
        files=files,
        environment_actions=result.environment_actions,
        warnings=warnings,
        source=history.source,
        workdir=history.workdir,
        reasons=[result.reasons[i] for i in result.cells],
        trimmed=[history.counts[i] for i in result.cells if i in result.sources],
        urls=urls,
        modules=sorted(
            imported_modules(result.sources.get(i, history.sources[i]) for i in result.cells).union(
                *(o.modules for o in kept)
            )
        ),
    )


def fetch_warning(count: int, url: str) -> str:
    """What the recipe says of a URL that execution ``count`` fetched and whose bytes are not kept."""
    return (
        f"cell [{count}] fetched {url}: the replay fetches it again and may get other bytes; capture with "
        "--keep-fetched (keep_fetched=True) to keep them in the bundle, or save it to a file beside the "
        "notebook and read that file"
    )


def imported_modules(sources: Iterable[str]) -> set[str]:
    """The top-level modules that ``sources`` import by name (``%matplotlib`` counts as matplotlib): with
    what the recorder saw load, they are what the recipe needs installed beside the model's lock."""
    modules: set[str] = set()
    for node in cell_nodes(sources):
        if isinstance(node, ast.Import):
            modules.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.partition(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == MAGIC_CALL
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "matplotlib"
        ):
            modules.add("matplotlib")
    return modules


def history_from_notebook(path: str | os.PathLike[str]) -> History:
    """The history a saved notebook can tell: its code cells ordered by execution count. A notebook
    keeps only the last run of each cell, so re-runs, deleted cells and edits after a run are lost;
    the warnings say where it shows."""
    import nbformat

    notebook = nbformat.read(os.fspath(path), as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    ran = sorted((c for c in code if c.get("execution_count")), key=lambda c: c.execution_count)
    warnings = []
    never = len(code) - len(ran)
    if never:
        warnings.append(f"{never} code cell(s) of {Path(path).name} have no execution count and are left out")
    counts = [c.execution_count for c in ran]
    missing = sorted(set(range(1, counts[-1] + 1)) - set(counts)) if counts else []
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        warnings.append(
            f"executions {shown} are not in the saved notebook (re-run or deleted cells): "
            "capture from the live kernel with %deploy for an exact recipe"
        )
    positions = [code.index(c) for c in ran]
    if positions != sorted(positions):
        warnings.append("cells ran out of their order in the notebook; the recipe follows the execution order")
    failed = {c.execution_count for c in ran if any(o.get("output_type") == "error" for o in c.get("outputs", []))}
    return History(
        sources=[c.source for c in ran],
        counts=counts,
        failed=failed,
        workdir=str(Path(path).resolve().parent),
        source={"kind": "notebook", "path": str(path)},
        warnings=warnings,
    )


def _data_file(path: str, history: History, seen: Mapping[str, FileAccess]) -> DataFile:
    """A data file as the recipe records it: its hash when it was read if that was seen, else now."""
    absolute = Path(history.workdir, path).resolve()
    access = seen.get(str(absolute))
    size = absolute.stat().st_size if absolute.is_file() else None
    recorded = (access.sha256 if access else None) or history.file_hashes.get(str(absolute))
    sha = recorded or (file_sha256(absolute) if size is not None else None)
    return DataFile(path=path, sha256=sha, size=size, read_by=access.opener if access else None)


def include_data(recipe: Recipe, history: History, max_bytes: int) -> list[tuple[str, Path]]:
    """Mark the recipe's data files of at most ``max_bytes`` as included; return (bundle name, source)."""
    included = []
    for data in recipe.files:
        source = Path(history.workdir, data.path)
        if data.size is not None and data.size <= max_bytes and data.sha256 == file_sha256(source):
            data.included = True
            included.append((data.bundle_name, source))
    return included


def data_file_map(files: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """path -> bundle file name, for the included data files of a recipe summary."""
    return {f["path"]: DataFile(f["path"], f["sha256"], f["size"], True).bundle_name for f in files if f["included"]}
