"""How long capturing a scikit-learn model with its recipe from a 30-cell notebook history takes.

Prints the median of several captures next to a raw baseline (cloudpickle.dumps of the same model and a
file write), their ratio, and where the time goes (slicing, pickling, the package probe, writing).
The goal of issue 3 is under one second. Most of a capture is the package probe: a fresh Python
that loads the pickle and runs the model, which proves the bundle loads elsewhere and measures what it
needs; its floor, printed last, is that interpreter importing the model's libraries. Run: .venv/bin/python benchmarks/capture.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import notebook_deploy as nd
from notebook_deploy.capturing import packages, pickling, slicing
from notebook_deploy.capturing.recipe import History

EXPLORATION = [
    "df.head()", "df.describe()", "df.info()", 'df["plan"].value_counts()', "df.isna().sum()",
    'df.groupby("plan")["spend"].mean()', 'df["age"].hist()', "df.corr(numeric_only=True)",
    'df.sort_values("spend").tail()', 'len(df)',
]


def history(folder: Path) -> History:
    """Thirty executions as a data scientist leaves them: imports, loading, exploration, a re-run fit."""
    cells = [
        "import numpy as np\nimport pandas as pd",
        "from sklearn.compose import ColumnTransformer\nfrom sklearn.ensemble import RandomForestClassifier\n"
        "from sklearn.pipeline import make_pipeline\nfrom sklearn.preprocessing import OneHotEncoder, StandardScaler",
        'df = pd.read_csv("customers.csv")',
        *EXPLORATION,
        'df["spend"] = df["spend"].fillna(df["spend"].median())',
        'X = df[["age", "spend", "plan"]]\ny = df["churned"]',
        *EXPLORATION[:5],
        'columns = ColumnTransformer([("num", StandardScaler(), ["age", "spend"]), ("cat", OneHotEncoder(), ["plan"])])',
        "model = make_pipeline(columns, RandomForestClassifier(n_estimators=50, random_state=0))",
        "model.fit(X, y)",
        "model.score(X, y)",
        *EXPLORATION[5:9],
        "model.fit(X, y)",
        "model.predict(X.head())",
    ]
    assert len(cells) == 30, len(cells)
    return History(sources=cells, counts=list(range(1, 31)), workdir=str(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        df = pd.DataFrame({"age": rng.integers(18, 80, 2000), "spend": rng.gamma(2, 30, 2000),
                           "plan": rng.choice(["basic", "plus", "pro"], 2000), "churned": rng.integers(0, 2, 2000)})
        df.to_csv(folder / "customers.csv", index=False)
        X, y = df[["age", "spend", "plan"]], df["churned"]
        columns = ColumnTransformer([("num", StandardScaler(), ["age", "spend"]), ("cat", OneHotEncoder(), ["plan"])])
        model = make_pipeline(columns, RandomForestClassifier(n_estimators=50, random_state=0)).fit(X, y)
        session = history(folder)

        captures, baselines = [], []
        for run in range(runs):
            started = time.perf_counter()
            nd.capture(model, name="bench", sample=X.head(), history=session, variable="model",
                       store=folder / f"store-{run}")
            captures.append(time.perf_counter() - started)
            started = time.perf_counter()
            (folder / "raw.pkl").write_bytes(cloudpickle.dumps(model))
            baselines.append(time.perf_counter() - started)

        stages = {
            "slice 30 cells": lambda: slicing.slice_history(session.sources, "model"),
            "pickle": lambda: pickling.dump_model(model),
            "package probe (fresh Python)": lambda: packages.package_state(
                folder / "raw.pkl", X.head(), ["predict"], {"sklearn", "pandas"}, {"predict": model.predict(X.head()).tolist()}),
            "environment snapshot": packages.environment_snapshot,
        }
        stages["floor: fresh Python imports sklearn+pandas"] = lambda: subprocess.run(
            [sys.executable, "-c", "import sklearn.ensemble, sklearn.pipeline, sklearn.compose, pandas"], check=True)
        timings = {}
        for label, stage in stages.items():
            started = time.perf_counter()
            stage()
            timings[label] = time.perf_counter() - started

    capture, baseline = statistics.median(captures), statistics.median(baselines)
    print(f"capture with recipe, 30-cell history ({runs} runs, median): {capture * 1000:8.1f} ms")
    print(f"raw baseline: cloudpickle.dumps + write:                    {baseline * 1000:8.1f} ms")
    print(f"ratio capture / baseline:                                   {capture / baseline:8.1f}x")
    print(f"goal under 1 s:                                             {'met' if capture < 1 else 'NOT met'}")
    print("where the time goes (one run each):")
    for label, seconds in timings.items():
        print(f"  {label:<44} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
