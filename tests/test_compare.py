"""compare and tag --require-compare: real versions captured into a store, a real prediction log."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import notebook_deploy as nd
from notebook_deploy.cli import cli
from notebook_deploy.compare import POLICY_LIMITS, PolicyError, compare, input_changes, read_policy
from notebook_deploy.image.build import dependency_facts
from notebook_deploy.image.cache import layer_key
from notebook_deploy.image.layers import Entry, build_layer
from notebook_deploy.image.publish import layer_cache
from notebook_deploy.schema import Column, Domain, TableSchema, TensorSchema


def _pipeline(frame, target, income: str = "income", C: float = 1.0):
    preprocess = ColumnTransformer(
        [("num", StandardScaler(), ["age", income]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    return make_pipeline(preprocess, LogisticRegression(C=C)).fit(frame, target)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, customers):
    """prod, a retrained version, and one whose 'income' column is renamed 'salary'."""
    frame, target = customers
    store = nd.Store(tmp_path_factory.mktemp("compare-store"))
    sample = frame.iloc[100:140]
    prod = nd.capture(_pipeline(frame, target), name="churn", sample=sample, store=store)
    store.tag(prod.ref, "prod")
    retrained = nd.capture(
        _pipeline(frame.iloc[:60], target.iloc[:60], C=0.01), name="churn", sample=sample, store=store
    )
    renamed_frame = frame.rename(columns={"income": "salary"})
    renamed = nd.capture(
        _pipeline(renamed_frame, target, income="salary"),
        name="churn",
        sample=renamed_frame.iloc[100:140],
        store=store,
    )
    log = tmp_path_factory.mktemp("compare-log") / "traffic.jsonl"
    with TestClient(nd.create_app(prod, prediction_log=str(log))) as client:
        rows = frame.iloc[200:260].to_dict(orient="records")
        assert client.post("/predict", json={"instances": rows}).status_code == 200
    return store, prod, retrained, renamed, log


def test_a_retrained_version_changes_no_schema_and_its_agreement_is_counted(versions):
    store, prod, retrained, _, log = versions
    comparison = compare("churn:prod", retrained.ref, traffic=log, store=store, measure_serving=False)
    assert comparison and comparison.schema == []
    assert comparison.lock_added == comparison.lock_removed == comparison.lock_changed == []
    rows = prod.sample["instances"]
    expected = prod.sample["outputs"]["predict"]
    frame = prod.input_schema.decode(rows)
    same = int(sum(int(a) == b for a, b in zip(retrained.model.predict(frame), expected)))
    assert comparison.sample.methods["predict"].agreed == same
    scores = comparison.sample.methods["predict_proba"]
    assert scores.rows == len(rows) and scores.agreed == 0  # another C moves every probability
    assert comparison.sample.agreement < 1.0
    assert comparison.traffic is not None and comparison.traffic.rows == 60
    assert comparison.traffic.agreement < 1.0
    text = str(comparison)
    assert f"Comparison of {prod.ref} → {retrained.ref}" in text and "schema  " in text and "unchanged" in text


def test_a_renamed_column_is_a_breaking_change_named_with_its_likely_new_name(versions):
    store, prod, _, renamed, _ = versions
    comparison = compare(prod.ref, renamed.ref, store=store, measure_serving=False)
    assert not comparison
    breaking = [c.what for c in comparison.schema if c.breaking]
    assert breaking == [
        "column 'income' is gone: rows that send it are refused (renamed to 'salary'?)",
        "column 'salary' is new and required",
    ]
    assert comparison.sample.agreement == 0.0
    assert comparison.violations({"block_breaking_schema": True})[0].startswith(
        "breaking schema change: column 'income'"
    )
    assert comparison.violations({"block_breaking_schema": False}) == []
    assert "schema BREAKS" in comparison._repr_html_()


@pytest.mark.parametrize(
    ("old", "new", "breaking"),
    [
        (TensorSchema("float", "float64", (4,)), TensorSchema("float", "float64", (5,)), ["rows of shape [4] → [5]"]),
        (TensorSchema("int", "int64", (4,)), TensorSchema("float", "float64", (4,)), []),
        (TensorSchema("float", "float64", (4,)), TensorSchema("int", "int64", (4,)), ["the rows: float → int"]),
        (
            TensorSchema("float", "float64", (4,)),
            TensorSchema("float", "float64", (4,), Domain(nullable=False)),
            ["the rows no longer takes missing values"],
        ),
        (
            TableSchema((Column("a", "float", "float64"), Column("c", "category", "category", ("x", "y")))),
            TableSchema(
                (
                    Column("a", "float", "float64"),
                    Column("c", "category", "category", ("x",)),
                    Column("d", "int", "int64", optional=True, fill=0),
                )
            ),
            ["column 'c' no longer takes 'y'"],
        ),
        (
            TableSchema((Column("a", "float", "float64"), Column("b", "int", "int64"))),
            TableSchema((Column("b", "int", "int64"), Column("a", "float", "float64"))),
            ["the column order changed: rows sent as lists are read differently"],
        ),
        (TensorSchema("float", "float64", (2,)), TableSchema((Column("a", "float", "float64"),)), ["the input: "]),
    ],
)
def test_what_breaks_a_caller_is_told_from_what_does_not(old, new, breaking):
    found = [c.what for c in input_changes(old, new) if c.breaking]
    assert len(found) == len(breaking) and all(f.startswith(b) for f, b in zip(found, breaking))


def test_a_policy_file_is_checked_and_its_mistakes_are_named(tmp_path):
    good = tmp_path / "policy.yaml"
    good.write_text("block_breaking_schema: true\nmin_sample_agreement: 0.95\nmax_latency_ratio: 2\n")
    assert read_policy(good) == {"block_breaking_schema": True, "min_sample_agreement": 0.95, "max_latency_ratio": 2}
    for text, message in (
        ("min_agreement: 0.9\n", "unknown limits \\['min_agreement'\\]"),
        ("block_breaking_schema: 1\n", "block_breaking_schema must be true or false"),
        ("max_start_ratio: fast\n", "max_start_ratio must be a number"),
        ("- 0.9\n", "must be a mapping of limits"),
        ("a: [\n", "cannot read the policy"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(PolicyError, match=message):
            read_policy(bad)
    assert set(POLICY_LIMITS) >= {"block_breaking_schema", "min_traffic_agreement", "max_memory_ratio"}


def test_tag_require_compare_refuses_a_schema_break_and_moves_for_a_compatible_version(versions, tmp_path):
    store, prod, retrained, renamed, log = versions
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"block_breaking_schema": True, "min_traffic_agreement": 0.5}))
    runner = CliRunner()
    base = ["--store", str(store.root)]
    refused = runner.invoke(
        cli, [*base, "tag", renamed.ref, "prod", "--require-compare", str(policy), "--traffic", str(log)]
    )
    assert refused.exit_code == 1, refused.output
    assert f"churn:prod stays at {prod.version}" in refused.output and "column 'income' is gone" in refused.output
    assert "min_traffic_agreement: 0.00%" in refused.output  # every recorded row is refused by the new schema
    assert store.tags("churn")["prod"] == prod.version
    moved = runner.invoke(
        cli, [*base, "tag", retrained.ref, "prod", "--require-compare", str(policy), "--traffic", str(log)]
    )
    assert moved.exit_code == 0, moved.output
    assert store.tags("churn")["prod"] == retrained.version
    store.tag(prod.ref, "prod")
    usage = runner.invoke(cli, [*base, "tag", retrained.ref, "prod", "--traffic", str(log)])
    assert usage.exit_code == 2 and "pass a policy file too" in usage.output


def test_the_compare_command_gates_and_speaks_json(versions, tmp_path):
    store, prod, retrained, renamed, _ = versions
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_sample_agreement: 0.999\n")
    runner = CliRunner()
    base = ["--store", str(store.root)]
    result = runner.invoke(cli, [*base, "compare", "churn:prod", renamed.ref, "--json", "--no-measure"])
    assert result.exit_code == 0, result.output  # no policy, nothing to break
    document = json.loads(result.output)
    assert document["breaking"] and document["violations"] == [] and document["footprints"] is None
    gated = runner.invoke(cli, [*base, "compare", "churn:prod", retrained.ref, "--no-measure", "--policy", str(policy)])
    assert gated.exit_code == 1 and "POLICY BROKEN min_sample_agreement" in gated.output


@pytest.mark.integration
def test_start_latency_and_memory_are_measured_side_by_side_in_fresh_pythons(store, iris):
    X, y = iris
    small = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="flowers", sample=X[:5], store=store)
    rng = np.random.default_rng(0)  # noise makes deep trees: some tens of MB held in memory
    noisy = RandomForestClassifier(n_estimators=100, random_state=0).fit(
        rng.random((3000, 4)), rng.integers(0, 3, 3000)
    )
    large = nd.capture(noisy, name="flowers", sample=X[:5], store=store)
    comparison = compare(small, large, store=store)
    old, new = comparison.footprints
    for footprint in (old, new):
        assert footprint["start_seconds"] > 0 and footprint["peak_rss_bytes"] > 20 * 2**20
        assert 0 < footprint["latency_ms"]["p50"] <= footprint["latency_ms"]["p99"]
    assert new["peak_rss_bytes"] > old["peak_rss_bytes"] + 10 * 2**20  # the trees are held in memory
    assert comparison.ratios()["size"] > 10
    assert "method decision_function is gone" in [c.what for c in comparison.schema]
    assert comparison.violations({"max_size_ratio": 2.0})[0].startswith("max_size_ratio: the new size is")
    assert np.isfinite(comparison.ratios()["memory"])


def test_the_dependency_layers_are_compared_when_the_layer_cache_has_both(versions, tmp_path, own_layer_cache):
    # its own cache: the layer it puts there under the real facts is a stand-in, which no image may take
    store, prod, retrained, _, _ = versions
    comparison = compare(prod.ref, retrained.ref, store=store, measure_serving=False)
    assert comparison.dependency_layers is None and "not both in the layer cache" in comparison.notes[0]
    facts = dependency_facts(prod, "linux/amd64")
    assert facts == dependency_facts(retrained, "linux/amd64")  # the same lock: the same layer
    layer = build_layer([Entry("site/a.py", b"x" * 5000)], tmp_path / "deps.tar.gz")
    layer_cache(store).put(layer_key(facts), layer, [("a", "1")], facts)
    comparison = compare(prod.ref, retrained.ref, store=store, measure_serving=False)
    assert comparison.dependency_layers == (layer.size, layer.size)
    assert comparison.ratios()["dependency_layer"] == 1.0 and "dependency layer" in str(comparison)
