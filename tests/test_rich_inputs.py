"""Inputs beyond numbers: images, bytes (audio) and chat messages as schema kinds; sent as base64 in JSON,
as raw bytes (``application/octet-stream``, ``multipart/form-data``) and as OIP ``BYTES`` tensors. The
tiny pipelines of ``tiny_models`` are captured, served by real server processes and asked with real
clients (requests, tritonclient); the edge cases run in-process."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from fastapi.testclient import TestClient
from models import wav, wav_headers
from PIL import Image
from registries import free_port

import notebook_deploy as nd
from notebook_deploy.errors import InputError
from notebook_deploy.schema import as_rows, infer_schema, schema_from_dict

IMAGES = Path(__file__).parent / "data" / "images"  # real files from Pillow's tests (SOURCES.md there)
TEXTS = ["hello world", "bad awful", "the quick brown fox", "good great fine nice"]


def _picture(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _file(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- schemas -----------------------------------------------------------------------------------------


def test_images_bytes_and_chats_are_kinds_of_their_own_and_round_trip_through_bundle_json():
    chats = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
    ]
    for sample, kind in (([_picture(0), _picture(1)], "image"), ([b"\x00\x01", b"RIFF"], "bytes"), (chats, "chat")):
        schema = infer_schema(as_rows(sample))
        assert (schema.kind, schema.shape) == (kind, ())
        assert schema.to_dict() == {"type": "tensor", "kind": kind, "dtype": "object", "shape": []}
        assert schema_from_dict(schema.to_dict()) == schema
        rows = schema.encode(as_rows(sample))
        assert orjson.loads(orjson.dumps(rows)) == rows  # JSON as stored in the bundle's sample
        decoded = schema.decode(rows)
        if kind == "image":
            assert [np.asarray(i).tolist() for i in decoded] == [np.asarray(i).tolist() for i in sample]
        else:
            assert list(decoded) == sample
    # a stored schema of before keeps loading as it was
    old = {"type": "tensor", "kind": "str", "dtype": "object", "shape": []}
    assert schema_from_dict(old).to_dict() == old


def test_real_image_files_in_a_sample_are_kept_as_their_decoded_pixels_and_mode():
    images = [Image.open(IMAGES / name) for name in ("hopper.jpg", "pil_sample_cmyk.jpg", "hopper.gif")]
    schema = infer_schema(as_rows(images))
    for image, again in zip(images, schema.decode(schema.encode(as_rows(images)))):
        assert again.mode == image.mode and np.array_equal(np.asarray(again), np.asarray(image))


def test_the_json_schema_says_base64_and_the_messages_shape():
    image = infer_schema(as_rows([_picture(0)])).json_schema()
    assert image["type"] == "string" and image["contentEncoding"] == "base64" and image["contentMediaType"] == "image/*"
    chat = infer_schema(as_rows([[{"role": "user", "content": "hi"}]])).json_schema()
    assert chat["items"]["required"] == ["role", "content"]


@pytest.mark.parametrize(
    "kind, row, fragment",
    [
        ("image", 5, "row 0: expected an image file (PNG, JPEG, WebP...) as base64 text, got a number"),
        ("image", "not base64!", "row 0: expected an image file (PNG, JPEG, WebP...) as base64 text; it is not base64"),
        ("bytes", "é", "row 0: expected bytes as base64 text; it is not base64"),
        ("image", _b64(b"GIF89a but cut"), "row 0: not an image file (PNG, JPEG, WebP...) (UnidentifiedImageError"),
        ("image", _b64(_file(_picture(0), "PNG")[:60]), "row 0: not an image file"),  # a truncated PNG
        ("bytes", ["a"], "row 0: expected bytes as base64 text, got a list"),
        ("chat", [{"role": "user"}], 'row 0: expected a list of messages {"role": ..., "content": ...}'),
        ("chat", "hello", "row 0: expected a list of messages"),
    ],
)
def test_rows_that_are_not_of_the_kind_are_refused_naming_the_row(kind, row, fragment):
    sample = {
        "image": [_picture(0)],
        "bytes": [b"x"],
        "chat": [[{"role": "user", "content": "hi"}]],
    }[kind]
    schema = infer_schema(as_rows(sample))
    with pytest.raises(InputError, match="^" + fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        schema.decode([row])


def test_raw_bytes_are_refused_by_a_model_of_numbers_or_text():
    with pytest.raises(InputError, match=r"this model takes object rows of shape \[\], not raw bytes: send JSON rows"):
        infer_schema(as_rows(["text"])).decode_raw([b"abc"])


# --- a bytes model, in-process -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wav_client(wav_bundle):
    with TestClient(nd.create_app(wav_bundle, max_body_bytes=20_000)) as client:
        yield client


def test_bytes_rows_come_as_base64_a_raw_body_or_file_parts(wav_client, wav_bundle):
    sounds = [wav(0.05), wav(0.2, 16000)]
    expected = wav_headers(sounds)
    assert wav_bundle.input_schema.kind == "bytes"
    answers = [
        wav_client.post("/predict", json={"instances": [_b64(s) for s in sounds]}),
        wav_client.post("/predict", files=[("file", ("a.wav", s, "audio/wav")) for s in sounds]),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": expected}
    raw = wav_client.post("/predict", content=sounds[1], headers={"content-type": "application/octet-stream"})
    assert raw.json() == {"predictions": expected[1:]}
    data_url = wav_client.post("/predict", json={"instances": ["data:audio/wav;base64," + _b64(sounds[0])]})
    assert data_url.json() == {"predictions": expected[:1]}
    for route in ("/v1/models/wav:predict", "/invocations"):  # TF Serving's and MLflow's JSON rows alike
        answer = wav_client.post(route, json={"instances": [_b64(s) for s in sounds]})
        assert answer.json() == {"predictions": expected}, route


@pytest.mark.parametrize(
    "send, status, fragment",
    [
        (dict(data={"name": "a.wav"}), 400, "not valid JSON"),  # a form without files is not multipart
        (dict(files=[("file", ("a.wav", wav(0.01), "audio/wav"))], data={"note": "x"}), 422, "form field 'note'"),
        (dict(content=b"", headers={"content-type": "multipart/form-data; boundary=x"}), 422, "no rows were sent"),
        (dict(content=b"x", headers={"content-type": "multipart/form-data"}), 400, "boundary"),
        (dict(content=wav(2), headers={"content-type": "application/octet-stream"}), 413, "the limit is 20000 bytes"),
        (dict(content=b"raw", headers={"content-type": "text/plain"}), 400, "or send the raw bytes of one row with"),
        (dict(json={"rows": []}), 422, "content-type application/octet-stream, or rows as files with multipart"),
    ],
)
def test_raw_bodies_that_do_not_fit_get_a_4xx_saying_why(wav_client, send, status, fragment):
    answer = wav_client.post("/predict", **send)
    assert answer.status_code == status and fragment in answer.json()["detail"], answer.text


def test_openapi_documents_the_raw_bodies_of_a_bytes_model_only(wav_client, forest_client):
    content = wav_client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data", "application/octet-stream"}
    row = content["application/json"]["schema"]["properties"]["instances"]["items"]
    assert row["contentEncoding"] == "base64"
    example = content["application/json"]["example"]
    assert wav_client.post("/predict", json=example).status_code == 200
    plain = forest_client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(plain) == {"application/json"}


def test_oip_bytes_tensors_carry_base64_in_json_and_raw_bytes_in_binary(wav_client):
    sounds = [wav(0.05), wav(0.1)]
    expected = [orjson.dumps(a).decode() for a in wav_headers(sounds)]
    json_body = {"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [2], "data": [_b64(s) for s in sounds]}]}
    answer = wav_client.post("/v2/models/wav/infer", json=json_body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["data"] == expected
    raw = b"".join(struct.pack("<I", len(s)) + s for s in sounds)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "input-0", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    )
    binary = wav_client.post(
        "/v2/models/wav/infer", content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert binary.status_code == 200, binary.text
    assert binary.json()["outputs"][0]["data"] == expected
    metadata = wav_client.get("/v2/models/wav").json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]


# --- the tiny pipelines, captured and served -----------------------------------------------------------


@pytest.fixture(scope="module")
def text_classifier():
    import tiny_models as tm

    return tm.text_classifier()


@pytest.fixture(scope="module")
def image_classifier():
    import tiny_models as tm

    return tm.image_classifier()


def _scores(answers):
    """A pipeline's answers (a {label, score} per row, or a list of them), scores equal within float rounding."""

    def pair(answer):
        return answer["label"], pytest.approx(answer["score"], rel=1e-5)

    return [[pair(a) for a in row] if isinstance(row, list) else pair(row) for row in answers]


