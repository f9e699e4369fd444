"""Capture of live models: package state, pickling of local code, methods, samples and naming."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import notebook_deploy as nd
from notebook_deploy.errors import CaptureError


def _lock(bundle: nd.Bundle) -> dict[str, str]:
    return dict(line.split("==") for line in bundle.lock())


def test_lock_pins_what_a_numpy_model_needs_and_nothing_else(forest_bundle):
    import boto3  # noqa: F401  - loaded in this process, yet not needed by the model

    lock = _lock(forest_bundle)
    for name in ("scikit-learn", "numpy", "scipy"):
        assert lock[name] == metadata.version(name)
    assert not {"boto3", "botocore", "pandas", "notebook-deploy", "pytest"} & set(lock)
    assert forest_bundle.requirements == [f"scikit-learn=={metadata.version('scikit-learn')}"]


def test_lock_of_a_pandas_pipeline_pins_pandas(pipeline_bundle):
    lock = _lock(pipeline_bundle)
    for name in ("scikit-learn", "numpy", "scipy", "pandas"):
        assert lock[name] == metadata.version(name)
    assert "boto3" not in lock


def test_environment_snapshot_lists_everything_installed(forest_bundle):
    names = {d["name"].lower() for d in forest_bundle.environment()["distributions"]}
    assert {"boto3", "scikit-learn", "pytest"} <= names


def test_same_capture_twice_is_the_same_version(forest, iris, store):
    first = nd.capture(forest, name="forest", sample=iris[0][:5], store=store)
    second = nd.capture(forest, name="forest", sample=iris[0][:5], store=store)
    assert first.version == second.version
    assert len(store.list("forest")) == 1


def test_a_changed_model_is_a_new_version_whose_parent_is_the_last(iris, store):
    X, y = iris
    first = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="lr", sample=X[:3], store=store)
    second = nd.capture(LogisticRegression(max_iter=500, C=0.1).fit(X, y), name="lr", sample=X[:3], store=store)
    assert first.version != second.version
    assert first.manifest["parent"] is None
    assert second.manifest["parent"] == first.version
    assert store.get("lr").version == second.version


def test_name_defaults_to_the_callers_variable(iris, store):
    X, y = iris
    churn_model = LogisticRegression(max_iter=500).fit(X, y)
    assert nd.capture(churn_model, sample=X[:2], store=store).name == "churn_model"


def test_inference_methods_and_sample_outputs_are_recorded(forest_bundle, forest, iris):
    assert forest_bundle.methods == ["predict", "predict_proba", "predict_log_proba"]
    sample = forest_bundle.sample
    assert len(sample["instances"]) == 5
    assert sample["outputs"]["predict"] == forest.predict(iris[0][:5]).tolist()
    assert forest_bundle.manifest["schema"]["input"] == {
        "type": "tensor",
        "kind": "float",
        "dtype": "float64",
        "shape": [4],
        "domain": {"nullable": True, "limit": 3.4028234663852886e38},  # a forest computes in float32
    }


class _PartlyBroken:
    def predict(self, rows):
        return np.asarray(rows).sum(axis=1)

    def transform(self, rows):
        raise RuntimeError("transform is not implemented")


def test_a_method_that_fails_on_the_sample_is_left_out_with_a_warning(store):
    bundle = nd.capture(_PartlyBroken(), name="partly", sample=np.ones((2, 3)), store=store)
    assert bundle.methods == ["predict"]
    assert any("transform is not served" in w and "not implemented" in w for w in bundle.warnings)


def test_a_requested_method_that_fails_refuses_the_capture(store):
    with pytest.raises(CaptureError, match="transform failed on the sample"):
        nd.capture(_PartlyBroken(), name="partly", sample=np.ones((2, 3)), methods=["transform"], store=store)
    assert store.list() == []


def test_a_requested_method_the_model_lacks_is_named(store):
    with pytest.raises(CaptureError, match="_PartlyBroken has no inference method 'decision_function'"):
        nd.capture(_PartlyBroken(), name="partly", sample=np.ones((2, 3)), methods=["decision_function"], store=store)
    assert store.list() == []


def test_each_method_is_resolved_once_and_the_same_callable_serves_every_step(store):
    class Counting:
        lookups = 0

        def __getattribute__(self, attribute):
            if attribute == "predict":
                type(self).lookups += 1
            return object.__getattribute__(self, attribute)

        def predict(self, rows):
            return np.asarray(rows).sum(axis=1)

    bundle = nd.capture(Counting(), name="counting", sample=np.ones((4, 2)), store=store)
    assert bundle.methods == ["predict"] and bundle.batchable
    # once to list the methods, once to resolve it; the probes, the drift reference and the batching
    # check reuse that callable
    assert Counting.lookups == 2


def test_a_plain_function_is_served_as_predict(store):
    def double(rows):
        return np.asarray(rows) * 2

    bundle = nd.capture(double, name="double", sample=[[1.0, 2.0]], store=store)
    assert bundle.methods == ["predict"]
    assert nd.load("double", store).predict(np.array([[3.0, 4.0]])).tolist() == [[6.0, 8.0]]


def test_without_a_sample_the_error_says_what_to_pass(store):
    with pytest.raises(CaptureError, match=r"sample=X_train\[:5\]"):
        nd.capture(_PartlyBroken(), name="nosample", store=store)


def test_without_a_sample_a_fitted_estimator_gives_its_feature_count(iris, store):
    X, y = iris
    bundle = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="nosample", store=store)
    assert bundle.manifest["schema"]["input"]["shape"] == [4]
    assert any("no sample was given" in w for w in bundle.warnings)


class _UnloadableHere:
    """Pickles fine, but fails to load in any other process."""

    def __reduce__(self):
        return (_refuse_to_load, ())

    def predict(self, rows):
        return np.zeros(len(rows))


def _refuse_to_load():
    raise RuntimeError("this object cannot be rebuilt")


def test_a_model_that_cannot_load_in_a_fresh_python_is_refused(store):
    with pytest.raises(CaptureError, match="(?s)could not be loaded.*cannot be rebuilt"):
        nd.capture(_UnloadableHere(), name="unloadable", sample=np.ones((1, 2)), store=store)
    assert store.list() == []


@pytest.mark.integration
def test_local_modules_are_shipped_inside_the_pickle(tmp_path, store, iris, monkeypatch):
    """A helper module next to the notebook is not installed anywhere: the bundle must carry it."""
    helpers = tmp_path / "src"
    helpers.mkdir()
    (helpers / "feature_helpers_xyz.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def add_ratio(rows):
                rows = np.asarray(rows)
                return np.column_stack([rows, rows[:, 0] / rows[:, 1]])
            """
        )
    )
    monkeypatch.syspath_prepend(str(helpers))
    import feature_helpers_xyz

    X, y = iris
    model = make_pipeline(FunctionTransformer(feature_helpers_xyz.add_ratio), LogisticRegression(max_iter=500)).fit(
        X, y
    )
    bundle = nd.capture(model, name="ratio", sample=X[:5], store=store)
    assert bundle.manifest["serialization"]["by_value_modules"] == ["feature_helpers_xyz"]
    assert any("feature_helpers_xyz" in w for w in bundle.warnings)

    # In a fresh Python that cannot import the helper, the bundle still loads and predicts the same.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import sys, json, numpy as np, notebook_deploy as nd\n"
        "assert 'feature_helpers_xyz' not in sys.modules\n"
        f"b = nd.load({str(bundle.path)!r})\n"
        f"print(json.dumps(b.predict(np.array({X[:20].tolist()})).tolist()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(model.predict(X[:20]).tolist())


