"""The Open Inference Protocol (V2) over REST and gRPC: in-process for the edge cases, and with Triton's own
clients (tritonclient.http, with and without binary tensors, and tritonclient.grpc) against real servers."""

from __future__ import annotations

import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from fastapi.testclient import TestClient
from models import FragileModel
from readiness import wait_until_ready
from registries import free_port
from tritonclient.utils import InferenceServerException
from venvs import tool_venv

import notebook_deploy as nd
from notebook_deploy.serving.protocols import grpc_predict_v2_pb2 as pb
from notebook_deploy.serving.protocols import grpc_predict_v2_pb2_grpc as pb_grpc

PROTOCOLS = Path(nd.__file__).parent / "serving" / "protocols"
HEADER = "Inference-Header-Content-Length"


class _SlowModel:
    def predict(self, rows):  # at least 5 ms a call, so the server hands it to its model thread
        time.sleep(max(float(np.asarray(rows)[0, 0]), 0.005))
        return np.asarray(rows)[:, 0]


def _tensor_request(X, outputs=None, **extra):
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(X.shape), "data": X.tolist()}], **extra}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def _columns(frame):
    datatypes = {"age": "INT64", "income": "FP64", "city": "BYTES"}
    return [
        {"name": c, "datatype": datatypes[c], "shape": [len(frame)], "data": frame[c].tolist()} for c in frame.columns
    ]


def _outputs(response):
    return {o["name"]: np.asarray(o["data"], dtype=float).reshape(o["shape"]) for o in response.json()["outputs"]}


# --- REST, in-process -------------------------------------------------------------------------------


def test_server_and_model_metadata_and_health(forest_client, forest_bundle, pipeline_client, pipeline_bundle):
    assert forest_client.get("/v2").json() == {
        "name": "notebook-deploy",
        "version": nd.__version__,
        "extensions": ["binary_tensor_data"],
    }
    assert forest_client.get("/v2/health/live").status_code == 200
    wait_until_ready(forest_client)  # the OIP readiness is /readyz's
    assert forest_client.get("/v2/health/ready").status_code == 200
    assert forest_client.get("/v2/models/forest/ready").json() == {"name": "forest", "ready": True}
    assert forest_client.get(f"/v2/models/forest/versions/{forest_bundle.version}/ready").status_code == 200
    metadata = forest_client.get("/v2/models/forest").json()
    assert metadata == {
        "name": "forest",
        "versions": [forest_bundle.version],
        "platform": "notebook-deploy",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
            {"name": "predict_log_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    assert forest_client.get(f"/v2/models/forest/versions/{forest_bundle.version}").json() == metadata
    table = pipeline_client.get("/v2/models/customers").json()
    assert table["inputs"] == [
        {"name": "age", "datatype": "INT64", "shape": [-1]},
        {"name": "income", "datatype": "FP64", "shape": [-1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1]},
    ]
    assert [o["name"] for o in table["outputs"]][:2] == ["predict", "predict_proba"]


def test_infer_equals_in_process_and_the_native_api(forest_client, forest, iris):
    X = iris[0][::7]
    answer = forest_client.post(
        "/v2/models/forest/infer", json=_tensor_request(X, ["predict", "predict_proba", "predict_log_proba"], id="r-1")
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["id"]) == ("forest", "r-1")
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("predict", "INT64", [len(X)]),
        ("predict_proba", "FP64", [len(X), 3]),
        ("predict_log_proba", "FP64", [len(X), 3]),
    ]
    outputs = _outputs(answer)
    np.testing.assert_array_equal(outputs["predict"], forest.predict(X))
    np.testing.assert_array_equal(outputs["predict_proba"], forest.predict_proba(X))
    log_proba = outputs["predict_log_proba"]
    log_proba[np.isnan(log_proba)] = -np.inf  # JSON has no infinity: log(0) travels as null
    np.testing.assert_array_equal(log_proba, forest.predict_log_proba(X))
    native = forest_client.post("/predict", json={"instances": X.tolist()}).json()["predictions"]
    assert body["outputs"][0]["data"] == native
    # no outputs named: predict alone; data flat rather than nested; any name for the one input tensor
    flat = {"inputs": [{"name": "x", "datatype": "FP64", "shape": list(X.shape), "data": X.ravel().tolist()}]}
    only = forest_client.post("/v2/models/forest/infer", json=flat).json()
    assert [o["name"] for o in only["outputs"]] == ["predict"] and only["outputs"][0]["data"] == native
    assert "id" not in only
    versioned = forest_client.post(f"/v2/models/forest/versions/{forest_client.app.version}/infer", json=flat)
    assert versioned.json()["outputs"] == only["outputs"]


def test_a_table_takes_one_input_per_column(pipeline_client, pipeline, customers):
    frame = customers[0].head(25)
    answer = pipeline_client.post(
        "/v2/models/customers/infer",
        json={"inputs": _columns(frame), "outputs": [{"name": "predict"}, {"name": "predict_proba"}]},
    )
    assert answer.status_code == 200, answer.text
    outputs = _outputs(answer)
    np.testing.assert_array_equal(outputs["predict"], pipeline.predict(frame))
    np.testing.assert_array_equal(outputs["predict_proba"], pipeline.predict_proba(frame))
    as_columns = [{**spec, "shape": [len(frame), 1]} for spec in _columns(frame)]  # [-1, 1] is taken too
    same = pipeline_client.post("/v2/models/customers/infer", json={"inputs": as_columns})
    assert same.json()["outputs"][0]["data"] == pipeline.predict(frame).tolist()


def _binary_request(inputs, outputs, **extra):
    """A request in Triton's binary tensor extension: ``inputs`` are (name, datatype, array)."""
    specs, raws = [], []
    for name, datatype, array in inputs:
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in array.ravel())
        else:
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        specs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        raws.append(raw)
    header = orjson.dumps({"inputs": specs, "outputs": outputs, **extra})
    return header + b"".join(raws), {HEADER: str(len(header)), "content-type": "application/octet-stream"}


