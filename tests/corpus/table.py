"""Print the corpus results that tests/test_corpus.py wrote to test-output/corpus/ as the markdown table
of docs/guide.md ("Capture on real notebooks"). Run after the corpus tests:
python tests/corpus/table.py > /tmp/table.md"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE.parent.parent / "test-output" / "corpus"


def rows() -> list[str]:
    cases = json.loads((HERE / "cases.json").read_text())
    lines = ["| notebook | model | code cells → recipe | default sample | served = notebook | verify | verify --fresh-env |",
             "|---|---|---|---|---|---|---|"]
    for case in cases:
        path = RESULTS / f"{case['id']}.json"
        found = json.loads(path.read_text()) if path.exists() else {}
        served = {"equal": "yes", "DIFFERENT": "**no**"}.get(found.get("served", ""), "not run")
        if found.get("served") and not case.get("own"):
            served += " (captured outputs)"
        verify = found.get("verify", "not seeded" if not case["seeded"] else "not run")
        fresh = found.get("fresh_env", "—" if not case.get("fresh_env") else "not run")
        recipe = f"{found['cells']} → {found['kept']}" if "kept" in found else "not run"
        sample = found.get("sample", "—").replace("|", "\\|")
        lines.append(f"| {case['notebook'].split('/')[0]}: `{Path(case['notebook']).name}` | `{case['model']}` | "
                     f"{recipe} | {sample} | {served} | {verify} | {fresh} |")
    return lines


if __name__ == "__main__":
    print("\n".join(rows()))