def test_an_editable_install_in_the_lock_is_a_warning(tmp_path):
    """A real dist-info folder, as pip leaves it for `pip install -e`, read through importlib.metadata."""
    from notebook_deploy.capturing.packages import _origin_warnings

    info = tmp_path / "mylib-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylib\nVersion: 0.1.0\n")
    (info / "direct_url.json").write_text('{"url": "file:///home/ana/mylib", "dir_info": {"editable": true}}')
    [warning] = _origin_warnings(metadata.PathDistribution(info))
    assert "mylib is an editable install" in warning and "mylib==0.1.0" in warning


def test_a_module_no_distribution_owns_is_a_warning(tmp_path):
    from notebook_deploy.capturing.packages import state_from_modules

    orphan = tmp_path / "orphan_module.py"
    orphan.write_text("")
    state = state_from_modules({"orphan_module": str(orphan), "json": None}, owners={})
    assert state.lock == {}
    [warning] = state.warnings
    assert "module 'orphan_module' is used by the model but belongs to no installed distribution" in warning


def test_environment_variables_never_reach_a_bundle(iris, store, monkeypatch):
    marker = "nd-env-marker-8f3a1c"
    monkeypatch.setenv("SOME_SERVICE_TOKEN", marker)
    X, y = iris
    bundle = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="env", sample=X[:3], store=store)
    for file in bundle.path.iterdir():
        assert marker.encode() not in file.read_bytes(), file.name