def _binary_outputs(response):
    length = int(response.headers[HEADER])
    header, rest = orjson.loads(response.content[:length]), response.content[length:]
    arrays, offset = {}, 0
    for output in header["outputs"]:
        if "data" in output:
            arrays[output["name"]] = np.asarray(output["data"]).reshape(output["shape"])
            continue
        size = output["parameters"]["binary_data_size"]
        dtype = {"FP64": "<f8", "INT64": "<i8"}[output["datatype"]]
        arrays[output["name"]] = np.frombuffer(rest[offset : offset + size], dtype=dtype).reshape(output["shape"])
        offset += size
    assert offset == len(rest)
    return arrays


def test_binary_tensors_in_and_out(pipeline_client, pipeline, customers):
    frame = customers[0].head(9)
    inputs = [
        ("age", "INT64", frame["age"].to_numpy()),
        ("income", "FP64", frame["income"].to_numpy()),
        ("city", "BYTES", frame["city"].to_numpy()),
    ]
    body, headers = _binary_request(
        inputs, [{"name": "predict", "parameters": {"binary_data": True}}, {"name": "predict_proba"}]
    )
    answer = pipeline_client.post("/v2/models/customers/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    arrays = _binary_outputs(answer)
    np.testing.assert_array_equal(arrays["predict"], pipeline.predict(frame))
    np.testing.assert_array_equal(arrays["predict_proba"], pipeline.predict_proba(frame))  # asked for as JSON
    body, headers = _binary_request(inputs, [{"name": "predict_proba"}], parameters={"binary_data_output": True})
    arrays = _binary_outputs(pipeline_client.post("/v2/models/customers/infer", content=body, headers=headers))
    np.testing.assert_array_equal(arrays["predict_proba"], pipeline.predict_proba(frame))


GOOD = {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


@pytest.mark.parametrize(
    "body, headers, status, fragment",
    [
        (b"{not json", {}, 400, "not valid JSON"),
        (b"", {}, 400, "not valid JSON"),
        ({"inputs": []}, {}, 400, '{"inputs": [{"name", "datatype", "shape", "data"}, ...]}'),
        ({"inputs": [{**GOOD, "data": [1, 2, 3]}]}, {}, 400, "input 'input-0' has 3 values; its shape [1, 4] needs 4"),
        ({"inputs": [{**GOOD, "datatype": "FP128"}]}, {}, 400, "datatype 'FP128' is not one of BOOL"),
        ({"inputs": [{**GOOD, "shape": [-1, 4]}]}, {}, 400, '"shape" must be a list of sizes'),
        (
            {"inputs": [{**GOOD, "shape": [2, 2]}]},
            {},
            422,
            "has shape [2, 2]; this model takes shape [-1, 4]: rows of shape [4]",
        ),
        ({"inputs": [{**GOOD, "shape": [4]}]}, {}, 422, "has shape [4]; this model takes shape [-1, 4]"),
        ({"inputs": [{**GOOD, "shape": [0, 4], "data": []}]}, {}, 422, "has no rows"),
        (
            {"inputs": [{**GOOD, "data": [[1, 2, "x", 4]]}]},
            {},
            422,
            'row 0, position 2: expected a number or null, got a string "x"',
        ),
        ({"inputs": [{**GOOD, "data": [[1, 2], [3, [4, 5]]]}]}, {}, 400, "has 5 values; its shape [1, 4] needs 4"),
        ({"inputs": [GOOD, {**GOOD, "name": "other"}]}, {}, 400, "this model takes one input tensor"),
        (
            {"inputs": [GOOD], "outputs": [{"name": "nope"}]},
            {},
            400,
            "unknown output 'nope': this model's outputs are 'predict'",
        ),
        ({"inputs": [GOOD], "id": 7}, {}, 400, '"id" must be a string'),
        ({"inputs": [GOOD], "parameters": {"binary_data_output": "yes"}}, {}, 400, "must be true or false"),
        ({"inputs": [{**GOOD, "data": None}]}, {}, 400, '"data" must be a list'),
        ({"inputs": [GOOD]}, {HEADER: "abc"}, 400, f"{HEADER} must be the length of the JSON part"),
        ({"inputs": [GOOD]}, {HEADER: "99999"}, 400, f"{HEADER} must be the length of the JSON part"),
        (
            {"inputs": [{k: v for k, v in GOOD.items() if k != "data"} | {"parameters": {"binary_data_size": 32}}]},
            {},
            400,
            "the binary data after the JSON (0 bytes) ends before its 32 bytes",
        ),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(forest_client, body, headers, status, fragment):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = forest_client.post(
        "/v2/models/forest/infer", content=content, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert forest_client.post("/v2/models/forest/infer", json={"inputs": [GOOD]}).status_code == 200


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinities_are_refused_like_nan_in_json_and_binary_tensors(forest_client, pipeline_client, customers, value):
    rows = np.ones((2, 4))
    rows[1, 3] = value
    body, headers = _binary_request([("input-0", "FP64", rows)], [])
    binary = forest_client.post("/v2/models/forest/infer", content=body, headers=headers)
    sign = "-" if value < 0 else ""
    assert binary.status_code == 422, binary.text
    assert f"row 1, position 3: expected a finite number, got {sign}Infinity" in binary.json()["error"]
    frame = customers[0].head(2).copy()
    frame["income"] = frame["income"].astype(float)
    frame.loc[frame.index[0], "income"] = value
    columns, headers = _binary_request(
        [(c, {"age": "INT64", "income": "FP64", "city": "BYTES"}[c], frame[c].to_numpy()) for c in frame.columns], []
    )
    table = pipeline_client.post("/v2/models/customers/infer", content=columns, headers=headers)
    assert table.status_code == 422 and "feature 'income': expected a finite number" in table.json()["error"]
    # JSON cannot carry an infinity: a number that overflows a double is refused as well
    overflow = forest_client.post(
        "/v2/models/forest/infer",
        content=b'{"inputs":[{"name":"input-0","datatype":"FP64",'
        b'"shape":[1,4],"data":[1,2,3,' + sign.encode() + b'1e999]}]}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= overflow.status_code < 500 and "infinity" in overflow.text.lower()
    assert forest_client.post("/v2/models/forest/infer", json={"inputs": [GOOD]}).status_code == 200


def test_binary_data_that_does_not_add_up_is_refused(forest_client):
    body, headers = _binary_request([("input-0", "FP64", np.ones((2, 4)))], [])
    short = forest_client.post("/v2/models/forest/infer", content=body[:-3], headers=headers)
    assert short.status_code == 400 and "ends before its 64 bytes" in short.json()["error"]
    extra = forest_client.post("/v2/models/forest/infer", content=body + b"xx", headers=headers)
    assert extra.status_code == 400 and "66 bytes of binary data after the JSON" in extra.json()["error"]
    wrong = body.replace(b'"binary_data_size":64', b'"binary_data_size":60')
    assert forest_client.post("/v2/models/forest/infer", content=wrong[:-4], headers=headers).status_code == 400


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda cols: cols[:2], "missing feature 'city'"),
        (
            lambda cols: [*cols, {"name": "zip", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]}],
            "unknown feature 'zip'",
        ),
        (
            lambda cols: [cols[0], cols[1], {**cols[2], "datatype": "INT64", "data": [1, 2, 3]}],
            "row 0, feature 'city': expected a string",
        ),
        (
            lambda cols: [{**cols[0], "datatype": "BYTES", "data": ["thirty", "a", "b"]}, *cols[1:]],
            "row 0, feature 'age': expected an integer",
        ),
        (
            lambda cols: [{**cols[0], "shape": [1, 3]}, *cols[1:]],
            "input 'age' has shape [1, 3]; a feature takes shape [-1]",
        ),
        (lambda cols: [{**cols[0], "shape": [2], "data": [30, 40]}, *cols[1:]], "the columns have different lengths"),
    ],
)
def test_table_errors_name_the_feature(pipeline_client, customers, change, fragment):
    response = pipeline_client.post(
        "/v2/models/customers/infer", json={"inputs": change(_columns(customers[0].head(3)))}
    )
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]


def test_unknown_models_and_versions_are_404(forest_client):
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/forest/versions/0000/ready"):
        response = forest_client.get(path)
        assert response.status_code == 404
        assert "forest" in response.json()["error"]
    missing = forest_client.post("/v2/models/nope/infer", json={"inputs": [GOOD]})
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'nope' is not served here; this server serves 'forest'"}
    version = forest_client.post("/v2/models/forest/versions/0000/infer", json={"inputs": [GOOD]})
    assert version.status_code == 404 and "has no version '0000'" in version.json()["error"]


def test_a_model_that_raises_gets_a_json_500_and_serving_goes_on(store):
    bundle = nd.capture(FragileModel(), name="fragile", sample=np.ones((2, 2)), store=store)
    tensor = {"name": "input-0", "datatype": "FP64", "shape": [1, 2]}
    with TestClient(nd.create_app(bundle)) as client:
        failed = client.post("/v2/models/fragile/infer", json={"inputs": [{**tensor, "data": [-1.0, 2.0]}]})
        assert failed.status_code == 500
        assert failed.json() == {
            "error": "the model's predict raised an error; the server's log has it (serve with "
            "--debug-errors to return it to callers)"
        }
        ok = client.post("/v2/models/fragile/infer", json={"inputs": [{**tensor, "data": [1.0, 2.0]}]})
        assert ok.json()["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [1], "data": [3.0]}]


def test_string_outputs_are_bytes(store, iris):
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    bundle = nd.capture(DecisionTreeClassifier(random_state=0).fit(X, labels), name="named", sample=X[:5], store=store)
    with TestClient(nd.create_app(bundle)) as client:
        assert client.get("/v2/models/named").json()["outputs"][0] == {
            "name": "predict",
            "datatype": "BYTES",
            "shape": [-1],
        }
        answer = client.post("/v2/models/named/infer", json=_tensor_request(X[[0, 60, 120]], ["predict"])).json()
        assert answer["outputs"][0] == {
            "name": "predict",
            "datatype": "BYTES",
            "shape": [3],
            "data": ["setosa", "versicolor", "virginica"],
        }
        body, headers = _binary_request(
            [("input-0", "FP64", X[[0, 60]])], [{"name": "predict", "parameters": {"binary_data": True}}]
        )
        raw = client.post("/v2/models/named/infer", content=body, headers=headers)
        assert raw.content.endswith(b"\x06\x00\x00\x00setosa\x0a\x00\x00\x00versicolor")


def test_openapi_documents_every_route_and_its_example_is_served(forest_client, pipeline_client):
    for client in (forest_client, pipeline_client):
        spec = client.get("/openapi.json").json()
        infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
        assert {"200", "400", "401", "403", "404", "413", "422", "500", "503"} <= set(infer["responses"])
        assert [p["name"] for p in infer["parameters"]] == ["name", HEADER]
        body = infer["requestBody"]["content"]["application/json"]
        example = client.post(f"/v2/models/{infer['parameters'][0]['example']}/infer", json=body["example"])
        assert example.status_code == 200, example.text
        import jsonschema

        jsonschema.validate(body["example"], body["schema"])
        jsonschema.validate(example.json(), infer["responses"]["200"]["content"]["application/json"]["schema"])
        for path in (
            "/v2",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/{name}",
            "/v2/models/{name}/ready",
            "/v2/models/{name}/versions/{version}",
            "/v2/models/{name}/versions/{version}/ready",
            "/v2/models/{name}/versions/{version}/infer",
        ):
            assert path in spec["paths"]


# --- the gRPC stubs ---------------------------------------------------------------------------------


def _fields(message, prefix=""):
    """{message.field: (number, type, repeated, message type)} of a descriptor and its nested messages."""
    found = {}
    for f in message.fields:
        found[f"{prefix}{message.name}.{f.name}"] = (
            f.number,
            f.type,
            f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED,
            f.message_type.full_name if f.message_type else None,
        )
    for nested in message.nested_types:
        found.update(_fields(nested, f"{prefix}{message.name}."))
    return found


def test_the_service_matches_triton_field_for_field():
    from tritonclient.grpc import service_pb2 as triton

    ours = pb.DESCRIPTOR
    service = ours.services_by_name["GRPCInferenceService"]
    assert ours.package == "inference" and service.full_name == "inference.GRPCInferenceService"
    assert [(m.name, m.input_type.name, m.output_type.name) for m in service.methods] == [
        (name, f"{name}Request", f"{name}Response")
        for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
    ]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = theirs.methods_by_name[method.name]
        assert (other.input_type.full_name, other.output_type.full_name) == (
            method.input_type.full_name,
            method.output_type.full_name,
        )
    for name, message in ours.message_types_by_name.items():
        assert _fields(message) == _fields(triton.DESCRIPTOR.message_types_by_name[name]), name
    assert pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number == 7
    assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == 6


def test_the_generated_descriptor_is_the_proto_file():
    """Every field of grpc_predict_v2.proto, with its number, is in the generated descriptor, and nothing else."""
    text = (PROTOCOLS / "grpc_predict_v2.proto").read_text()
    declared, rpcs, path = {}, [], []
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        if match := re.fullmatch(r"message (\w+) \{(\})?", line):
            if not match.group(2):
                path.append(match.group(1))
        elif line == "}" and path:
            path.pop()
        elif match := re.fullmatch(r"rpc (\w+)\((\w+)\) returns \((\w+)\) \{\}", line):
            rpcs.append(match.groups())
        elif match := re.fullmatch(r"(?:repeated )?(?:map<[^>]+>|\w+) (\w+) = (\d+);", line):
            declared[".".join([*path, match.group(1)])] = int(match.group(2))
    generated = {}
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        generated.update({name: spec[0] for name, spec in _fields(message).items() if "Entry." not in name})
    assert declared == generated
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert rpcs == [(m.name, m.input_type.name, m.output_type.name) for m in service.methods]


@pytest.mark.integration
def test_regenerating_the_stubs_gives_the_committed_files(tmp_path):
    """Runs protoc of grpcio-tools 1.63.0 (see oip_grpc's docstring) from a cached venv of its own: its
    protobuf pin (<6) does not fit beside tritonclient's in the test environment."""
    python = tool_venv("grpcio-tools-1.63.0", "grpcio-tools==1.63.0") / "bin" / "python"
    root = PROTOCOLS.parents[2]
    proto = "notebook_deploy/serving/protocols/grpc_predict_v2.proto"
    subprocess.run(
        [
            str(python),
            "-m",
            "grpc_tools.protoc",
            f"-I{root}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(root / proto),
        ],
        check=True,
    )
    out = tmp_path / "notebook_deploy" / "serving" / "protocols"
    generated = (
        (out / "grpc_predict_v2_pb2.py")
        .read_text()
        .replace("_descriptor_pool.Default().AddSerializedFile", "_descriptor_pool.DescriptorPool().AddSerializedFile")
    )
    assert generated == (PROTOCOLS / "grpc_predict_v2_pb2.py").read_text()
    assert (out / "grpc_predict_v2_pb2_grpc.py").read_text() == (PROTOCOLS / "grpc_predict_v2_pb2_grpc.py").read_text()
    assert (out / "grpc_predict_v2_pb2.pyi").read_text() == (PROTOCOLS / "grpc_predict_v2_pb2.pyi").read_text()


# --- gRPC, in-process (the server runs in the TestClient's event loop) ------------------------------


@pytest.fixture(scope="module")
def forest_grpc(forest_bundle):
    port = free_port()
    with TestClient(nd.create_app(forest_bundle, grpc_port=port)) as client:
        wait_until_ready(client)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_grpc_typed_contents_and_raw_contents(forest_grpc, forest, iris):
    X = iris[0][::11]
    typed = pb.ModelInferRequest(model_name="forest", id="t-1", outputs=[{"name": "predict_proba"}])
    typed.inputs.add(name="input-0", datatype="FP64", shape=X.shape, contents={"fp64_contents": X.ravel()})
    answer = forest_grpc.ModelInfer(typed)
    assert (
        answer.model_name,
        answer.id,
        answer.outputs[0].name,
        answer.outputs[0].datatype,
        list(answer.outputs[0].shape),
    ) == ("forest", "t-1", "predict_proba", "FP64", [len(X), 3])
    np.testing.assert_array_equal(
        np.frombuffer(answer.raw_output_contents[0], "<f8").reshape(-1, 3), forest.predict_proba(X)
    )
    raw = pb.ModelInferRequest(model_name="forest", raw_input_contents=[X.astype("<f4").tobytes()])
    raw.inputs.add(name="input-0", datatype="FP32", shape=X.shape)
    answer = forest_grpc.ModelInfer(raw)
    np.testing.assert_array_equal(
        np.frombuffer(answer.raw_output_contents[0], "<i8"), forest.predict(X.astype("float32").astype("float64"))
    )


@pytest.mark.parametrize(
    "build, code, fragment",
    [
        (
            lambda r: r.inputs.add(
                name="input-0", datatype="FP64", shape=[1, 3], contents={"fp64_contents": [1, 2, 3]}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has shape [1, 3]; this model takes shape [-1, 4]",
        ),
        (
            lambda r: r.inputs.add(name="input-0", datatype="FP64", shape=[1, 4], contents={"fp64_contents": [1, 2]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has 2 values in fp64_contents; its shape [1, 4] needs 4",
        ),
        (
            lambda r: r.inputs.add(name="input-0", datatype="FP16", shape=[1, 4]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FP16 data must be sent in raw_input_contents",
        ),
        (
            lambda r: (
                r.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]),
                r.raw_input_contents.append(b"x" * 31),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has 31 bytes of raw data; shape [1, 4] of FP64 needs 32",
        ),
        (
            lambda r: r.inputs.add(
                name="input-0", datatype="BYTES", shape=[1, 4], contents={"bytes_contents": [b"a"] * 4}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            'row 0, position 0: expected a number or null, got a string "a"',
        ),
        (
            lambda r: (
                r.inputs.add(name="input-0", datatype="FP64", shape=[1, 4], contents={"fp64_contents": [1] * 4}),
                r.outputs.add(name="nope"),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown output 'nope'",
        ),
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' is not served here"),
        (lambda r: setattr(r, "model_version", "0000"), grpc.StatusCode.NOT_FOUND, "has no version '0000'"),
        (
            lambda r: r.inputs.add(
                name="input-0", datatype="FP64", shape=[1, 4], contents={"fp64_contents": [1, 2, float("inf"), 4]}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "row 0, position 2: expected a finite number, got Infinity",
        ),
        (
            lambda r: (
                r.inputs.add(name="input-0", datatype="FP32", shape=[1, 4]),
                r.raw_input_contents.append(np.array([[1, -np.inf, 3, 4]], "<f4").tobytes()),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "row 0, position 1: expected a finite number, got -Infinity",
        ),
    ],
)
def test_grpc_errors_have_status_codes_and_say_what_is_wrong(forest_grpc, build, code, fragment):
    request = pb.ModelInferRequest(model_name="forest")
    build(request)
    with pytest.raises(grpc.RpcError) as raised:
        forest_grpc.ModelInfer(request)
    assert raised.value.code() == code
    assert fragment in raised.value.details()
    assert forest_grpc.ServerLive(pb.ServerLiveRequest()).live


def test_grpc_metadata_and_readiness(forest_grpc, forest_bundle):
    assert forest_grpc.ServerReady(pb.ServerReadyRequest()).ready
    assert forest_grpc.ModelReady(pb.ModelReadyRequest(name="forest", version=forest_bundle.version)).ready
    server = forest_grpc.ServerMetadata(pb.ServerMetadataRequest())
    assert (server.name, list(server.extensions)) == ("notebook-deploy", ["binary_tensor_data"])
    metadata = forest_grpc.ModelMetadata(pb.ModelMetadataRequest(name="forest"))
    assert (metadata.platform, list(metadata.versions)) == ("notebook-deploy", [forest_bundle.version])
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input-0", "FP64", [-1, 4])]
    with pytest.raises(grpc.RpcError) as raised:
        forest_grpc.ModelReady(pb.ModelReadyRequest(name="nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_model_errors_are_internal_and_a_full_queue_is_unavailable(store):
    fragile = nd.capture(FragileModel(), name="fragile", sample=np.ones((2, 2)), store=store)
    port = free_port()
    with TestClient(nd.create_app(fragile, grpc_port=port, debug_errors=True)):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton_grpc.InferInput("input-0", [1, 2], "FP64")
        with pytest.raises(InferenceServerException) as raised:
            client.infer("fragile", [tensor.set_data_from_numpy(np.array([[-1.0, 2.0]]))])
        assert raised.value.status() == "StatusCode.INTERNAL"
        assert "the model's predict raised ValueError: negative values are not supported" in raised.value.message()
        answer = client.infer("fragile", [tensor.set_data_from_numpy(np.array([[1.0, 2.0]]))])
        assert answer.as_numpy("predict").tolist() == [3.0]
        client.close()

    slow = nd.capture(_SlowModel(), name="slow", sample=np.zeros((2, 2)), store=store)
    port = free_port()
    with TestClient(nd.create_app(slow, grpc_port=port, max_queue=1, batching=False)):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        busy = threading.Thread(
            target=client.infer,
            args=(
                "slow",
                [triton_grpc.InferInput("input-0", [1, 2], "FP64").set_data_from_numpy(np.array([[1.0, 0.0]]))],
            ),
        )
        busy.start()
        time.sleep(0.4)
        with pytest.raises(InferenceServerException) as raised:
            client.infer(
                "slow", [triton_grpc.InferInput("input-0", [1, 2], "FP64").set_data_from_numpy(np.zeros((1, 2)))]
            )
        assert raised.value.status() == "StatusCode.UNAVAILABLE" and "retry" in raised.value.message()
        busy.join()
        client.close()


# --- Triton's clients against real servers ----------------------------------------------------------


def _triton_inputs(module, data, binary):
    """Triton client inputs for rows: one tensor for an array, one per column for a DataFrame."""
    if isinstance(data, np.ndarray):
        return [module.InferInput("input-0", list(data.shape), "FP64").set_data_from_numpy(data, **binary)]
    datatypes = {"age": "INT64", "income": "FP64", "city": "BYTES"}
    inputs = []
    for name in data.columns:
        values = data[name].to_numpy(dtype=object if datatypes[name] == "BYTES" else None)
        inputs.append(module.InferInput(name, [len(values)], datatypes[name]).set_data_from_numpy(values, **binary))
    return inputs


def _clients(server, port):
    return {
        "http+binary": (
            triton_http,
            triton_http.InferenceServerClient(server.url.split("://")[1]),
            {"binary_data": True},
        ),
        "http+json": (
            triton_http,
            triton_http.InferenceServerClient(server.url.split("://")[1]),
            {"binary_data": False},
        ),
        "grpc": (triton_grpc, triton_grpc.InferenceServerClient(f"127.0.0.1:{port}"), {}),
    }


def _check_clients(server, port, name, model, data, rows_for_native, methods):
    expected = {method: getattr(model, method)(data) for method in methods}
    native = {method: server.post(method, {"instances": rows_for_native}).json()["predictions"] for method in methods}
    for label, (module, client, binary) in _clients(server, port).items():
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name), label
        metadata = (
            client.get_model_metadata(name, as_json=True) if module is triton_grpc else client.get_model_metadata(name)
        )
        assert metadata["name"] == name and [o["name"] for o in metadata["outputs"]][:2] == methods, label
        outputs = [module.InferRequestedOutput(method, **binary) for method in methods]
        answer = client.infer(name, _triton_inputs(module, data, binary), outputs=outputs, request_id="req-9")
        assert (
            answer.get_response(as_json=True)["id"] == "req-9"
            if module is triton_grpc
            else answer.get_response()["id"] == "req-9"
        )
        for method in methods:
            got = answer.as_numpy(method)
            np.testing.assert_array_equal(got, expected[method], err_msg=f"{label} {method}")
            np.testing.assert_array_equal(got, np.asarray(native[method]), err_msg=f"{label} {method}")
        default = client.infer(name, _triton_inputs(module, data, binary))  # no outputs named: predict alone
        np.testing.assert_array_equal(default.as_numpy(methods[0]), expected[methods[0]])
        assert default.as_numpy(methods[1]) is None
        client.close()


@pytest.mark.integration
def test_triton_clients_get_the_in_process_predictions_of_an_array_model(forest_bundle, forest, iris):
    X = iris[0][::3]
    port = free_port()
    with nd.serve(forest_bundle, grpc_port=port) as server:
        _check_clients(server, port, "forest", forest, X, X.tolist(), ["predict", "predict_proba"])
        assert f"Open Inference Protocol over gRPC on 127.0.0.1:{port}" in server.logs()


@pytest.mark.integration
def test_triton_clients_get_the_in_process_predictions_of_a_dataframe_model(pipeline_bundle, pipeline, customers):
    frame = customers[0].head(40)
    port = free_port()
    with nd.serve(pipeline_bundle, grpc_port=port) as server:
        _check_clients(
            server, port, "customers", pipeline, frame, frame.to_dict(orient="records"), ["predict", "predict_proba"]
        )


@pytest.mark.integration
def test_triton_clients_see_clear_errors_and_the_server_goes_on(store, forest_bundle, iris):
    fragile = nd.capture(FragileModel(), name="fragile", sample=np.ones((2, 2)), store=store)
    port = free_port()
    with nd.serve(fragile, grpc_port=port) as server:
        for label, (module, client, binary) in _clients(server, port).items():
            http = module is triton_http

            def infer(model, rows, client=client, module=module, binary=binary):
                tensor = module.InferInput("input-0", list(rows.shape), "FP64").set_data_from_numpy(rows, **binary)
                return client.infer(model, [tensor], outputs=[module.InferRequestedOutput("predict", **binary)])

            with pytest.raises(InferenceServerException) as raised:
                infer("fragile", np.array([[1.0, 2.0, 3.0]]))
            assert raised.value.status() == ("422" if http else "StatusCode.INVALID_ARGUMENT"), label
            assert "has shape [1, 3]; this model takes shape [-1, 2]" in raised.value.message(), label
            with pytest.raises(InferenceServerException) as raised:
                infer("nope", np.ones((1, 2)))
            assert raised.value.status() == ("404" if http else "StatusCode.NOT_FOUND"), label
            assert "model 'nope' is not served here" in raised.value.message(), label
            assert not client.is_model_ready("nope") if http else True
            with pytest.raises(InferenceServerException) as raised:
                infer("fragile", np.array([[-1.0, 2.0]]))
            assert raised.value.status() == ("500" if http else "StatusCode.INTERNAL"), label
            assert "the model's predict raised an error; the server's log has it" in raised.value.message()
            assert "negative" not in raised.value.message()
            assert infer("fragile", np.array([[1.0, 2.0], [3.0, 4.0]])).as_numpy("predict").tolist() == [3.0, 7.0], (
                label
            )
            client.close()
        assert server.running


@pytest.mark.integration
def test_grpc_with_two_workers_on_one_port_and_a_graceful_stop(store):
    slow = nd.capture(_SlowModel(), name="slow", sample=np.zeros((2, 2)), store=store)
    port = free_port()
    server = nd.serve(slow, grpc_port=port, workers=2)
    try:
        deadline = time.monotonic() + 30
        while server.logs().count(f"gRPC on 127.0.0.1:{port}") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.logs().count(f"gRPC on 127.0.0.1:{port}") == 2, server.logs()  # SO_REUSEPORT: both bound it
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        results = {}

        def slow_call():
            tensor = triton_grpc.InferInput("input-0", [1, 2], "FP64").set_data_from_numpy(np.array([[1.5, 7.0]]))
            results["answer"] = client.infer("slow", [tensor]).as_numpy("predict").tolist()

        caller = threading.Thread(target=slow_call)
        caller.start()
        time.sleep(0.5)
        server.stop(timeout=30)  # SIGTERM while the call runs: it is answered before the server exits
        caller.join(10)
        assert results.get("answer") == [1.5]
        client.close()
    finally:
        server.stop()
