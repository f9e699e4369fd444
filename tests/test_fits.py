"""The fit observer without a kernel: which calls the AST transformer rewrites, and what it records."""

from __future__ import annotations

import ast

import numpy as np
from sklearn.linear_model import LinearRegression

from notebook_deploy.capturing import fits


def run(source: str, namespace: dict) -> None:
    tree = ast.fix_missing_locations(fits.FitCalls().visit(ast.parse(source)))
    namespace[fits.OBSERVER] = fits.observe
    exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the test's own code


def test_a_chained_fit_is_recorded_for_the_model_it_returns_with_a_copy_of_the_first_rows():
    namespace = {"LinearRegression": LinearRegression, "X": np.arange(20.0).reshape(10, 2), "y": np.arange(10.0)}
    run("model = LinearRegression().fit(X, y)\nX[:] = -1  # changed in place afterwards", namespace)
    fit = fits.LOG.find(namespace["model"])
    assert fit.call == "LinearRegression().fit" and fit.data == "X" and fit.problem is None
    assert fit.rows.tolist() == np.arange(10.0).reshape(5, 2).tolist()


def test_fits_inside_functions_and_classes_are_left_as_written():
    source = "def train(X):\n    return Model().fit(X)\nclass C:\n    def fit(self, X):\n        self.inner.fit(X)\n"
    assert ast.unparse(fits.FitCalls().visit(ast.parse(source))) == ast.unparse(ast.parse(source))


def test_a_training_call_with_a_dataset_is_described_by_the_dataset_rows():
    tree = fits.FitCalls().visit(ast.parse("booster = lgb.train(params, lgb.Dataset(X_train, y), 10)"))
    assert f"{fits.OBSERVER}(lgb.train, 'lgb.train', 'X_train')(params, lgb.Dataset(X_train, y), 10)" in ast.unparse(
        tree
    )


def test_data_that_is_not_rows_is_recorded_with_the_reason():
    namespace = {"LinearRegression": LinearRegression}

    class Stream:
        def fit(self, data):
            return self

    namespace["Stream"] = Stream
    run("s = Stream().fit('train.bin')", namespace)
    assert fits.LOG.find(namespace["s"]).problem == "the data is a file ('train.bin'), not rows in memory"