def test_float_values_the_model_refuses_are_found_at_capture_and_refused_with_422(store, iris):
    from fastapi.testclient import TestClient
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    bundle = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="linear", sample=X[:5], store=store)
    assert bundle.manifest["schema"]["input"]["domain"] == {"nullable": False, "limit": None}
    with TestClient(nd.create_app(bundle)) as client:
        missing = client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2], [5.1, None, 1.4, 0.2]]})
        assert missing.status_code == 422
        assert missing.json()["detail"] == (
            "row 1, position 1: expected a number (this model does not take missing values), got null"
        )
        row = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]["properties"]["instances"]["items"]
        assert row["items"] == {"type": "number"}


def test_a_torch_module_is_served_as_predict_on_tensors(store):
    torch = pytest.importorskip("torch")
    from fastapi.testclient import TestClient

    from notebook_deploy.jupyter.panel import looks_like_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    rows = np.random.default_rng(0).normal(size=(6, 4))  # float64: sent to the float32 module as float32
    bundle = nd.capture(net, name="net", sample=torch.from_numpy(rows), store=store)
    assert bundle.methods == ["predict"] and looks_like_model(net)
    assert _lock(bundle)["torch"] == metadata.version("torch")
    expected = net(torch.from_numpy(rows).float()).detach().numpy()
    np.testing.assert_allclose(bundle.predict(rows), expected, rtol=1e-6)
    with TestClient(nd.create_app(bundle)) as client:
        answer = client.post("/predict", json={"instances": rows.tolist()})
    np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-6)


def test_a_chosen_sample_the_model_refuses_is_refused_naming_where_it_came_from(iris, store):
    X, y = iris
    model = LogisticRegression(max_iter=500).fit(X, y)
    with pytest.raises(
        CaptureError,
        match=r"refuses the sample \(given by --sample X\[:, :3\]\): predict, "
        r"predict_proba, .*3 features.*Pass rows the model takes",
    ):
        nd.capture(model, name="narrow", sample=X[:5, :3], sample_source="given by --sample X[:, :3]", store=store)
    assert store.list() == []
    bundle = nd.capture(model, name="wide", sample=X[:5], store=store)
    assert bundle.manifest["sample"] == {"source": "given as sample=", "rows": 5}
    assert "sample    5 rows: given as sample=" in str(bundle)