@pytest.mark.integration
def test_a_text_classifier_is_served_and_tritonclient_sends_it_bytes_tensors_of_text(store, text_classifier):
    bundle = nd.capture(text_classifier, "clf", TEXTS[:2], store=store)
    expected = _scores(text_classifier(TEXTS))
    port = free_port()
    with nd.serve(bundle, grpc_port=port) as server:
        assert _scores(server.post("predict", {"instances": TEXTS}).json()["predictions"]) == expected
        texts = np.array([t.encode() for t in TEXTS], dtype=object)
        clients = [
            (triton_http, triton_http.InferenceServerClient(server.url.split("://")[1]), {"binary_data": True}),
            (triton_http, triton_http.InferenceServerClient(server.url.split("://")[1]), {"binary_data": False}),
            (triton_grpc, triton_grpc.InferenceServerClient(f"127.0.0.1:{port}"), {}),
        ]
        for module, client, binary in clients:
            tensor = module.InferInput("input-0", [len(TEXTS)], "BYTES").set_data_from_numpy(texts, **binary)
            answer = client.infer("clf", [tensor], outputs=[module.InferRequestedOutput("predict", **binary)])
            got = [orjson.loads(v) for v in answer.as_numpy("predict")]  # BYTES: one JSON text per row
            assert _scores(got) == expected, (module.__name__, binary)
            client.close()


