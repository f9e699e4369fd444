"""Drift monitoring: reference statistics at capture, PSI and KS, the served window, its route and gauges,
and the prediction log."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pytest
import requests
import scipy.stats
from fastapi.testclient import TestClient

import notebook_deploy as nd
from notebook_deploy import drift
from notebook_deploy.bundle import REFERENCE_FILE
from notebook_deploy.errors import BundleIntegrityError, CaptureError

RNG = np.random.default_rng(0)


# -- statistics -----------------------------------------------------------------------------------------
def test_psi_of_identical_distributions_is_about_zero():
    reference = drift.numeric_reference("x", RNG.normal(0, 1, 5000))
    assert drift.compare(reference, RNG.normal(0, 1, 1000))["psi"] < 0.05
    assert drift.psi([10, 20, 30], [10, 20, 30]) == 0
    assert drift.psi([1000, 2000, 7000], [100, 200, 700]) == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize("shift", [1.0, -1.0])
def test_psi_of_a_shifted_distribution_is_above_the_threshold(shift):
    reference = drift.numeric_reference("x", RNG.normal(0, 1, 5000))
    assert drift.compare(reference, RNG.normal(shift, 1, 1000))["psi"] > 0.2


def test_psi_of_an_empty_bin_is_finite():
    assert np.isfinite(drift.psi([50, 50], [100, 0]))


@pytest.mark.parametrize("n, m, shift", [(150, 500, 0.0), (300, 300, 0.3), (800, 100, 0.2), (40, 1000, 1.0)])
def test_ks_equals_scipy_for_references_kept_whole(n, m, shift):
    a, b = RNG.normal(0, 1, n), RNG.normal(shift, 1, m)
    result = drift.compare(drift.numeric_reference("x", a), b)
    expected = scipy.stats.ks_2samp(a, b, method="asymp")
    assert result["ks"] == pytest.approx(expected.statistic, abs=1e-12)
    assert result["ks_pvalue"] == pytest.approx(expected.pvalue, abs=0.01)


def test_ks_of_a_large_reference_is_within_its_quantile_resolution():
    a, b = RNG.normal(0, 1, 20000), RNG.normal(0.1, 1, 1000)
    reference = drift.numeric_reference("x", a)
    assert len(reference["ks_points"]) == drift.KS_POINTS
    exact = scipy.stats.ks_2samp(a, b).statistic
    assert drift.compare(reference, b)["ks"] == pytest.approx(exact, abs=2 / drift.KS_POINTS)


@pytest.mark.parametrize("x", [0.1, 0.5, 0.9, 1.17, 1.19, 1.5, 2.5])
def test_kolmogorov_distribution_equals_scipy(x):
    assert drift.kolmogorov_sf(x) == pytest.approx(scipy.stats.kstwobign.sf(x), rel=1e-9, abs=1e-15)


def test_categories_have_proportions_and_no_ks():
    values = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10 + [None] * 5, dtype=object)
    reference = drift.categorical_reference("city", values)
    assert reference["categories"] == ["a", "b", "c"] and reference["missing"] == 5
    assert reference["proportions"] == pytest.approx([0.6, 0.3, 0.1])
    same = drift.compare(reference, np.array(["a"] * 600 + ["b"] * 300 + ["c"] * 100 + [None] * 50, dtype=object))
    assert same["psi"] < 0.01 and same["ks"] is None and same["ks_pvalue"] is None
    unseen = drift.compare(reference, np.array(["a"] * 50 + ["z"] * 50, dtype=object))
    assert unseen["psi"] > 1  # a category the reference never had counts as "other"


def test_missing_values_are_a_bin_of_their_own():
    reference = drift.numeric_reference("x", RNG.normal(0, 1, 1000))
    values = RNG.normal(0, 1, 1000)
    values[:500] = np.nan
    result = drift.compare(reference, values)
    assert result["psi"] > 0.2
    assert result["ks"] < 0.1  # KS compares the values that are there


def test_feature_kinds_and_names():
    assert drift.infer_kind(np.array([1, 2, 3, 2, 1])) == drift.CATEGORICAL
    assert drift.infer_kind(np.arange(100)) == drift.NUMERIC
    assert drift.infer_kind(np.array([0.5, 1.5])) == drift.NUMERIC
    assert drift.infer_kind(np.array([True, False])) == drift.CATEGORICAL
    assert drift.infer_kind(np.array(["x", None], dtype=object)) == drift.CATEGORICAL
    assert drift.infer_kind(np.array([[1], [2]], dtype=object)[:, 0]) == drift.CATEGORICAL
    assert drift.infer_kind(np.array([{"a": 1}], dtype=object)) is None
    assert [n for n, _ in drift.columns_of(np.zeros((3, 2)))[0]] == ["0", "1"]
    assert [n for n, _ in drift.columns_of(np.zeros(3), single="predict")[0]] == ["predict"]
    assert [n for n, _ in drift.columns_of(np.zeros((3, 2, 2)))[0]] == ["0,0", "0,1", "1,0", "1,1"]
    columns, notes = drift.columns_of(np.zeros((3, 28, 28)))
    assert columns == [] and "not monitored" in notes[0]
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": pd.Categorical(["x", "y"])})
    assert [n for n, _ in drift.columns_of(frame)[0]] == ["a", "b"]


def test_dates_are_numeric_in_seconds():
    values = np.array(["2024-01-01", "2024-01-02", "NaT"], dtype="datetime64[ns]")
    numbers = drift.as_numeric(values)
    assert numbers[1] - numbers[0] == 86400 and np.isnan(numbers[2])


# -- capture --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drift_store(tmp_path_factory) -> nd.Store:
    return nd.Store(tmp_path_factory.mktemp("drift-store"))


@pytest.fixture(scope="module")
def forest_with_reference(forest, iris, drift_store) -> nd.Bundle:
    return nd.capture(forest, name="forest", sample=iris[0][:5], reference=iris[0], store=drift_store)


@pytest.fixture(scope="module")
def pipeline_with_reference(pipeline, customers, drift_store) -> nd.Bundle:
    return nd.capture(pipeline, name="customers", sample=customers[0].head(), reference=customers[0], store=drift_store)


def test_the_reference_is_a_bundle_file_checked_like_the_others(forest_with_reference, tmp_path):
    bundle = forest_with_reference
    assert REFERENCE_FILE in bundle.manifest["files"]
    assert bundle.manifest["reference"] == {
        "source": "reference",
        "rows": 150,
        "predictions": "predict",
        "features": {"0": "numeric", "1": "numeric", "2": "numeric", "3": "numeric"},
    }
    assert bundle.reference["predictions"]["features"][0]["kind"] == "categorical"  # the three classes
    assert "drift" in str(bundle)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy)
    document = json.loads((copy / REFERENCE_FILE).read_text())
    document["features"][0]["edges"][0] += 1
    (copy / REFERENCE_FILE).write_text(json.dumps(document))
    with pytest.raises(BundleIntegrityError, match=REFERENCE_FILE):
        nd.Bundle.open(copy)


def test_a_table_reference_has_numeric_and_categorical_features(pipeline_with_reference):
    kinds = {f["name"]: f["kind"] for f in pipeline_with_reference.reference["features"]}
    assert kinds == {"age": "numeric", "income": "numeric", "city": "categorical"}


def test_without_a_reference_the_sample_is_the_reference_with_a_warning(forest_bundle):
    assert forest_bundle.manifest["reference"]["source"] == "sample"
    assert forest_bundle.manifest["reference"]["rows"] == 5
    assert any("drift statistics come from the 5 sample rows" in w for w in forest_bundle.warnings)


def test_a_reference_that_does_not_fit_is_refused(pipeline, customers, drift_store):
    with pytest.raises(CaptureError, match="'city'"):
        nd.capture(
            pipeline,
            name="bad",
            sample=customers[0].head(),
            reference=customers[0][["age", "income"]],
            store=drift_store,
        )


# -- serving --------------------------------------------------------------------------------------------
def _feed(client: TestClient, rows: list, method: str = "predict", batch: int = 50) -> None:
    for start in range(0, len(rows), batch):
        response = client.post(f"/{method}", json={"instances": rows[start : start + batch]})
        assert response.status_code == 200, response.text


def _iris_rows(iris, shifted: list[int], n: int = 600) -> list:
    rng = np.random.default_rng(1)
    X = iris[0][rng.integers(0, len(iris[0]), n)].copy()
    for column in shifted:
        X[:, column] += 3 * iris[0][:, column].std()
    return X.tolist()


def _customer_rows(shift: bool, n: int = 600) -> list[dict]:
    rng = np.random.default_rng(1)  # fresh draws of the customers fixture's distributions
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50.0, 12.0, n) + (30.0 if shift else 0.0),
            "city": rng.choice(["paris", "rome", "oslo"], n, p=[0.8, 0.1, 0.1] if shift else None),
        }
    )
    return frame.to_dict(orient="records")


@pytest.mark.parametrize("shifted", [[], [0, 2], [3]])
def test_shifted_iris_columns_are_exactly_the_drifted_ones(forest_with_reference, iris, shifted):
    with TestClient(nd.create_app(forest_with_reference)) as client:
        _feed(client, _iris_rows(iris, shifted))
        report = client.get("/monitor/drift").json()
    assert report["status"] == "ok" and report["window"] == {"rows": 600, "size": 1000, "min_rows": 100}
    assert report["drifted"] == [str(c) for c in shifted]
    assert [n for n, f in report["features"].items() if f["drifted"]] == [str(c) for c in shifted]
    assert all(f["ks"] is not None for f in report["features"].values())
    assert report["predictions"]["method"] == "predict" and report["predictions"]["rows"] == 600
    if not shifted:
        assert report["predictions"]["drifted"] == []


@pytest.mark.parametrize("shift", [False, True])
def test_shifted_customer_features_are_exactly_the_drifted_ones(pipeline_with_reference, shift):
    with TestClient(nd.create_app(pipeline_with_reference)) as client:
        _feed(client, _customer_rows(shift), method="predict_proba")  # every method feeds the input window
        report = client.get("/monitor/drift").json()
    assert sorted(report["drifted"]) == (["city", "income"] if shift else [])
    assert report["features"]["city"]["ks"] is None
    assert report["predictions"]["rows"] == 0  # predictions are those of predict only


def test_too_few_rows_flag_nothing(forest_with_reference, iris):
    with TestClient(nd.create_app(forest_with_reference)) as client:
        _feed(client, _iris_rows(iris, [0, 2], n=60))
        report = client.get("/monitor/drift").json()
    assert report["status"] == "insufficient data" and "at least 100" in report["message"]
    assert report["drifted"] == [] and all(f["drifted"] is None for f in report["features"].values())
    assert report["features"]["0"]["psi"] > 0.2  # computed, shown, not flagged


def test_the_window_slides(forest_with_reference, iris):
    with TestClient(nd.create_app(forest_with_reference, drift_window=200, drift_threshold=0.5)) as client:
        _feed(client, _iris_rows(iris, [0, 2], n=400))
        assert client.get("/monitor/drift").json()["drifted"] == ["0", "2"]
        _feed(client, _iris_rows(iris, [], n=230), batch=70)  # wraps around the ring
        report = client.get("/monitor/drift").json()
    assert report["window"]["rows"] == 200 and report["threshold"] == 0.5
    assert report["drifted"] == []


def _gauges(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        match = re.match(rf'{name}\{{feature="([^"]+)",model="[^"]+",version="[^"]+"\}} (\S+)$', line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def test_the_gauges_show_the_report(forest_with_reference, iris):
    with TestClient(nd.create_app(forest_with_reference)) as client:
        _feed(client, _iris_rows(iris, [0, 2]))
        metrics = client.get("/metrics").text  # computed before exposition, without a report first
        report = client.get("/monitor/drift").json()
    psi, ks, detected = (_gauges(metrics, f"notebook_deploy_drift_{n}") for n in ("psi", "ks", "detected"))
    for name, entry in report["features"].items():
        assert psi[name] == pytest.approx(entry["psi"]) and ks[name] == pytest.approx(entry["ks"])
        assert detected[name] == (1.0 if name in ("0", "2") else 0.0)
    assert psi["prediction:predict"] == pytest.approx(report["predictions"]["features"]["predict"]["psi"])
    assert "prediction:predict" not in ks
    assert 'notebook_deploy_drift_window_rows{model="forest"' in metrics


def test_no_gauges_before_enough_rows(forest_with_reference, iris):
    with TestClient(nd.create_app(forest_with_reference)) as client:
        _feed(client, _iris_rows(iris, [], n=20))
        metrics = client.get("/metrics").text
    assert not _gauges(metrics, "notebook_deploy_drift_psi")
    assert re.search(r"notebook_deploy_drift_window_rows\{[^}]*\} 20\.0", metrics)


def test_a_bundle_without_reference_says_how_to_get_one(forest, drift_store):
    bundle = nd.capture(forest, name="no-reference", store=drift_store)  # no sample: no reference either
    assert bundle.reference is None and bundle.manifest["reference"] is None
    with TestClient(nd.create_app(bundle)) as client:
        assert client.post("/predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 200
        response = client.get("/monitor/drift")
        assert "notebook_deploy_drift_psi" not in client.get("/metrics").text
    assert response.status_code == 404
    assert "capture with reference=X_train" in response.json()["detail"]


def test_the_route_is_documented(forest_with_reference):
    with TestClient(nd.create_app(forest_with_reference)) as client:
        document = client.get("/openapi.json").json()
    responses = document["paths"]["/monitor/drift"]["get"]["responses"]
    schema = responses["200"]["content"]["application/json"]["schema"]
    assert {"features", "drifted", "window", "threshold", "predictions"} <= set(schema["required"])
    assert "404" in responses


# -- the prediction log ---------------------------------------------------------------------------------
def _log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_row_is_logged_at_rate_one(pipeline_with_reference, tmp_path):
    log = tmp_path / "logs" / "predictions.jsonl"
    rows = _customer_rows(False, n=30)
    with TestClient(nd.create_app(pipeline_with_reference, prediction_log=str(log))) as client:
        _feed(client, rows, batch=7)
        _feed(client, rows[:3], method="predict_proba")
    lines = _log_lines(log)  # written by the end of the app's lifespan
    assert len(lines) == 33
    first = lines[0]
    assert set(first) == {"time", "model", "version", "method", "input", "output"}
    assert first["model"] == "customers" and first["version"] == pipeline_with_reference.version
    assert first["method"] == "predict" and first["input"] == rows[0]
    assert first["output"] in (0, 1)
    assert [line["method"] for line in lines[-3:]] == ["predict_proba"] * 3
    assert len(lines[-1]["output"]) == 2


def test_sampling_logs_a_fraction_of_rows(forest_with_reference, iris, tmp_path):
    none, half = tmp_path / "none.jsonl", tmp_path / "half.jsonl"
    rows = _iris_rows(iris, [], n=1000)
    with TestClient(nd.create_app(forest_with_reference, prediction_log=str(none), prediction_log_sample=0)) as client:
        _feed(client, rows[:100])
    assert _log_lines(none) == []
    with TestClient(
        nd.create_app(forest_with_reference, prediction_log=str(half), prediction_log_sample=0.5)
    ) as client:
        _feed(client, rows, batch=10)
        _feed(client, rows[:100], batch=1)
    lines = _log_lines(half)
    assert 450 < len(lines) < 650
    assert all(line["input"] in rows for line in lines[:50])


def test_the_log_is_rotated(forest_with_reference, iris, tmp_path):
    log = tmp_path / "predictions.jsonl"
    with TestClient(
        nd.create_app(forest_with_reference, prediction_log=str(log), prediction_log_max_bytes=4000)
    ) as client:
        _feed(client, _iris_rows(iris, [], n=300), batch=20)
    files = sorted(tmp_path.glob("predictions.jsonl*"))
    assert [f.name for f in files] == [
        "predictions.jsonl",
        "predictions.jsonl.1",
        "predictions.jsonl.2",
        "predictions.jsonl.3",
    ]
    assert all(f.stat().st_size <= 4000 for f in files)
    assert all(_log_lines(f) for f in files)
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}  # rotated files stay private


def test_the_log_is_readable_by_its_owner_only(forest_with_reference, iris, tmp_path):
    fresh, old = tmp_path / "fresh.jsonl", tmp_path / "old.jsonl"
    old.write_bytes(b"")
    old.chmod(0o644)  # left readable by an earlier version
    for log in (fresh, old):
        with TestClient(nd.create_app(forest_with_reference, prediction_log=str(log))) as client:
            _feed(client, _iris_rows(iris, [], n=5))
        assert oct(log.stat().st_mode & 0o777) == "0o600" and len(_log_lines(log)) == 5


# -- a real server ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_two_workers_answer_drift_and_metrics(forest_with_reference, iris):
    with nd.serve(forest_with_reference, workers=2) as server:
        rows = _iris_rows(iris, [0, 2], n=2000)
        for start in range(0, len(rows), 100):  # a new connection each time, so both workers get some
            response = requests.post(
                f"{server.url}/predict",
                json={"instances": rows[start : start + 100]},
                headers={"connection": "close"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
        deadline = time.monotonic() + 30
        while True:
            report = requests.get(f"{server.url}/monitor/drift", headers={"connection": "close"}, timeout=30)
            metrics = requests.get(f"{server.url}/metrics", headers={"connection": "close"}, timeout=30)
            assert report.status_code == 200 and metrics.status_code == 200
            psi = _gauges(metrics.text, "notebook_deploy_drift_psi")
            if report.json()["window"]["rows"] and set(psi) >= {"0", "1", "2", "3"}:
                break
            assert time.monotonic() < deadline, (report.text, metrics.text)
            time.sleep(0.5)
        assert report.json()["drifted"] == ["0", "2"]
        detected = _gauges(metrics.text, "notebook_deploy_drift_detected")
        assert detected["0"] == detected["2"] == 1.0 and detected["1"] == detected["3"] == 0.0
        rows_total = re.search(r"notebook_deploy_drift_window_rows\{[^}]*\} (\S+)", metrics.text)
        assert rows_total and float(rows_total.group(1)) <= 2000
