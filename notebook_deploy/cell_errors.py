"""Where a notebook run by nbclient failed, named as the notebook shows it: the code cell and the line.

nbclient raises one error for the whole run; the failing cell is the one with an error output. A cell
index counting markdown cells matches nothing the user sees, so the cell is named by its position among
code cells and by its execution count, and the failing line is read from IPython's traceback
("Cell In[7], line 3") and quoted from the cell's source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_LINE = re.compile(r"Cell In\s*\[(\d+)\],\s*line (\d+)")


@dataclass(frozen=True)
class FailedCell:
    """The first cell of a run that raised: its index (of all cells), its place among code cells
    (from 1), the failing line (from 1, None if the traceback does not say) and that line's text."""

    index: int
    code_cell: int
    line: int | None
    text: str | None
    error: str

    def where(self) -> str:
        """ ", line 3: `df = pd.read_csv(path)`" or "" when the line is not known."""
        if self.line is None:
            return ""
        return f", line {self.line}" + (f": `{self.text.strip()}`" if self.text and self.text.strip() else "")


def failed_cell(notebook: Any) -> FailedCell | None:
    """The first code cell of an executed ``notebook`` with an error output not tagged raises-exception."""
    code_cells = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        code_cells += 1
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        if error is None or "raises-exception" in cell.metadata.get("tags", []):
            continue
        line = _failing_line(error.get("traceback", []), cell.get("execution_count"))
        lines = cell.source.splitlines()
        text = lines[line - 1] if line is not None and 0 < line <= len(lines) else None
        return FailedCell(index, code_cells, line, text, f"{error.get('ename')}: {error.get('evalue')}")
    return None


def _failing_line(traceback: list[str], count: int | None) -> int | None:
    """The line of the cell's own frame in an IPython traceback (the cell ran as execution ``count``)."""
    frames = [(int(c), int(n)) for entry in traceback for c, n in _CELL_LINE.findall(_ANSI.sub("", entry))]
    own = [n for c, n in frames if c == count]
    if own:
        return own[0]
    return frames[0][1] if frames else None
