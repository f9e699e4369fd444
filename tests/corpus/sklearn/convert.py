"""Make the notebooks of this folder from scikit-learn's gallery examples in source/, as the gallery's
"Download Jupyter notebook" does (sphinx-gallery): the module docstring becomes a markdown cell, and each
block after a separator line (``# %%`` or a line of ``#``) becomes a markdown cell of its leading comment
lines and a code cell of the rest. The patches below are the only changes to the examples' code; each
says why. Run: python tests/corpus/sklearn/convert.py (the notebooks are committed; a test checks that
they are what this script makes).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).parent
SEPARATOR = re.compile(r"^(# %%.*|#{20,})$")

# example file -> [(text, replacement, why)]
PATCHES: dict[str, list[tuple[str, str, str]]] = {
    "plot_digits_classification.py": [
        ("disp = metrics.plot_confusion_matrix(clf, X_test, y_test)",
         "disp = metrics.ConfusionMatrixDisplay.from_estimator(clf, X_test, y_test)",
         "plot_confusion_matrix was removed in scikit-learn 1.2; its replacement"),
    ],
    "plot_gradient_boosting_regression.py": [
        ("    test_score[i] = reg.loss_(y_test, y_pred)",
         "    test_score[i] = mean_squared_error(y_test, y_pred)",
         "GradientBoostingRegressor.loss_ was removed in scikit-learn 1.3; squared error is what it computed"),
        ("    labels=np.array(diabetes.feature_names)[sorted_idx],",
         "    tick_labels=np.array(diabetes.feature_names)[sorted_idx],",
         "matplotlib renamed boxplot's labels to tick_labels (3.9) and removed the old name"),
    ],
}


def convert(source: str) -> nbformat.NotebookNode:
    """The notebook sphinx-gallery makes of an example's text."""
    module = ast.parse(source)
    docstring = ast.get_docstring(module, clean=False) or ""
    lines = source.splitlines()
    body = lines[module.body[0].end_lineno:] if docstring else lines  # what follows the docstring
    cells = [nbformat.v4.new_markdown_cell(docstring.strip())] if docstring else []
    blocks: list[list[str]] = [[]]
    for line in body:
        if SEPARATOR.match(line.strip()):
            blocks.append([])
        else:
            blocks[-1].append(line)
    for number, block in enumerate(blocks):
        text: list[str] = []
        if number:  # after a separator: the leading comment lines are the text
            while block and (block[0].startswith("#") or not block[0].strip()):
                text.append(block.pop(0)[2:] if block[0].startswith("# ") else block.pop(0).lstrip("#"))
        if "".join(text).strip():
            cells.append(nbformat.v4.new_markdown_cell("\n".join(text).strip()))
        code = "\n".join(block).strip()
        if code:
            cells.append(nbformat.v4.new_code_cell(code))
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    return notebook


def patched(name: str, source: str) -> str:
    for text, replacement, _ in PATCHES.get(name, []):
        if text not in source:
            raise SystemExit(f"{name}: the patched text is not there: {text}")
        source = source.replace(text, replacement)
    return source


def notebooks() -> dict[Path, str]:
    """Each notebook's path and text."""
    return {HERE / f"{example.stem}.ipynb": nbformat.writes(convert(patched(example.name, example.read_text())))
            for example in sorted((HERE / "source").glob("*.py"))}


if __name__ == "__main__":
    for path, text in notebooks().items():
        path.write_text(text)
        print(path.relative_to(HERE), file=sys.stderr)
