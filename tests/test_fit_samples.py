"""The default sample is the data the model was fitted on, observed in real kernels with real libraries
(scikit-learn, LightGBM, statsmodels); served predictions equal the kernel's own. Also the failing-cell
messages of deploy_notebook and verify, and repeated warnings of %deploy shown once."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
import requests
from test_notebooks import Kernel, captured, with_recipe_cell

import notebook_deploy as nd
from notebook_deploy.errors import CaptureError

pytestmark = pytest.mark.integration


@pytest.fixture
def session(tmp_path):
    store = nd.Store(tmp_path / "store")
    (tmp_path / "work").mkdir()
    running = Kernel(tmp_path / "work", store.root)
    yield running, store, tmp_path / "work"
    running.close()


def run(kernel: Kernel, *cells: str) -> str:
    """Run the cells one after another, as separate executions; what the last one printed."""
    return [kernel.run(cell) for cell in cells][-1]


def kernel_json(kernel: Kernel, expression: str):
    return json.loads(kernel.run(f"import json as _j\nprint(_j.dumps({expression}))"))


def served(bundle: nd.Bundle, instances: list) -> list:
    with nd.serve(bundle) as server:
        answer = server.post("/predict", {"instances": instances})
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]


def test_chained_fit_of_a_name_rebound_later_and_digits_data_give_the_rows_the_model_saw(session):
    kernel, store, _ = session
    kernel.run("%load_ext notebook_deploy")
    kernel.run(
        "import numpy as np\nfrom sklearn.linear_model import LinearRegression\n"
        "from sklearn.datasets import load_digits\nfrom sklearn.naive_bayes import GaussianNB"
    )
    kernel.run("rng = np.random.RandomState(0)\nX = rng.rand(30, 1)\ny = 3 * X[:, 0] + 1")
    kernel.run("model = LinearRegression().fit(X, y)")
    kernel.run("X = np.hstack([X, X ** 2, X ** 3])  # the name is rebound: the model still takes 1 feature")
    output = kernel.run("%deploy model")
    bundle = captured(output, store)
    assert bundle.manifest["schema"]["input"]["shape"] == [1]
    assert "sample    the first rows of X, passed to LinearRegression().fit in cell [4]" in output
    assert served(bundle, [[0.25], [2.0]]) == pytest.approx(
        kernel_json(kernel, "model.predict([[0.25], [2.0]]).tolist()")
    )

    kernel.run("digits = load_digits()\nnb = GaussianNB()\nnb.fit(digits.data, digits.target)")
    output = kernel.run("%deploy nb")
    assert "the first rows of digits.data, passed to nb.fit" in output
    assert captured(output, store).manifest["schema"]["input"]["shape"] == [64]

    refused = kernel.run("%deploy nb --sample X")
    assert "refuses the sample (given by --sample X): predict, predict_proba, predict_log_proba: ValueError" in refused
    assert "Captured" not in refused

    kernel.run(
        "import pandas as pd\ndef train(rows):\n    inner = LinearRegression()\n    inner.fit(rows, rows.a)\n"
        "    return inner\nhidden = train(pd.DataFrame({'a': [1.0, 2.0, 3.0]}))"
    )
    unseen = kernel.run("%deploy hidden")
    assert "no sample: no fitting call of this LinearRegression was observed" in unseen, unseen
    assert "(not those inside functions)" in unseen and "the cells have no hidden.fit(NAME, ...) call" in unseen
    assert "--sample 'X_train[:5]'" in unseen and "Captured" not in unseen


def test_a_model_fitted_before_the_extension_is_loaded_is_not_given_its_rebound_name(session):
    kernel, store, _ = session
    output = run(
        kernel,
        "import numpy as np\nfrom sklearn.linear_model import LinearRegression",
        "X = np.arange(20.0).reshape(-1, 1)\nmodel = LinearRegression()\nmodel.fit(X, X[:, 0] * 2)",
        "X = np.hstack([X, X])",
        "%load_ext notebook_deploy",
        "%deploy model",
    )
    assert captured(output, store).manifest["schema"]["input"]["shape"] == [1]
    assert "sample    made up: 1 zeros, from the model's n_features_in_" in output


def test_lightgbm_train_and_a_statsmodels_formula_are_sampled_from_their_data(session):
    kernel, store, _ = session
    output = run(
        kernel,
        "%load_ext notebook_deploy",
        "import numpy as np, pandas as pd\nimport lightgbm as lgb\nimport statsmodels.formula.api as smf",
        "rng = np.random.RandomState(1)\nX = rng.rand(300, 4)\ny = 2 * X[:, 0] + X[:, 1] + rng.rand(300) / 10",
        "booster = lgb.train({'verbose': -1, 'num_leaves': 7, 'seed': 0}, lgb.Dataset(X, y), num_boost_round=20)",
        "%deploy booster",
    )
    bundle = captured(output, store)
    assert "the first rows of X, passed to lgb.train in cell [4]" in output
    assert bundle.manifest["schema"]["input"]["shape"] == [4]
    rows = kernel_json(kernel, "X[10:13].tolist()")
    assert served(bundle, rows) == pytest.approx(kernel_json(kernel, "booster.predict(X[10:13]).tolist()"), rel=1e-12)

    kernel.run(
        "df = pd.DataFrame({'x': X[:, 0], 'z': X[:, 1] + 1, 'y': y})\nols = smf.ols('y ~ x + np.log(z)', data=df).fit()"
    )
    output = kernel.run("%deploy ols")
    bundle = captured(output, store)
    assert "the DataFrame the formula 'y ~ x + np.log(z)' read, passed to smf.ols" in output
    columns = {c["name"]: c.get("optional", False) for c in bundle.manifest["schema"]["input"]["columns"]}
    assert columns == {"x": False, "z": False, "y": True}  # predict does not read the response
    expected = kernel_json(kernel, "ols.predict(pd.DataFrame({'x': [0.5, 0.1], 'z': [1.2, 1.9]})).tolist()")
    assert served(bundle, [{"x": 0.5, "z": 1.2}, {"x": 0.1, "z": 1.9}]) == pytest.approx(expected, rel=1e-12)


def test_integer_column_labels_are_served_over_http_with_text_keys(session):
    kernel, store, work = session
    (work / "plain.csv").write_text("".join(f"{i % 7},{i * 0.5},{(i * 7) % 5}\n" for i in range(40)))
    kernel.run("%load_ext notebook_deploy")
    kernel.run("import pandas as pd\nfrom sklearn.tree import DecisionTreeRegressor")
    kernel.run(
        "data = pd.read_csv('plain.csv', header=None)\ntree = DecisionTreeRegressor(random_state=0)\n"
        "tree.fit(data[[0, 1]], data[2])"
    )
    bundle = captured(kernel.run("%deploy tree"), store)
    assert [c["label"] for c in bundle.manifest["schema"]["input"]["columns"]] == [0, 1]
    expected = kernel_json(kernel, "tree.predict(pd.DataFrame({0: [3, 5], 1: [2.5, 9.0]})).tolist()")
    assert served(bundle, [{"0": 3, "1": 2.5}, {"0": 5, "1": 9.0}]) == expected
    with nd.serve(bundle) as server:
        docs = requests.get(server.url + "/openapi.json", timeout=30).json()["info"]["description"]
    assert "the JSON keys '0', '1' stand for the DataFrame's column labels 0, 1" in docs


def test_repeated_library_warnings_of_deploy_are_shown_once_with_a_count(session):
    kernel, store, _ = session
    kernel.run("%load_ext notebook_deploy")
    kernel.run("import pandas as pd\nfrom sklearn.linear_model import LinearRegression")
    kernel.run(
        "frame = pd.DataFrame({'a': [1.0, 2, 3, 4, 5, 6], 'b': [2.0, 1, 0, 1, 2, 3]})\n"
        "fitted = LinearRegression().fit(frame, frame.a * 2)"
    )
    output = kernel.run("%deploy fitted --sample frame.values")
    assert "Captured" in output
    lines = [line for line in output.splitlines() if "does not have valid feature names" in line]
    assert len(lines) == 1 and re.search(r"raised \d+ times; shown once", lines[0]), output


def test_a_failing_cell_is_named_by_code_cell_saved_count_and_line(tmp_path):
    notebook = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell("import numpy as np")
    first.execution_count = 3
    second = nbformat.v4.new_code_cell("x = np.arange(3)\ny = undefined_name + 1\nz = 2")
    second.execution_count = 5
    notebook.cells = [nbformat.v4.new_markdown_cell("# Title"), first, nbformat.v4.new_markdown_cell("text"), second]
    nbformat.write(notebook, tmp_path / "broken.ipynb")
    with pytest.raises(CaptureError) as error:
        nd.deploy_notebook(tmp_path / "broken.ipynb", "y", sample="[[1.0]]", store=tmp_path / "store")
    assert str(error.value) == (
        "code cell 2 (saved as [5]) of broken.ipynb failed, line 2: `y = undefined_name + 1`: "
        "NameError: name 'undefined_name' is not defined"
    )


def test_verify_names_the_failing_recipe_cell_and_its_line(session):
    kernel, store, work = session
    kernel.run("%load_ext notebook_deploy")
    kernel.run("import numpy as np\nfrom sklearn.linear_model import LinearRegression")
    kernel.run("X = np.arange(10.0).reshape(5, 2)")
    kernel.run("lr = LinearRegression().fit(X, X[:, 0])")
    bundle = captured(kernel.run("%deploy lr"), store)
    report = nd.verify(
        with_recipe_cell(bundle, work / "edited", 1, "X = np.arange(10.0).reshape(5, 2)\nraise ValueError('boom')")
    )
    assert not report.reproducible
    assert (
        report.summary
        == "cell [3] (code cell 2 of the recipe), line 2: `raise ValueError('boom')` raised ValueError: boom"
    )