@pytest.mark.integration
def test_an_image_classifier_takes_png_and_jpeg_bytes_as_json_files_and_tensors(store, image_classifier):
    bundle = nd.capture(image_classifier, "pets", [_picture(0), _picture(1)], store=store)
    assert bundle.input_schema.kind == "image"
    files = [_file(_picture(7), "PNG"), _file(_picture(8), "JPEG"), _file(_picture(9, 48), "WEBP")] + [
        (IMAGES / name).read_bytes() for name in ("hopper.jpg", "pil_sample_cmyk.jpg", "hopper.gif")
    ]
    expected = _scores(image_classifier([Image.open(io.BytesIO(f)) for f in files]))
    port = free_port()
    with nd.serve(bundle, grpc_port=port) as server:
        import requests

        url = f"{server.url}/predict"
        answers = [
            requests.post(url, json={"instances": [_b64(f) for f in files]}, timeout=60).json()["predictions"],
            requests.post(url, files=[("file", (f"{i}", f)) for i, f in enumerate(files)], timeout=60).json()[
                "predictions"
            ],
            [
                requests.post(url, data=f, headers={"content-type": "application/octet-stream"}, timeout=60).json()[
                    "predictions"
                ][0]
                for f in files
            ],
        ]
        answers.append(server.predict([Image.open(io.BytesIO(f)) for f in files]).tolist())  # sent as base64
        for answer in answers:
            assert _scores(answer) == expected
        for bad, reason in (
            (b"\x89PNG but no", "UnidentifiedImageError"),
            (IMAGES / "truncated_jpeg.jpg", "truncated"),
        ):
            raw = bad if isinstance(bad, bytes) else bad.read_bytes()
            refused = requests.post(url, data=raw, headers={"content-type": "application/octet-stream"}, timeout=60)
            assert refused.status_code == 422, refused.text
            assert (
                refused.json()["detail"].startswith("row 0: not an image file") and reason in refused.json()["detail"]
            )
        images = np.array(files, dtype=object)
        for module, client, binary in (
            (triton_http, triton_http.InferenceServerClient(server.url.split("://")[1]), {"binary_data": True}),
            (triton_grpc, triton_grpc.InferenceServerClient(f"127.0.0.1:{port}"), {}),
        ):
            tensor = module.InferInput("input-0", [len(files)], "BYTES").set_data_from_numpy(images, **binary)
            answer = client.infer("pets", [tensor])
            rows = answer.as_numpy("predict")  # BYTES of shape [rows, 3]: each {label, score} as JSON text
            assert rows.shape == (len(files), 3)
            assert _scores([[orjson.loads(v) for v in row] for row in rows]) == expected
            client.close()


@pytest.mark.integration
def test_a_text_generator_takes_chat_messages_as_rows(store):
    import tiny_models as tm

    generator = tm.text_generator()
    chats = [
        [{"role": "user", "content": "hello world"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the quick brown fox"}],
    ]

    def reply(conversations):  # a few greedy tokens: the tiny model's positions end at 128
        return generator(list(conversations), max_new_tokens=4, do_sample=False)

    bundle = nd.capture(reply, "chat", chats, store=store)
    assert bundle.input_schema.kind == "chat"
    with TestClient(nd.create_app(bundle)) as client:
        answer = client.post("/predict", json={"instances": chats[::-1]})
        assert answer.json() == {"predictions": reply(chats[::-1])}
        refused = client.post("/predict", json={"instances": [[{"content": "no role"}]]})
        assert refused.status_code == 422 and refused.json()["detail"].startswith("row 0: expected a list of messages")
        conversation = orjson.dumps(chats[0]).decode()  # over OIP, a conversation is a BYTES element of JSON text
        body = {"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [1], "data": [conversation]}]}
        (output,) = client.post("/v2/models/chat/infer", json=body).json()["outputs"]
        assert [orjson.loads(v) for v in output["data"]] == reply(chats[:1])[0]