def test_integer_column_labels_are_captured_and_served_with_text_keys(store, tmp_path):
    pd = pytest.importorskip("pandas")
    from fastapi.testclient import TestClient
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    (tmp_path / "plain.csv").write_text("".join(f"{i},{i * 0.5},{(i * 7) % 5}\n" for i in range(20)))
    frame = pd.read_csv(tmp_path / "plain.csv", header=None)  # columns labelled 0, 1, 2
    X, y = frame[[0, 1]], frame[2]
    model = make_pipeline(ColumnTransformer([("scale", StandardScaler(), [0, 1])]), LinearRegression()).fit(X, y)
    bundle = nd.capture(model, name="unnamed", sample=X[:5], store=store)
    columns = bundle.manifest["schema"]["input"]["columns"]
    assert [(c["name"], c["label"]) for c in columns] == [("0", 0), ("1", 1)]
    assert bundle.sample["instances"][0] == {"0": 0, "1": 0.0}
    rows = [{"0": 3, "1": 1.5}, {"0": 11, "1": 5.5}]
    with TestClient(nd.create_app(bundle)) as client:
        answer = client.post("/predict", json={"instances": rows}).json()
        split = json.loads(X.iloc[[3, 11]].to_json(orient="split", index=False))  # "columns": [0, 1]
        mlflow = client.post("/invocations", json={"dataframe_split": split}).json()
        docs = client.get("/openapi.json").json()
    expected = model.predict(X.iloc[[3, 11]]).tolist()
    assert answer["predictions"] == mlflow["predictions"] == pytest.approx(expected, rel=1e-12)
    assert "the JSON keys '0', '1' stand for the DataFrame's column labels 0, 1" in docs["info"]["description"]


def test_a_column_the_fitted_pipeline_drops_is_optional_once_a_probe_confirms_it(store):
    pd = pytest.importorskip("pandas")
    from fastapi.testclient import TestClient
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": rng.normal(size=40),
            "city": rng.choice(["a", "b"], 40),
            "note": rng.choice(["x", "y", "z"], 40),
            "id": np.arange(40),
        }
    )
    y = frame["size"] * 3 + (frame["city"] == "a")
    used = ColumnTransformer([("num", "passthrough", ["size"]), ("cat", OneHotEncoder(), ["city"])], remainder="drop")
    model = make_pipeline(used, LinearRegression()).fit(frame, y)
    bundle = nd.capture(model, name="dropping", sample=frame[:5], store=store)
    optional = {c["name"]: c.get("fill") for c in bundle.manifest["schema"]["input"]["columns"] if c.get("optional")}
    assert optional == {"note": frame["note"][0], "id": 0}
    row = bundle.input_schema.json_schema()["anyOf"][0]
    assert row["required"] == ["size", "city"] and "does not use it" in row["properties"]["id"]["description"]
    with TestClient(nd.create_app(bundle)) as client:
        short = client.post("/predict", json={"instances": [{"size": 1.5, "city": "b"}]})
        full = client.post("/predict", json={"instances": [{"size": 1.5, "city": "b", "note": "q", "id": 7}]})
        missing = client.post("/predict", json={"instances": [{"city": "b"}]})
    expected = model.predict(pd.DataFrame({"size": [1.5], "city": ["b"], "note": ["q"], "id": [7]})).tolist()
    assert short.json()["predictions"] == full.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    assert missing.status_code == 422 and "missing feature 'size'" in missing.json()["detail"]


def test_a_column_the_pipeline_names_as_dropped_but_the_model_reads_stays_required(store):
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer

    frame = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2})

    # the ColumnTransformer drops "b", but the function after it reads the frame it was given: b matters
    def add_b(rows):
        return np.asarray(rows["b"])

    class Reads:
        def __init__(self, inner):
            self.steps = [("ct", inner)]

        def predict(self, rows):
            return add_b(rows) + 1

    ct = ColumnTransformer([("a", "passthrough", ["a"])], remainder="drop").fit(frame)
    bundle = nd.capture(Reads(ct), name="reads", sample=frame[:5], store=store)
    assert not any(c.get("optional") for c in bundle.manifest["schema"]["input"]["columns"])


def test_a_library_warning_raised_at_every_call_of_a_capture_is_shown_once_with_a_count(iris, store):
    pd = pytest.importorskip("pandas")
    import warnings

    X, y = iris
    model = LogisticRegression(max_iter=500).fit(pd.DataFrame(X, columns=list("abcd")), y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the sample is an array: scikit-learn warns at each call that it has no feature names
        nd.capture(model, name="nameless", sample=X[:5], store=store)
    texts = [str(w.message) for w in caught if "valid feature names" in str(w.message)]
    assert len(texts) == 1 and re.search(r"\(raised \d+ times; shown once\)", texts[0]), texts
