"""Static slicing of a notebook's execution history (``notebook_deploy.capturing.slicing``).

These tests are written from the specification of ``slice_cells`` only, not from its code.
Each case of ``CASES`` lists cell sources in execution order, a target name, the executions
that must be replayed (``must``) and those that must not (``must_not``).  Every index is in
one of the two, except the few listed in ``debatable`` (with the reason in a comment).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
import textwrap

import pytest


def _slicing():
    # Imported lazily so that the sanity checks of the table run even before the module exists.
    from notebook_deploy.capturing import slicing

    return slicing


def _c(src: str) -> str:
    """A cell source written as an indented triple-quoted string."""
    return textwrap.dedent(src).strip("\n") + "\n"


_XY = "X = [[0.0], [1.0], [2.0], [3.0]]\ny = [0, 0, 1, 1]"


CASES: list[dict] = [
    # ------------------------------------------------------------------ 1. re-runs, order, kills
    dict(
        # an edited cell re-run: only the last reaching definitions (scale=3, second y) count
        id="rerun_edited_cell_last_definition_counts",
        cells=[
            "import numpy as np",
            "x = np.arange(10)",
            "scale = 2",
            "y = x * scale",
            "scale = 3",
            "y = x * scale",
        ],
        target="y",
        must=[0, 1, 4, 5],
        must_not=[2, 3],
    ),
    dict(
        # rebinding kills: x = 1 is overwritten before any use
        id="rebinding_kills_earlier_definition",
        cells=["x = 1", "x = 2", "y = x + 1"],
        target="y",
        must=[1, 2],
        must_not=[0],
    ),
    dict(
        # x = 1 is used (by z, which is kept) before it is rebound, so it stays
        id="rebinding_after_kept_use_keeps_first",
        cells=["x = 1", "z = x * 10", "x = 2", "y = x + z", "w = 0"],
        target="y",
        must=[0, 1, 2, 3],
        must_not=[4],
    ),
    dict(
        # a match statement inside a branch binds as one at the top level does
        id="match_inside_a_branch_binds",
        cells=["x = 1", "if x:\n    match x:\n        case 1:\n            y = 5", "w = 0", "z = y + 1"],
        target="z",
        must=[0, 1, 3],
        must_not=[2],
    ),
    dict(
        # out of order: a filter cell inserted above and run later, then the summary re-run
        id="out_of_order_inserted_filter_then_rerun",
        cells=[
            "import pandas as pd",
            'df = pd.read_csv("sales.csv")',
            "n_rows = len(df)",
            'df = df[df["revenue"] > 0]',
            "n_rows = len(df)",
            "print(n_rows)",
        ],
        target="n_rows",
        must=[0, 1, 3, 4],
        must_not=[2, 5],
    ),
    dict(
        # the same mutating cell executed twice appears twice and both executions are needed
        id="same_mutating_cell_run_twice_both_kept",
        cells=[
            "import pandas as pd",
            'df = pd.DataFrame({"a": [1, 2, 3]})',
            'df["a"] = df["a"] + 1',
            'df["a"] = df["a"] + 1',
            'total = int(df["a"].sum())',
            "unrelated = 42",
        ],
        target="total",
        must=[0, 1, 2, 3, 4],
        must_not=[5],
    ),
    # ------------------------------------------------------------------ 2. shadowing
    dict(
        # a name rebound to something unrelated after its use does not matter
        id="shadow_rebound_after_use",
        cells=[
            "import numpy as np",
            "data = np.arange(5)",
            "total = data.sum()",
            'data = "something unrelated"',
        ],
        target="total",
        must=[0, 1, 2],
        must_not=[3],
    ),
    dict(
        # a function parameter named like a global is not a use of the global
        id="shadow_function_parameter",
        cells=[
            "X = [1, 2, 3]",
            _c(
                """
                def double(X):
                    return [v * 2 for v in X]
                """
            ),
            "Z = [10, 20]",
            "res = double(Z)",
        ],
        target="res",
        must=[1, 2, 3],
        must_not=[0],
    ),
    dict(
        # comprehension variables and lambda parameters are local, not uses of globals i and k
        id="shadow_comprehension_and_lambda_variables",
        cells=[
            "i = 99",
            "k = 7",
            _c(
                """
                vals = [i * i for i in range(5)]
                squares = {k: k ** 2 for k in range(4)}
                inc = lambda k: k + 1
                out = inc(vals[-1]) + len(squares)
                """
            ),
        ],
        target="out",
        must=[2],
        must_not=[0, 1],
    ),
    dict(
        # a local assignment inside a function shadows the global of the same name
        id="shadow_local_assignment_in_function",
        cells=[
            "n = 5",
            _c(
                """
                def make():
                    n = 3
                    return list(range(n))
                """
            ),
            "out = make()",
        ],
        target="out",
        must=[1, 2],
        must_not=[0],
    ),
    # ------------------------------------------------------------------ 3. mutation through methods
    dict(
        # fit updates model and does not kill model = ...; predict/score/get_params are pure
        id="fit_updates_pure_methods_do_not",
        cells=[
            "from sklearn.linear_model import LogisticRegression",
            "import numpy as np",
            "X = np.arange(60).reshape(20, 3)",
            "y = np.arange(20) % 2",
            "model = LogisticRegression(max_iter=200)",
            "model.fit(X, y)",
            "model.predict(X)",
            "model.score(X, y)",
            "print(model.get_params())",
        ],
        target="model",
        must=[0, 1, 2, 3, 4, 5],
        must_not=[6, 7, 8],
    ),
    dict(
        # drop(..., inplace=True) updates df; head() and describe() are pure
        id="pandas_inplace_drop_vs_head_describe",
        cells=[
            "import pandas as pd",
            'df = pd.DataFrame({"a": [1, 2], "b": [3, 4]})',
            "df.head()",
            "df.describe()",
            'df.drop(columns=["b"], inplace=True)',
            "df.head()",
        ],
        target="df",
        must=[0, 1, 4],
        must_not=[2, 3, 5],
    ),
    dict(
        # append, extend, sort and pop all update the list; print(len(...)) does not
        id="list_append_extend_sort_pop",
        cells=[
            "scores = []",
            "scores.append(0.9)",
            "scores.extend([0.7, 0.8])",
            "print(len(scores))",
            "scores.sort()",
            "scores.pop()",
            "best = scores[-1]",
        ],
        target="best",
        must=[0, 1, 2, 4, 5, 6],
        must_not=[3],
    ),
    dict(
        # dict.update and set_params are updates (with their inputs); get_params is pure
        id="dict_update_and_set_params",
        cells=[
            'params = {"C": 1.0}',
            'params.update({"kernel": "linear"})',
            "from sklearn.svm import SVC",
            "clf = SVC()",
            "clf.set_params(**params)",
            "clf.get_params()",
        ],
        target="clf",
        must=[0, 1, 2, 3, 4],
        must_not=[5],
    ),
    dict(
        # partial_fit (twice) updates sgd; predict in between does not
        id="partial_fit_updates",
        cells=[
            "from sklearn.linear_model import SGDClassifier",
            "import numpy as np",
            "X = np.ones((10, 2))\ny = np.array([0, 1] * 5)",
            "sgd = SGDClassifier(random_state=0)",
            "sgd.partial_fit(X, y, classes=[0, 1])",
            "sgd.predict(X)",
            "sgd.partial_fit(X, y)",
        ],
        target="sgd",
        must=[0, 1, 2, 3, 4, 6],
        must_not=[5],
    ),
    dict(
        # fit_transform updates the scaler (its result is printed by an unkept cell)
        id="fit_transform_updates_scaler",
        cells=[
            "from sklearn.preprocessing import StandardScaler",
            "import numpy as np",
            "X = np.arange(20.0).reshape(10, 2)",
            "scaler = StandardScaler()",
            "X_scaled = scaler.fit_transform(X)",
            "print(X_scaled[:3])",
        ],
        target="scaler",
        must=[0, 1, 2, 3, 4],
        must_not=[5],
    ),
    dict(
        # an unknown method (train_more) counts as an update; predict stays pure
        id="unknown_method_is_conservative_update",
        cells=[
            "from mylib import Booster",
            "model = Booster()",
            "model.train_more([1, 2, 3])",
            "model.predict([1])",
        ],
        target="model",
        must=[0, 1, 2],
        must_not=[3],
    ),
    # ------------------------------------------------------------------ 4. aliases and views
    dict(
        # best = model makes an alias: best.fit updates model, so coef_ needs it
        id="alias_fit_updates_original",
        cells=[
            "from sklearn.linear_model import LogisticRegression",
            _XY,
            "model = LogisticRegression()",
            "best = model",
            "best.fit(X, y)",
            "coef = model.coef_",
        ],
        target="coef",
        must=[0, 1, 2, 3, 4, 5],
        must_not=[],
    ),
    dict(
        # pipe.fit updates the clf inside make_pipeline(scaler, clf); pipe.score does not
        id="pipeline_fit_updates_component_clf",
        cells=[
            _c(
                """
                from sklearn.pipeline import make_pipeline
                from sklearn.preprocessing import StandardScaler
                from sklearn.linear_model import LogisticRegression
                """
            ),
            _XY,
            "scaler = StandardScaler()",
            "clf = LogisticRegression()",
            "pipe = make_pipeline(scaler, clf)",
            "pipe.fit(X, y)",
            "pipe.score(X, y)",
        ],
        target="clf",
        must=[0, 1, 2, 3, 4, 5],
        must_not=[6],
    ),
    dict(
        # same pipeline, target the scaler: pipe.fit updates it too
        id="pipeline_fit_updates_component_scaler",
        cells=[
            _c(
                """
                from sklearn.pipeline import make_pipeline
                from sklearn.preprocessing import StandardScaler
                from sklearn.linear_model import LogisticRegression
                """
            ),
            _XY,
            "scaler = StandardScaler()",
            "clf = LogisticRegression()",
            "pipe = make_pipeline(scaler, clf)",
            "pipe.fit(X, y)",
            "pipe.predict(X)",
        ],
        target="scaler",
        must=[0, 1, 2, 3, 4, 5],
        must_not=[6],
    ),
    dict(
        # models[0].fit updates a through the list models = [a, b]
        id="container_alias_fit_updates_element",
        cells=[
            "from sklearn.tree import DecisionTreeClassifier",
            _XY,
            "a = DecisionTreeClassifier(max_depth=2)",
            "b = DecisionTreeClassifier(max_depth=4)",
            "models = [a, b]",
            "models[0].fit(X, y)",
            "models[0].predict(X)",
        ],
        target="a",
        must=[0, 1, 2, 3, 4, 5],
        must_not=[6],
    ),
    dict(
        # best = other breaks the alias best -> model: best.fit no longer updates model
        id="alias_rebound_breaks_alias_target_model",
        cells=[
            "from sklearn.linear_model import LogisticRegression",
            _XY,
            "model = LogisticRegression()",
            "other = LogisticRegression(C=0.1)",
            "best = model",
            "best = other",
            "best.fit(X, y)",
        ],
        target="model",
        must=[0, 2],
        must_not=[1, 3, 4, 5, 6],
    ),
    dict(
        # same history, target other: best.fit now updates other
        id="alias_rebound_breaks_alias_target_other",
        cells=[
            "from sklearn.linear_model import LogisticRegression",
            _XY,
            "model = LogisticRegression()",
            "other = LogisticRegression(C=0.1)",
            "best = model",
            "best = other",
            "best.fit(X, y)",
        ],
        target="other",
        must=[0, 1, 3, 5, 6],
        must_not=[2, 4],
    ),
    # ------------------------------------------------------------------ 5. augmented assignment
    dict(
        # x += 1 (twice) is an update: keep both and the original x = 1
        id="augassign_chain",
        cells=["x = 1", "x += 1", "y = 0", "x += 1"],
        target="x",
        must=[0, 1, 3],
        must_not=[2],
    ),
    dict(
        # df["c"] *= 2 is an update of df, back to the column creation and df itself
        id="augassign_subscript_on_dataframe",
        cells=[
            "import pandas as pd",
            'df = pd.DataFrame({"a": [1, 2], "b": [3, 4]})',
            'df["c"] = df["a"] + df["b"]',
            'df["c"] *= 2',
            "df.head()",
        ],
        target="df",
        must=[0, 1, 2, 3],
        must_not=[4],
    ),
    # ------------------------------------------------------------------ 6. del
    dict(
        # del x then x redefined: neither the old x nor the del is needed
        id="del_then_redefine",
        cells=["x = [1, 2]", "del x", "x = [3]", "y = len(x)"],
        target="y",
        must=[2, 3],
        must_not=[0, 1],
    ),
    dict(
        # del of an unrelated name is not kept
        id="del_unrelated_name_not_kept",
        cells=["a = 1", "tmp = 5", "del tmp", "b = a + 1"],
        target="b",
        must=[0, 3],
        must_not=[1, 2],
    ),
    dict(
        # the target deleted then defined again: only the new definition
        id="del_target_then_redefined",
        cells=[
            "from sklearn.dummy import DummyClassifier",
            'model = "placeholder"',
            "del model",
            "model = DummyClassifier()",
        ],
        target="model",
        must=[0, 3],
        must_not=[1, 2],
    ),
    # ------------------------------------------------------------------ 7. functions and classes
    dict(
        # the spec's example: f reads the global a when called, so a = 3 counts, not a = 1
        id="function_global_resolved_at_call",
        cells=["a = 1", "def f(): return a", "a = 3", "b = f() + 2"],
        target="b",
        must=[1, 2, 3],
        must_not=[0],
    ),
    dict(
        # a changed after the call does not matter
        id="function_global_changed_after_call",
        cells=["a = 1", "def f(): return a", "b = f()", "a = 3"],
        target="b",
        must=[0, 1, 2],
        must_not=[3],
    ),
    dict(
        # the target is itself a notebook function: the globals it reads when served count as they are
        # at the end (KEY = 2), not as they were when it was defined (KEY = 1)
        id="target_function_reads_global_at_serving_time",
        cells=[
            "import numpy as np",
            "KEY = 1",
            "def model(rows):\n    return np.asarray(rows) * KEY",
            "KEY = 2",
            "model([1, 2])",
        ],
        target="model",
        must=[0, 2, 3],
        must_not=[1, 4],
    ),
    dict(
        # bump() mutates the global counter: both calls are updates; print is not
        id="function_mutates_global_counter",
        cells=[
            "counter = 0",
            _c(
                """
                def bump():
                    global counter
                    counter += 1
                """
            ),
            "bump()",
            "bump()",
            "print(counter)",
        ],
        target="counter",
        must=[0, 1, 2, 3],
        must_not=[4],
    ),
    dict(
        # train() calls model.fit on globals: calling it updates model; an uncalled def is not kept
        id="function_fits_global_model",
        cells=[
            "from sklearn.linear_model import LogisticRegression",
            _XY,
            "model = LogisticRegression()",
            _c(
                """
                def train():
                    model.fit(X, y)
                """
            ),
            _c(
                """
                def describe_model():
                    print(model.get_params())
                """
            ),
            "train()",
            "model.predict(X)",
        ],
        target="model",
        must=[0, 1, 2, 3, 5],
        must_not=[4, 6],
    ),
    dict(
        # a method reads FACTOR, defined after the class, when s.fit is called; FACTOR=10 comes later
        id="class_method_reads_global_defined_after_class",
        cells=[
            _c(
                """
                class Scaler:
                    def __init__(self):
                        self.factor = None

                    def fit(self, data):
                        self.factor = FACTOR * max(data)
                        return self
                """
            ),
            "FACTOR = 2",
            "s = Scaler()",
            "s.fit([1, 2, 3])",
            "FACTOR = 10",
        ],
        target="s",
        must=[0, 1, 2, 3],
        must_not=[4],
    ),
    dict(
        # poly is passed uncalled into FunctionTransformer; the fit calls it and reads POWER then
        id="function_passed_uncalled_reads_global_at_fit",
        cells=[
            _c(
                """
                import numpy as np
                from sklearn.preprocessing import FunctionTransformer
                from sklearn.pipeline import make_pipeline
                from sklearn.linear_model import LinearRegression
                """
            ),
            "POWER = 2",
            _c(
                """
                def poly(X):
                    return X ** POWER
                """
            ),
            "pipe = make_pipeline(FunctionTransformer(poly), LinearRegression())",
            "X = np.arange(10.0).reshape(-1, 1)\ny = X.ravel() ** 3",
            "POWER = 3",
            "pipe.fit(X, y)",
            "POWER = 5",
        ],
        target="pipe",
        must=[0, 2, 3, 4, 5, 6],
        must_not=[],
        # 1: POWER = 2 is overwritten before any call of poly, but an analysis may conservatively
        #    treat handing poly to FunctionTransformer(...) as a possible call at that point.
        # 7: POWER = 5 after the fit does not change the fitted pipe's state, yet the pipe's later
        #    transform/predict would read it; whether it is part of pipe's "value" is open.
        debatable=[1, 7],
    ),
    # ------------------------------------------------------------------ 8. star imports
    dict(
        # clean comes from a %%writefile module through a star import: both cells kept
        id="star_import_from_writefile_module",
        cells=[
            _c(
                """
                %%writefile helpers.py
                import pandas as pd


                def clean(df):
                    return df.dropna()
                """
            ),
            "import pandas as pd",
            'df = pd.read_csv("raw.csv")',
            "from helpers import *",
            "df2 = clean(df)",
            "df.head()",
        ],
        target="df2",
        must=[0, 1, 2, 3, 4],
        must_not=[5],
    ),
    dict(
        # tidy is defined nowhere, so the star import of an unknown module must provide it
        id="star_import_unknown_module_used",
        cells=[
            "import pandas as pd",
            "from utils_private import *",
            'df = pd.DataFrame({"a": [1.0, None]})',
            "df2 = tidy(df)",
        ],
        target="df2",
        must=[0, 1, 2, 3],
        must_not=[],
    ),
    dict(
        # every name the slice uses is (re)defined after the unknown star import: not kept
        id="star_import_unknown_module_unused",
        cells=[
            "from utils_private import *",
            "import numpy as np",
            "arr = np.zeros(3)",
        ],
        target="arr",
        must=[1, 2],
        must_not=[0],
    ),
    # ------------------------------------------------------------------ 9. %%writefile, %run, import
    dict(
        # %%writefile train.py then %run train.py defines model; other cells are not needed
        id="writefile_then_run_defines_target",
        cells=[
            _c(
                """
                %%writefile train.py
                from sklearn.linear_model import LogisticRegression

                X = [[0.0], [1.0], [2.0], [3.0]]
                y = [0, 0, 1, 1]
                model = LogisticRegression().fit(X, y)
                """
            ),
            "%pip install scikit-learn",
            "%run train.py",
            "model.predict([[1.5]])",
            "%%writefile other.py\nmodel = None\n",
        ],
        target="model",
        must=[0, 2],
        must_not=[1, 3, 4],
    ),
    dict(
        # import helpers after %%writefile helpers.py: the writefile is kept when helpers.X is used
        id="writefile_then_import_module_attribute",
        cells=[
            "%%writefile helpers.py\nTHRESHOLD = 0.5\n",
            "%%writefile notes.md\n# experiment notes\n",
            "import helpers",
            "import numpy as np",
            "scores = np.array([0.2, 0.7, 0.9])",
            "labels = scores > helpers.THRESHOLD",
        ],
        target="labels",
        must=[0, 2, 3, 4, 5],
        must_not=[1],
    ),
    # ------------------------------------------------------------------ 10. install/shell magics
    dict(
        # %pip, !pip, %matplotlib, %load_ext, !ls are never in the slice
        id="install_and_shell_magics_never_kept",
        cells=[
            "%pip install pandas scikit-learn",
            "!pip install xgboost",
            "%matplotlib inline",
            "%load_ext autoreload",
            "!ls -la",
            "import pandas as pd",
            'df = pd.read_csv("data.csv")',
        ],
        target="df",
        must=[5, 6],
        must_not=[0, 1, 2, 3, 4],
    ),
    # ------------------------------------------------------------------ 11. files written then read
    dict(
        # to_csv then read_csv of the same file: the writer and its inputs are kept
        id="to_csv_then_read_csv",
        cells=[
            "import pandas as pd",
            'raw = pd.DataFrame({"a": [1.0, 2.0, None]})',
            "clean = raw.dropna()",
            'clean.to_csv("clean.csv", index=False)',
            'other = pd.DataFrame({"z": [0]})',
            'df = pd.read_csv("clean.csv")',
        ],
        target="df",
        must=[0, 1, 2, 3, 5],
        must_not=[4],
    ),
    dict(
        # np.save then np.load; a save to another file is not needed
        id="np_save_then_load",
        cells=[
            "import numpy as np",
            "X = np.arange(12).reshape(4, 3)",
            'np.save("X.npy", X)',
            'np.save("Y.npy", X * 2)',
            'X2 = np.load("X.npy")',
        ],
        target="X2",
        must=[0, 1, 2, 4],
        must_not=[3],
    ),
    dict(
        # open(..., "w").write then open(...).read of the same path
        id="open_write_then_read",
        cells=[
            'msg = "hello world"',
            'open("f.txt", "w").write(msg)',
            'open("g.txt", "w").write("other")',
            'text = open("f.txt").read()',
        ],
        target="text",
        must=[0, 1, 3],
        must_not=[2],
    ),
    dict(
        # joblib.dump then joblib.load: the dumping cell and the fitted model are needed
        id="joblib_dump_then_load",
        cells=[
            "import joblib",
            "from sklearn.linear_model import LogisticRegression",
            _XY,
            "model = LogisticRegression().fit(X, y)",
            'joblib.dump(model, "model.pkl")',
            "model.score(X, y)",
            'loaded = joblib.load("model.pkl")',
        ],
        target="loaded",
        must=[0, 1, 2, 3, 4, 6],
        must_not=[5],
    ),
    dict(
        # a file that is never written in the history needs nothing (writes elsewhere ignored)
        id="read_of_file_never_written",
        cells=[
            "import pandas as pd",
            'pd.DataFrame({"a": [1]}).to_csv("other.csv")',
            'df = pd.read_csv("input.csv")',
        ],
        target="df",
        must=[0, 2],
        must_not=[1],
    ),
    dict(
        # a rewrite of the file after the read does not matter
        id="file_rewritten_after_read",
        cells=[
            "import pandas as pd",
            'pd.DataFrame({"a": [1]}).to_csv("clean.csv", index=False)',
            'df = pd.read_csv("clean.csv")',
            'pd.DataFrame({"a": [2]}).to_csv("clean.csv", index=False)',
        ],
        target="df",
        must=[0, 1, 2],
        must_not=[3],
    ),
    # ------------------------------------------------------------------ 12. global random state
    dict(
        # seed, then an unrelated draw that advances the RNG, then X: all needed; later draw not
        id="numpy_seed_and_intermediate_draw",
        cells=[
            "import numpy as np",
            "from sklearn.linear_model import LinearRegression",
            "np.random.seed(0)",
            "noise = np.random.rand(3)",
            "X = np.random.rand(100, 2)",
            "y = X @ np.array([1.0, 2.0])",
            "model = LinearRegression().fit(X, y)",
            "later = np.random.rand(5)",
        ],
        target="model",
        must=[0, 1, 2, 3, 4, 5, 6],
        must_not=[7],
    ),
    dict(
        # without any seed an unrelated draw is not kept
        id="no_seed_unrelated_draw_not_kept",
        cells=[
            "import numpy as np",
            "noise = np.random.rand(3)",
            "X = np.random.rand(100, 2)",
            "m = X.mean()",
        ],
        target="m",
        must=[0, 2, 3],
        must_not=[1],
    ),
    dict(
        # the same with the stdlib random module
        id="python_random_seed_and_draws",
        cells=[
            "import random",
            "random.seed(42)",
            "warmup = random.random()",
            "sample = [random.random() for _ in range(5)]",
            "print(sample)",
            "after = random.random()",
        ],
        target="sample",
        must=[0, 1, 2, 3],
        must_not=[4, 5],
    ),
    # ------------------------------------------------------------------ 13. library configuration
    dict(
        # from sklearn import set_config; set_config(...) before an sklearn fit is kept
        id="sklearn_set_config_function_before_fit",
        cells=[
            "from sklearn import set_config",
            "import pandas as pd\nfrom sklearn.preprocessing import StandardScaler",
            'set_config(transform_output="pandas")',
            'df = pd.DataFrame({"a": [1.0, 2.0, 3.0]})',
            "df.head()",
            "scaler = StandardScaler()",
            "scaled = scaler.fit_transform(df)",
        ],
        target="scaled",
        must=[0, 1, 2, 3, 5, 6],
        must_not=[4],
    ),
    dict(
        # sklearn.set_config(...) through the module before a fit is kept
        id="sklearn_module_set_config_before_fit",
        cells=[
            "import sklearn",
            "from sklearn.linear_model import LogisticRegression",
            "sklearn.set_config(assume_finite=True)",
            _XY,
            "clf = LogisticRegression().fit(X, y)",
            "n_unrelated = 3",
        ],
        target="clf",
        must=[0, 1, 2, 3, 4],
        must_not=[5],
    ),
    dict(
        # pd.set_option before a kept pandas computation is kept
        id="pandas_set_option_before_kept_computation",
        cells=[
            "import pandas as pd",
            'pd.set_option("future.no_silent_downcasting", True)',
            "n = 3",
            'df = pd.DataFrame({"a": [1.0, None]})',
            "filled = df.fillna(0)",
        ],
        target="filled",
        must=[0, 1, 3, 4],
        must_not=[2],
    ),
    dict(
        # pd.set_option when the slice never uses pandas is not kept (nor the pandas import)
        id="pandas_config_unused_library_not_kept",
        cells=[
            "import pandas as pd",
            "import numpy as np",
            'pd.set_option("mode.copy_on_write", True)',
            "arr = np.arange(5)",
            "total = int(arr.sum())",
        ],
        target="total",
        must=[1, 3, 4],
        must_not=[0, 2],
    ),
    dict(
        # sklearn.set_config when the slice only uses pandas is not kept
        id="sklearn_config_unused_library_not_kept",
        cells=[
            "import sklearn",
            "sklearn.set_config(assume_finite=True)",
            "import pandas as pd",
            'df = pd.DataFrame({"a": [1.0, 2.0]})',
            "means = df.mean()",
        ],
        target="means",
        must=[2, 3, 4],
        must_not=[0, 1],
    ),
    dict(
        # torch.manual_seed counts as the RNG state for a later torch draw
        id="torch_manual_seed_is_rng",
        cells=[
            "import torch",
            "b = 5",
            "torch.manual_seed(0)",
            "w = torch.randn(3, 3)",
        ],
        target="w",
        must=[0, 2, 3],
        must_not=[1],
    ),
    # ------------------------------------------------------------------ 14. %cd
    dict(
        # %cd data then read x.csv matches data/x.csv written before; ./x.csv is another file
        id="cd_then_read_matches_earlier_relative_write",
        cells=[
            "import pandas as pd",
            'df0 = pd.DataFrame({"a": [1, 2]})',
            'df0.to_csv("data/x.csv", index=False)',
            'pd.DataFrame({"b": [0]}).to_csv("x.csv", index=False)',
            "%cd data",
            'df = pd.read_csv("x.csv")',
        ],
        target="df",
        must=[0, 1, 2, 4, 5],
        must_not=[3],
    ),
    dict(
        # written inside data/ after %cd data, read back as data/x.csv after %cd ..
        id="cd_write_inside_then_back_and_read",
        cells=[
            "import pandas as pd",
            "%cd data",
            'pd.DataFrame({"a": [1]}).to_csv("x.csv", index=False)',
            "%cd ..",
            'pd.DataFrame({"z": [9]}).to_csv("x.csv", index=False)',
            'df = pd.read_csv("data/x.csv")',
        ],
        target="df",
        must=[0, 1, 2, 3, 5],
        must_not=[4],
    ),
    # ------------------------------------------------------------------ 15. magic bodies
    dict(
        # %time model.fit(...) is an update; %timeit model.predict(...) is not
        id="time_line_magic_body_is_code",
        cells=[
            "from sklearn.linear_model import LogisticRegression",
            _XY,
            "model = LogisticRegression()",
            "%time model.fit(X, y)",
            "%timeit model.predict(X)",
        ],
        target="model",
        must=[0, 1, 2, 3],
        must_not=[4],
    ),
    dict(
        # %%time and %%capture bodies run: their fits are updates; a %%capture of a score is not
        id="time_and_capture_cell_magics",
        cells=[
            "from sklearn.ensemble import RandomForestClassifier",
            _XY,
            "%%time\nmodel = RandomForestClassifier(n_estimators=20, random_state=0)\nmodel.fit(X, y)\n",
            "%%capture cap\nprint(model.score(X, y))\n",
            "%%capture out\nmodel.fit(X[:3] + X[1:], y[:3] + y[1:])\n",
        ],
        target="model",
        must=[0, 1, 2, 4],
        must_not=[3],
    ),
    # ------------------------------------------------------------------ 16. imports
    dict(
        # only the imports a kept cell uses; an unused import inside a kept cell is fine
        id="unused_imports_not_kept",
        cells=[
            "import pandas as pd",
            "import seaborn as sns",
            "import matplotlib.pyplot as plt",
            "import numpy as np\nimport os",
            "arr = np.linspace(0, 1, 5)",
            "plt.plot(arr)",
        ],
        target="arr",
        must=[3, 4],
        must_not=[0, 1, 2, 5],
    ),
    # ------------------------------------------------------------------ 17. realistic notebooks
    dict(
        # titanic: load, explore, clean, plot, split, fit, evaluate, re-fit with new params
        id="e2e_titanic_model",
        cells=[
            "%pip install pandas scikit-learn matplotlib",  # 0
            _c(  # 1
                """
                import pandas as pd
                import numpy as np
                import matplotlib.pyplot as plt
                from sklearn.model_selection import train_test_split
                from sklearn.ensemble import RandomForestClassifier
                from sklearn.metrics import accuracy_score
                """
            ),
            "%matplotlib inline",  # 2
            'df = pd.read_csv("titanic.csv")',  # 3
            "df.head()",  # 4
            "df.describe()",  # 5
            'df["Survived"].value_counts()',  # 6
            _c(  # 7
                """
                df = df.dropna(subset=["Age", "Fare"])
                df["Sex"] = (df["Sex"] == "male").astype(int)
                """
            ),
            'plt.hist(df["Age"], bins=20)\nplt.title("Age distribution")\nplt.show()',  # 8
            _c(  # 9
                """
                features = ["Pclass", "Sex", "Age", "Fare"]
                X = df[features]
                y = df["Survived"]
                """
            ),
            "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)",  # 10
            "model = RandomForestClassifier(n_estimators=100, random_state=0)\nmodel.fit(X_train, y_train)",  # 11
            "preds = model.predict(X_test)\nprint(accuracy_score(y_test, preds))",  # 12
            "model = RandomForestClassifier(n_estimators=300, max_depth=6, random_state=0)\n"
            "model.fit(X_train, y_train)",  # 13
            "preds = model.predict(X_test)\nprint(accuracy_score(y_test, preds))",  # 14
            "plt.barh(features, model.feature_importances_)\nplt.show()",  # 15
        ],
        target="model",
        must=[1, 3, 7, 9, 10, 13],
        must_not=[0, 2, 4, 5, 6, 8, 11, 12, 14, 15],
    ),
    dict(
        # same notebook, target the last predictions: the second evaluation cell is added
        id="e2e_titanic_last_predictions",
        cells=[
            "%pip install pandas scikit-learn matplotlib",
            _c(
                """
                import pandas as pd
                import numpy as np
                import matplotlib.pyplot as plt
                from sklearn.model_selection import train_test_split
                from sklearn.ensemble import RandomForestClassifier
                from sklearn.metrics import accuracy_score
                """
            ),
            "%matplotlib inline",
            'df = pd.read_csv("titanic.csv")',
            "df.head()",
            "df.describe()",
            'df["Survived"].value_counts()',
            _c(
                """
                df = df.dropna(subset=["Age", "Fare"])
                df["Sex"] = (df["Sex"] == "male").astype(int)
                """
            ),
            'plt.hist(df["Age"], bins=20)\nplt.title("Age distribution")\nplt.show()',
            _c(
                """
                features = ["Pclass", "Sex", "Age", "Fare"]
                X = df[features]
                y = df["Survived"]
                """
            ),
            "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)",
            "model = RandomForestClassifier(n_estimators=100, random_state=0)\nmodel.fit(X_train, y_train)",
            "preds = model.predict(X_test)\nprint(accuracy_score(y_test, preds))",
            "model = RandomForestClassifier(n_estimators=300, max_depth=6, random_state=0)\n"
            "model.fit(X_train, y_train)",
            "preds = model.predict(X_test)\nprint(accuracy_score(y_test, preds))",
            "plt.barh(features, model.feature_importances_)\nplt.show()",
        ],
        target="preds",
        must=[1, 3, 7, 9, 10, 13, 14],
        must_not=[0, 2, 4, 5, 6, 8, 11, 12, 15],
    ),
    dict(
        # synthetic regression: seeded data, a helper function, a pipeline fitted, re-tuned, re-fitted
        id="e2e_ridge_pipeline_retuned",
        cells=[
            _c(  # 0
                """
                import numpy as np
                import pandas as pd
                from sklearn.pipeline import Pipeline
                from sklearn.preprocessing import StandardScaler
                from sklearn.linear_model import Ridge
                from sklearn.model_selection import train_test_split
                """
            ),
            "%matplotlib inline",  # 1
            "np.random.seed(42)",  # 2
            _c(  # 3
                """
                df = pd.DataFrame({"x1": np.random.randn(200), "x2": np.random.randn(200)})
                df["y"] = 3 * df["x1"] - 2 * df["x2"] + np.random.randn(200) * 0.1
                """
            ),
            "df.shape",  # 4
            "df.describe()",  # 5
            _c(  # 6
                """
                def add_features(frame):
                    frame = frame.copy()
                    frame["x1_sq"] = frame["x1"] ** 2
                    return frame
                """
            ),
            "df_feat = add_features(df)\ndf_feat.head()",  # 7
            _c(  # 8
                """
                X_train, X_test, y_train, y_test = train_test_split(
                    df_feat.drop(columns="y"), df_feat["y"], random_state=1
                )
                """
            ),
            'pipe = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=1.0))])',  # 9
            "pipe.fit(X_train, y_train)",  # 10
            "print(pipe.score(X_test, y_test))",  # 11
            "pipe.set_params(ridge__alpha=0.1)",  # 12
            "pipe.fit(X_train, y_train)",  # 13
            "print(pipe.score(X_test, y_test))",  # 14
            "residuals = y_test - pipe.predict(X_test)\nprint(residuals.describe())",  # 15
        ],
        target="pipe",
        must=[0, 2, 3, 6, 7, 8, 9, 10, 12, 13],
        must_not=[1, 4, 5, 11, 14, 15],
    ),
]


def _check(result, case: dict) -> None:
    n = len(case["cells"])
    assert isinstance(result, list), f"expected a list, got {type(result).__name__}"
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in result), result
    assert result == sorted(set(result)), f"not sorted and unique: {result}"
    assert all(0 <= i < n for i in result), f"index out of range 0..{n - 1}: {result}"
    missing = sorted(set(case["must"]) - set(result))
    extra = sorted(set(case["must_not"]) & set(result))
    assert not missing, f"needed executions missing {missing}; got {result}"
    assert not extra, f"unneeded executions kept {extra}; got {result}"


# ---------------------------------------------------------------------- sanity of the table itself


def test_table_has_enough_cases_with_unique_ids():
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 30
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_table_case_is_well_formed(case):
    n = len(case["cells"])
    must, must_not = set(case["must"]), set(case["must_not"])
    debatable = set(case.get("debatable", []))
    assert not must & must_not
    assert not debatable & (must | must_not)
    assert must | must_not | debatable == set(range(n)), "every index is classified"
    assert all(isinstance(cell, str) for cell in case["cells"])
    for cell in case["cells"]:  # the Python parts of every cell are valid Python
        if cell.startswith("%%"):
            body = cell.split("\n", 1)[1] if "\n" in cell else ""
            if cell.startswith("%%writefile") and not cell.split()[1].endswith(".py"):
                continue
        else:
            body = "\n".join(line for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
        ast.parse(body)


# ---------------------------------------------------------------------- the slicing cases


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_slice(case):
    slicing = _slicing()
    result = slicing.slice_cells(case["cells"], case["target"])
    _check(result, case)


def test_accepts_any_sequence_and_does_not_modify_it():
    # cells is a Sequence[str]: a tuple works, and the input list is left untouched
    slicing = _slicing()
    cells = ["x = 1", "x = 2", "y = x + 1"]
    before = list(cells)
    assert slicing.slice_cells(tuple(cells), "y") == [1, 2]
    assert slicing.slice_cells(cells, "y") == [1, 2]
    assert cells == before


def test_result_is_deterministic():
    slicing = _slicing()
    case = next(c for c in CASES if c["id"] == "e2e_titanic_model")
    first = slicing.slice_cells(case["cells"], case["target"])
    assert all(slicing.slice_cells(case["cells"], case["target"]) == first for _ in range(3))


# ---------------------------------------------------------------------- unknown target


@pytest.mark.parametrize(
    "cells",
    [
        pytest.param([], id="empty_history"),
        pytest.param(["import pandas as pd", "df = pd.DataFrame()"], id="other_names_only"),
        pytest.param(["x = 1", "print(missing_target_abc)"], id="only_read_never_defined"),
    ],
)
def test_unknown_target_raises_value_error_naming_it(cells):
    slicing = _slicing()
    with pytest.raises(ValueError, match="missing_target_abc"):
        slicing.slice_cells(cells, "missing_target_abc")


# ---------------------------------------------------------------------- rules


def test_default_rules_classify_the_specified_methods():
    # the spec names these as updates and as pure methods respectively
    slicing = _slicing()
    rules = slicing.DEFAULT_RULES
    assert isinstance(rules, slicing.SliceRules)
    assert isinstance(rules.mutating, frozenset) and isinstance(rules.pure, frozenset)
    assert {
        "fit",
        "partial_fit",
        "set_params",
        "fit_transform",
        "append",
        "extend",
        "update",
        "pop",
        "sort",
    } <= rules.mutating
    assert {"predict", "score", "head", "describe", "get_params"} <= rules.pure


def test_extend_returns_new_frozen_rules_and_leaves_defaults_alone():
    slicing = _slicing()
    defaults = slicing.DEFAULT_RULES
    before_mutating, before_pure = defaults.mutating, defaults.pure
    extended = defaults.extend(mutating=["warm_start_more"], pure=["report"])
    assert isinstance(extended, slicing.SliceRules)
    assert extended is not defaults
    assert "warm_start_more" in extended.mutating and "report" in extended.pure
    assert before_mutating <= extended.mutating and before_pure <= extended.pure
    assert defaults.mutating == before_mutating and defaults.pure == before_pure
    assert "report" not in defaults.pure and "warm_start_more" not in defaults.mutating
    with pytest.raises(dataclasses.FrozenInstanceError):
        extended.pure = frozenset()  # type: ignore[misc]


_BOOSTER = [
    "from mylib import Booster",  # 0
    "model = Booster()",  # 1
    "model.report()",  # 2  unknown method: an update by default
    "model.train_more([1, 2, 3])",  # 3  unknown method: an update by default
    "model.calibrate(0.5)",  # 4  unknown method: an update by default
]


def test_unknown_methods_are_updates_with_default_rules():
    slicing = _slicing()
    result = slicing.slice_cells(_BOOSTER, "model")
    assert result == [0, 1, 2, 3, 4]
    # passing DEFAULT_RULES explicitly is the same
    assert slicing.slice_cells(_BOOSTER, "model", rules=slicing.DEFAULT_RULES) == result


def test_extend_pure_drops_cells_that_only_call_those_methods():
    slicing = _slicing()
    rules = slicing.DEFAULT_RULES.extend(pure=["report", "calibrate"])
    assert slicing.slice_cells(_BOOSTER, "model", rules=rules) == [0, 1, 3]


def test_extend_mutating_keeps_the_declared_method():
    slicing = _slicing()
    rules = slicing.DEFAULT_RULES.extend(mutating=["train_more"], pure=["report", "calibrate"])
    assert slicing.slice_cells(_BOOSTER, "model", rules=rules) == [0, 1, 3]
    # declared mutating but nothing else pure: every call still counts
    rules = slicing.DEFAULT_RULES.extend(mutating=["report"])
    assert slicing.slice_cells(_BOOSTER, "model", rules=rules) == [0, 1, 2, 3, 4]


def test_extend_pure_changes_an_alias_case_too():
    # a custom pure method through an alias does not update; the default (unknown) does
    slicing = _slicing()
    cells = [
        "from mylib import Booster",
        "model = Booster()",
        "view = model",
        "view.summary()",
        "model.train_more([1])",
    ]
    assert slicing.slice_cells(cells, "model") == [0, 1, 2, 3, 4]
    rules = slicing.DEFAULT_RULES.extend(pure=["summary"])
    result = slicing.slice_cells(cells, "model", rules=rules)
    assert 3 not in result and {0, 1, 4} <= set(result)


# ---------------------------------------------------------------------- never executes user code


def test_never_executes_user_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixed = "/tmp/should-not-exist-XYZ"
    existed_before = os.path.exists(fixed)
    unique = tmp_path.parent / f"slice-sentinel-{os.getpid()}-{tmp_path.name}"
    (tmp_path / "evil_mod_xyz.py").write_text(
        f"open({str(tmp_path / 'imported.txt')!r}, 'w').write('imported')\nthing = lambda: 1\n"
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    cells = [
        "open('/tmp/should-not-exist-XYZ', 'w').write('boom')",  # 0
        f"open({str(unique)!r}, 'w').write('boom')",  # 1
        "1/0",  # 2
        "raise SystemExit(3)",  # 3
        "%%writefile written_by_magic.py\nVALUE = 1\n",  # 4
        "!touch touched_by_shell.txt",  # 5
        "import os\nos.makedirs('made_dir', exist_ok=True)\nwith open('sentinel.txt', 'w') as fh:\n    fh.write('x')",  # 6
        "from evil_mod_xyz import *",  # 7
        "%run written_by_magic.py",  # 8
        "result = VALUE / 0 + thing()",  # 9
        "%cd /",  # 10
        "import sys\nsys.path.insert(0, 'nowhere')",  # 11
    ]
    slicing = _slicing()
    path_before, cwd_before = list(sys.path), os.getcwd()
    out = slicing.slice_cells(cells, "result")
    assert 9 in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written here
    assert not unique.exists()
    if not existed_before:
        assert not os.path.exists(fixed)
    assert "evil_mod_xyz" not in sys.modules
    assert os.getcwd() == cwd_before
    assert sys.path == path_before
    # a definition that would raise if run is still sliced
    assert slicing.slice_cells(["x = 1 / 0", "y = x + 1"], "y") == [0, 1]


def test_a_percent_that_continues_an_expression_is_python_not_a_magic():
    """From scikit-learn's gallery (plot_ols.py): a ``%`` opening a line inside brackets is the modulo
    operator; IPython runs it as Python, so the slicer must read it as Python too."""
    cell = _c(
        """
        regr = make_model()
        print("Mean squared error: %.2f"
              % score(regr))
        text = '''
        %not_a_magic
        '''
        %matplotlib inline
        """
    )
    python = _slicing().to_python(cell)
    assert "% score(regr))" in python and "%not_a_magic" in python
    assert "__nd_magic__('matplotlib', 'inline')" in python
    assert _slicing().slice_cells([cell, "regr.fit(X)"], "regr") == [0, 1]
