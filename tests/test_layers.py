"""The import layers of docs/architecture.md ("## Layers"), checked on the package's source: no module
imports from a layer above its own, and module imports form no cycle, counting imports inside functions.

Written here rather than as import-linter contracts: its layers contract does not see a cycle inside one
layer (``served.py`` ⇄ ``app.py`` were one), and both rules fit in an AST walk over the package."""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "notebook_deploy"
JUPYTER_ONLY = ("IPython", "ipywidgets", "jupyter_server", "ipykernel")


def layers() -> list[tuple[str, list[str]]]:
    """The layers, lowest first, as the ``layers`` block of docs/architecture.md lists them."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    found = []
    for line in block.group(1).strip().splitlines():
        name, _, modules = line.partition(":")
        found.append((name.strip(), modules.split()))
    return found


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The package modules ``name`` imports (anywhere but under ``if TYPE_CHECKING:``), with the line."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` imports a.b.c; keep the deepest known
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def third_party(path: Path) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module.split(".")[0], node.lineno


def layer_of(name: str, table: list[tuple[str, list[str]]]) -> int:
    """The index of the layer whose entry is ``name`` or its closest parent package."""
    short = name.removeprefix("notebook_deploy.")
    for index, (_, entries) in enumerate(table):
        for entry in entries:
            if short == entry or short.startswith(entry + "."):
                return index
    raise AssertionError(f"{name} is in no layer of docs/architecture.md: add it to the layers block")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def problems(package: Path) -> list[str]:
    """Every upward import, import cycle and Jupyter import outside jupyter/ in ``package``."""
    table = layers()
    known = modules(package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    found = []
    for name, path in sorted(known.items()):
        for target, line in imports(name, path, known):
            graph[name].add(target)
            below, above = layer_of(name, table), layer_of(target, table)
            if above > below:
                found.append(
                    f"{path.relative_to(package.parent)}:{line}: {name} ({table[below][0]}) imports "
                    f"{target} ({table[above][0]}), a layer above it"
                )
        if not name.startswith(("notebook_deploy.jupyter", "notebook_deploy.__main__")) and name != "notebook_deploy":
            for module, line in third_party(path):
                if module in JUPYTER_ONLY:
                    found.append(
                        f"{path.relative_to(package.parent)}:{line}: imports {module}, which only jupyter/ may"
                    )
    found += [f"an import cycle: {' ⇄ '.join(component)}" for component in cycles(graph)]
    return found


def test_the_package_keeps_its_layers() -> None:
    assert problems(PACKAGE) == []


@pytest.mark.parametrize(
    "module, added, expected",
    [
        # a cycle inside one layer: the serving app's shared vocabulary importing the app back
        ("serving/served.py", "from . import app\n", "an import cycle: notebook_deploy.serving.app ⇄"),
        # an upward import made lazily, inside a function, as bundle.py once reached into verification
        ("bundle.py", "def later():\n    from .verification import verify\n", "a layer above it"),
        # a Jupyter import outside jupyter/
        ("schema.py", "import IPython\n", "which only jupyter/ may"),
    ],
)
def test_the_check_finds_what_breaks_the_layers(tmp_path: Path, module: str, added: str, expected: str) -> None:
    copy = tmp_path / "notebook_deploy"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "labextension"))
    target = copy / module
    target.write_text(target.read_text() + "\n" + added)
    found = problems(copy)
    assert any(expected in problem for problem in found), found
