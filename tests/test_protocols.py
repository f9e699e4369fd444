"""TF Serving's REST API and MLflow's /invocations, in-process: the request shapes their clients send."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from venvs import tool_venv

import notebook_deploy as nd

# --- TF Serving -------------------------------------------------------------------------------------


def test_tf_serving_row_and_columnar_formats(forest_client, forest_bundle, forest, iris):
    X = iris[0][::10]
    url = f"/v1/models/{forest_bundle.name}:predict"
    rows = forest_client.post(url, json={"instances": X.tolist()})
    assert rows.status_code == 200, rows.text
    assert rows.json() == {"predictions": forest.predict(X).tolist()}
    columnar = forest_client.post(url, json={"inputs": X.tolist()})
    assert columnar.json() == {"outputs": forest.predict(X).tolist()}
    named = forest_client.post(url, json={"inputs": {"x": X.tolist()}, "signature_name": "predict_proba"})
    np.testing.assert_allclose(named.json()["outputs"], forest.predict_proba(X))
    for prefix in (
        f"/v1/models/{forest_bundle.name}/versions/{forest_bundle.version}",
        f"/v1/models/{forest_bundle.name}/labels/prod",
    ):
        assert forest_client.post(prefix + ":predict", json={"instances": X.tolist()}).json() == rows.json()


def test_tf_serving_columns_of_a_table(pipeline_client, pipeline_bundle, pipeline, customers):
    frame = customers[0].head(12)
    url = f"/v1/models/{pipeline_bundle.name}:predict"
    columns = {name: frame[name].tolist() for name in frame.columns}
    answer = pipeline_client.post(url, json={"inputs": columns})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"outputs": pipeline.predict(frame).tolist()}
    records = pipeline_client.post(url, json={"instances": frame.to_dict(orient="records")})
    assert records.json() == {"predictions": pipeline.predict(frame).tolist()}


def test_tf_serving_status_metadata_and_errors(forest_client, forest_bundle):
    name = forest_bundle.name
    status = forest_client.get(f"/v1/models/{name}").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = forest_client.get(f"/v1/models/{name}/metadata").json()
    assert "serving_default" in metadata["metadata"]["signature_def"]["signature_def"]
    missing = forest_client.post("/v1/models/nope:predict", json={"instances": [[1, 2, 3, 4]]})
    assert missing.status_code == 404 and "Servable not found" in missing.json()["error"]
    both = forest_client.post(
        f"/v1/models/{name}:predict", json={"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}
    )
    assert both.status_code == 400 and '"instances"' in both.json()["error"]
    wrong = forest_client.post(f"/v1/models/{name}:predict", json={"instances": [[1, 2, 3]]})
    assert wrong.status_code == 422 and wrong.json() == {"error": "row 0 has shape [3], expected [4]"}
    signature = forest_client.post(
        f"/v1/models/{name}:predict", json={"instances": [[1, 2, 3, 4]], "signature_name": "x"}
    )
    assert signature.status_code == 400 and "unknown signature_name" in signature.json()["error"]


# --- MLflow -----------------------------------------------------------------------------------------


def test_mlflow_formats_give_the_same_predictions(pipeline_client, pipeline, customers):
    frame = customers[0].head(15)
    expected = {"predictions": pipeline.predict(frame).tolist()}
    split = {"dataframe_split": frame.to_dict(orient="split")}
    split["dataframe_split"].pop("index")
    reordered = {
        "dataframe_split": {"columns": list(frame.columns[::-1]), "data": frame[frame.columns[::-1]].values.tolist()}
    }
    bodies = [
        split,
        reordered,
        {"dataframe_records": frame.to_dict(orient="records")},
        {"instances": frame.to_dict(orient="records")},
        {"inputs": {name: frame[name].tolist() for name in frame.columns}},
    ]
    for body in bodies:
        answer = pipeline_client.post("/invocations", json=body)
        assert answer.status_code == 200, (body, answer.text)
        assert answer.json() == expected
    csv = pipeline_client.post("/invocations", content=frame.to_csv(index=False), headers={"content-type": "text/csv"})
    assert csv.json() == expected


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity"])
def test_infinities_are_refused_by_mlflow_csv_and_tf_serving(pipeline_client, forest_client, customers, text):
    frame = customers[0].head(2).copy()
    csv = frame.to_csv(index=False).splitlines()
    header, first = csv[0].split(","), csv[1].split(",")
    first[header.index("income")] = text
    body = "\n".join([csv[0], ",".join(first), *csv[2:]])
    answer = pipeline_client.post("/invocations", content=body, headers={"content-type": "text/csv"})
    assert answer.status_code == 422, answer.text
    assert "feature 'income': expected a finite number" in answer.text
    tf = forest_client.post(
        "/v1/models/forest:predict",
        content=b'{"instances": [[1, 2, 3, 1e999]]}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= tf.status_code < 500 and "infinity" in tf.text.lower()


def test_mlflow_tensor_model(forest_client, forest, iris):
    X = iris[0][::9]
    for body in ({"instances": X.tolist()}, {"inputs": X.tolist()}, {"dataframe_split": {"data": X.tolist()}}):
        assert forest_client.post("/invocations", json=body).json() == {"predictions": forest.predict(X).tolist()}


def test_mlflow_health_version_and_errors(pipeline_client):
    assert pipeline_client.get("/ping").status_code == 200
    assert pipeline_client.get("/health").status_code == 200
    assert pipeline_client.get("/version").text == nd.__version__
    none = pipeline_client.post("/invocations", json={"rows": []})
    assert none.status_code == 400
    assert none.json()["error_code"] == "BAD_REQUEST" and "exactly one of" in none.json()["message"]
    bad = pipeline_client.post("/invocations", json={"dataframe_records": [{"age": 3}]})
    assert bad.status_code == 422 and "missing feature" in bad.json()["message"]
    xml = pipeline_client.post("/invocations", content=b"<rows/>", headers={"content-type": "application/xml"})
    assert xml.status_code == 415 and "application/json or text/csv" in xml.json()["message"]


# --- MLflow's own client, against a real server -----------------------------------------------------

MLFLOW_CLIENT = """
import json, sys
import pandas as pd
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

host, port, records = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
client = ScoringServerClient(host, port)
client.wait_server_ready(timeout=30)
print(json.dumps({"version": client.get_version(),
                  "predictions": client.invoke(pd.DataFrame.from_records(records)).get_predictions().iloc[:, 0].tolist()}))
"""


@pytest.mark.integration
def test_mlflows_own_scoring_client_gets_the_in_process_predictions(pipeline_bundle, pipeline, customers, tmp_path):
    """MLflow's ScoringServerClient, from mlflow-skinny in a venv of its own (cached): MLflow's pins do not
    fit beside the test environment's."""
    # the client's dump_input_data imports scipy
    python = tool_venv("mlflow-skinny-3", "mlflow-skinny>=3,<4", "pandas", "scipy") / "bin" / "python"
    frame = customers[0].head(8)
    script = tmp_path / "client.py"
    script.write_text(MLFLOW_CLIENT)
    with nd.serve(pipeline_bundle) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        records = frame.to_json(orient="records")
        answer = subprocess.run(
            [str(python), str(script), host, port, records], capture_output=True, text=True, timeout=120
        )
    assert answer.returncode == 0, answer.stderr
    result = json.loads(answer.stdout)
    assert result["version"] == nd.__version__
    assert result["predictions"] == pipeline.predict(frame).tolist()
