"""replay: traffic recorded by a real server's prediction log, sent to other versions in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import notebook_deploy as nd
from notebook_deploy.cli import cli
from notebook_deploy.replay import ReplayError, replay


def _pipeline(frame, target, income: str = "income", C: float = 1.0):
    preprocess = ColumnTransformer(
        [("num", StandardScaler(), ["age", income]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    return make_pipeline(preprocess, LogisticRegression(C=C)).fit(frame, target)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, pipeline, customers):
    """A store with the version that served, and the log a real app wrote while it answered 60 rows."""
    frame, _ = customers
    store = nd.Store(tmp_path_factory.mktemp("replay-store"))
    served = nd.capture(pipeline, name="customers", sample=frame.head(), store=store)
    log = tmp_path_factory.mktemp("replay-log") / "traffic.jsonl"
    rows = frame.iloc[100:160].to_dict(orient="records")
    with TestClient(nd.create_app(served, prediction_log=str(log))) as client:
        for start in range(0, 50, 5):
            answer = client.post("/predict", json={"instances": rows[start : start + 5]})
            assert answer.status_code == 200, answer.text
        for row in rows[50:]:
            assert client.post("/predict_proba", json={"instances": [row]}).status_code == 200
    return store, served, log, frame.iloc[100:160]


def test_the_version_that_answered_agrees_with_itself_and_is_timed_beside_the_candidate(recorded):
    store, served, log, _ = recorded
    report = replay(log, served.ref, store=store)
    assert report.rows == 60 and report.agreement == 1.0 and not report.worst
    assert report.recorded == [served.ref] and report.baseline == served.ref
    predict = report.methods["predict"]
    assert predict.labels and sum(predict.confusion.values()) == 50
    assert all(recorded == answered for recorded, answered in predict.confusion)
    assert not report.methods["predict_proba"].labels
    assert len(predict.candidate_seconds) == len(predict.baseline_seconds) == 50
    text = str(report)
    assert "100.00%" in text and f"{served.ref}: p50" in text


def test_a_retrained_version_reports_each_changed_row_and_its_confusion(recorded, customers):
    store, served, log, replayed = recorded
    frame, target = customers
    retrained = _pipeline(frame.iloc[:60], target.iloc[:60], C=0.01)
    candidate = nd.capture(retrained, name="customers", sample=frame.head(), store=store)
    report = replay(log, candidate.ref, store=store, worst=100)

    labels = retrained.predict(replayed.iloc[:50])
    logged = [json.loads(line)["output"] for line in log.read_text().splitlines()[:50]]
    same = int(sum(int(a) == b for a, b in zip(labels, logged)))
    assert 0 < same < 50, "the retrained model must change some answers for this test to mean anything"
    predict = report.methods["predict"]
    assert predict.agreed == same and predict.rows == 50
    changed = {(r, a): n for (r, a), n in predict.confusion.items() if r != a}
    assert sum(changed.values()) == 50 - same
    scores = report.methods["predict_proba"]
    assert scores.agreed < scores.rows  # another C moves every probability
    worst = report.worst[0]
    assert worst.method == "predict"  # a changed label is as far apart as answers get
    assert report.agreement < 1.0


def test_a_renamed_column_is_refused_row_by_row_and_named(recorded, customers):
    store, _, log, _ = recorded
    frame, target = customers
    renamed = frame.rename(columns={"income": "salary"})
    candidate = nd.capture(
        _pipeline(renamed, target, income="salary"), name="customers", sample=renamed.head(), store=store
    )
    report = replay(log, candidate.ref, store=store)
    assert report.agreement == 0.0
    assert report.methods["predict"].refused == 50 and report.methods["predict_proba"].refused == 10
    assert "salary" in report.worst[0].answered and report.worst[0].answered.startswith("refused:")


def test_logs_that_cannot_be_replayed_say_why(recorded, tmp_path, iris):
    store, served, log, _ = recorded
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ReplayError, match="holds no prediction log line"):
        replay(empty, served.ref, store=store)
    with pytest.raises(ReplayError, match="cannot read the prediction log"):
        replay(tmp_path / "absent.jsonl", served.ref, store=store)
    cut = tmp_path / "cut.jsonl"
    text = log.read_text()
    cut.write_text(text + text.splitlines()[0][:40])  # a crash mid-line
    assert replay(cut, served.ref, store=store).skipped_lines == 1
    X, y = iris
    other = nd.capture(
        LogisticRegression(max_iter=500).fit(X, y), name="flowers", sample=X[:3], store=store, methods=["predict"]
    )
    with pytest.raises(ReplayError, match="predict_proba, which flowers:"):
        replay(log, other.ref, store=store)


def test_the_command_prints_the_report_gates_on_agreement_and_speaks_json(recorded, customers):
    store, served, log, _ = recorded
    frame, target = customers
    candidate = nd.capture(
        _pipeline(frame.iloc[:60], target.iloc[:60], C=0.01), name="customers", sample=frame.head(), store=store
    )
    runner = CliRunner()
    same = runner.invoke(cli, ["--store", str(store.root), "replay", str(log), "--against", served.ref])
    assert same.exit_code == 0, same.output
    assert f"Replay against {served.ref}" in same.output
    gated = runner.invoke(
        cli, ["--store", str(store.root), "replay", str(log), "--against", candidate.ref, "--min-agreement", "0.99"]
    )
    assert gated.exit_code == 1 and "recorded → answered" in gated.output
    as_json = runner.invoke(
        cli, ["--store", str(store.root), "replay", str(log), "--against", candidate.ref, "--json", "--limit", "10"]
    )
    document = json.loads(as_json.output)
    assert document["rows"] == 10 and set(document["methods"]) == {"predict_proba"}
    assert document["methods"]["predict_proba"]["candidate_ms"]["p99"] >= 0
    missing = runner.invoke(cli, ["--store", str(store.root), "replay", str(log), "--against", "nothing"])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert np.isfinite(document["agreement"])
