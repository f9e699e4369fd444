"""API keys on the server: 401 without a valid key, 403 for a role that does not reach the route, open
health and docs, every refusal in the audit log; the same rules over gRPC; TLS on a real server."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
from types import SimpleNamespace

import grpc
import pytest
import requests
from fastapi.testclient import TestClient
from readiness import wait_until_ready

import notebook_deploy as nd
from notebook_deploy import audit
from notebook_deploy.errors import ServeError
from notebook_deploy.keys import KeyStore
from notebook_deploy.serving import auth, web
from notebook_deploy.serving.settings import ServeSettings

ROWS = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def secured(tmp_path):
    """A key file with a predict and an admin key, and where refusals are recorded."""
    keys = KeyStore(tmp_path / "keys.json", audit_log=tmp_path / "audit.log")
    predict_key, _ = keys.create("predict", "client")
    admin_key, _ = keys.create("admin", "ops")
    return SimpleNamespace(
        keys=keys,
        predict=predict_key,
        admin=admin_key,
        audit_log=tmp_path / "audit.log",
        settings=dict(keys_file=str(keys.path), audit_log=str(tmp_path / "audit.log")),
    )


@pytest.fixture
def client(forest_bundle, secured):
    with TestClient(nd.create_app(forest_bundle, **secured.settings)) as client:
        yield client


@pytest.fixture(autouse=True)
def every_refusal_recorded(monkeypatch):
    """These tests check what each refusal records; the one-line-a-second limit is tested in test_audit.py
    (the real server's test below runs in another process, where the limit holds)."""
    monkeypatch.setattr(audit, "LIMIT_SECONDS", 0.0)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def failures(path) -> list[dict]:
    return [e for e in audit.read(path) if e["event"] == "auth_failure"]


def test_no_key_is_401_with_a_challenge_and_says_what_to_send(client, secured):
    response = client.post("/predict", json=ROWS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": auth.NO_KEY}
    assert "Authorization: Bearer <key>" in auth.NO_KEY and "keys create --role predict" in auth.NO_KEY
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", secured.predict):  # malformed: still "send a key"
        answer = client.post("/predict", json=ROWS, headers={"Authorization": header})
        assert (answer.status_code, answer.json()["detail"]) == (401, auth.NO_KEY), header
    (first, *rest) = failures(secured.audit_log)
    assert (first["status"], first["path"], first["reason"], first["client"]) == (
        401,
        "/predict",
        "missing_key",
        "testclient",
    )
    assert [e["reason"] for e in rest] == ["malformed_header"] * 4
    assert secured.predict not in secured.audit_log.read_text()


def test_a_bad_key_is_401(client, secured):
    forged = secured.predict[:-4] + "AAAA"
    response = client.post("/predict", json=ROWS, headers=bearer(forged))
    assert response.status_code == 401 and response.json() == {
        "detail": "the API key is not valid (revoked or unknown)"
    }
    assert "invalid_token" in response.headers["www-authenticate"]
    (entry,) = failures(secured.audit_log)
    assert entry["reason"] == "invalid_key" and entry["key_id"] == forged.split("_")[1]
    assert forged not in secured.audit_log.read_text()


def test_a_predict_key_reaches_inference_only(client, secured):
    key = bearer(secured.predict)
    assert client.post("/predict", json=ROWS, headers=key).status_code == 200
    assert client.post("/predict_proba", json=ROWS, headers=key).status_code == 200
    metadata = client.get("/metadata", headers=key)
    assert metadata.status_code == 403
    key_id = secured.predict.split("_")[1]
    assert metadata.json() == {
        "detail": f"the key '{key_id}' has role 'predict', which reaches inference only; /metadata needs an 'admin' key"
    }
    assert client.get("/metrics", headers=key).status_code == 403
    assert client.get("/monitor/drift", headers=key).status_code == 403
    assert [(e["status"], e["path"], e["reason"], e["key_id"]) for e in failures(secured.audit_log)] == [
        (403, path, "insufficient_role", key_id) for path in ("/metadata", "/metrics", "/monitor/drift")
    ]


def test_open_routes_need_no_key(client):
    wait_until_ready(client)
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_an_admin_key_reaches_everything(client, secured):
    key = bearer(secured.admin)
    assert client.post("/predict", json=ROWS, headers=key).status_code == 200
    assert client.get("/metadata", headers=key).json()["name"] == "forest"
    assert client.get("/metrics", headers=key).status_code == 200
    assert client.get("/monitor/drift", headers=key).status_code == 200
    assert client.post("/predict", json=ROWS, headers={"authorization": f"bearer {secured.admin}"}).status_code == 200
    assert failures(secured.audit_log) == []


def test_every_protocol_is_guarded(client, secured):
    assert client.post("/invocations", json=ROWS).status_code == 401
    assert client.post("/invocations", json=ROWS, headers=bearer(secured.predict)).status_code == 200
    assert client.post("/v1/models/forest:predict", json=ROWS).status_code == 401
    assert client.get("/v1/models/forest").status_code == 200  # status: a health probe
    assert client.get("/v1/models/forest/metadata", headers=bearer(secured.predict)).status_code == 403


def test_a_revoked_key_is_refused_without_restart(client, secured):
    key = bearer(secured.predict)
    assert client.post("/predict", json=ROWS, headers=key).status_code == 200
    secured.keys.revoke(secured.predict.split("_")[1])
    response = client.post("/predict", json=ROWS, headers=key)
    assert response.status_code == 401 and "revoked or unknown" in response.json()["detail"]
    assert client.post("/predict", json=ROWS, headers=bearer(secured.admin)).status_code == 200


def test_the_openapi_document_declares_the_scheme(client):
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["APIKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: 'notebook-deploy keys create --role predict|admin'",
    }
    assert document["paths"]["/predict"]["post"]["security"] == [{"APIKey": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_auth_is_on_by_default_only_when_keys_exist(forest_bundle, tmp_path, secured):
    empty = dict(keys_file=str(tmp_path / "none.json"), audit_log=str(tmp_path / "a.log"))
    with TestClient(nd.create_app(forest_bundle, **empty)) as open_client:
        assert open_client.post("/predict", json=ROWS).status_code == 200
        assert open_client.get("/metadata").status_code == 200
    with TestClient(nd.create_app(forest_bundle, auth=True, **empty)) as strict:
        assert strict.post("/predict", json=ROWS).status_code == 401  # on, with no key to pass
        assert strict.get("/healthz").status_code == 200
    with TestClient(nd.create_app(forest_bundle, auth=False, **secured.settings)) as off:
        assert off.get("/metadata").status_code == 200


def test_auth_stays_on_when_the_key_file_exists_with_no_key_left_and_the_log_says_so(forest_bundle, secured, caplog):
    caplog.set_level("INFO", logger="notebook_deploy")
    for key in secured.keys.list():
        secured.keys.revoke(key.id)  # every key revoked: the file is still there
    assert len(secured.keys) == 0 and secured.keys.path.exists()
    with TestClient(nd.create_app(forest_bundle, **secured.settings)) as client:
        assert client.post("/predict", json=ROWS).status_code == 401
    assert "auth is on (the key file exists) but" in caplog.text
    caplog.clear()
    with TestClient(nd.create_app(forest_bundle, keys_file=str(secured.keys.path.with_name("none.json")))):
        pass
    assert "auth is off (no key file: " in caplog.text


def test_with_auth_on_the_docs_show_no_captured_rows(forest_bundle, secured):
    captured = [json.dumps(row, separators=(",", ":")) for row in forest_bundle.sample["instances"]]
    with TestClient(nd.create_app(forest_bundle, **secured.settings)) as client:
        document = client.get("/openapi.json").text
        assert captured and not [row for row in captured if row in document]
        example = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"][
            "application/json"
        ]["example"]
        assert example == {"instances": [[0.0, 0.0, 0.0, 0.0]] * 2}
        assert client.post("/predict", json=example, headers=bearer(secured.predict)).status_code == 200
    with TestClient(nd.create_app(forest_bundle, auth=False, **secured.settings)) as client:
        assert all(v in client.get("/openapi.json").text for v in captured)  # off: the sample is the example


def test_auth_off_adds_no_dependency(tmp_path):
    served = SimpleNamespace(guard=None, settings=ServeSettings(keys_file=str(tmp_path / "none.json")))
    assert web.key_dependencies(auth.PREDICT, served) == [] and web.key_dependencies(auth.ADMIN, served) == []
    assert auth.grpc_interceptors(auth.guard_of(served)) == []
    with pytest.raises(ValueError, match="auth.OPEN"):
        web.key_dependencies("everyone", served)


# -- gRPC -----------------------------------------------------------------------------------------------


def test_grpc_calls_obey_the_same_keys(secured):
    served = SimpleNamespace(guard=None, settings=ServeSettings(**secured.settings))
    assert auth.grpc_access("/inference.GRPCInferenceService/ServerLive") == auth.OPEN
    assert auth.grpc_access("/inference.GRPCInferenceService/ModelMetadata") == auth.PREDICT
    assert auth.grpc_access("/inference.GRPCInferenceService/RepositoryModelLoad") == auth.ADMIN
    service = "/inference.GRPCInferenceService/"

    async def echo(request: bytes, context) -> bytes:
        return b"ok:" + request

    async def echo_stream(requests, context):
        async for request in requests:
            yield b"ok:" + request

    async def scenario() -> list:
        server = grpc.aio.server(interceptors=auth.grpc_interceptors(auth.guard_of(served)))
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(echo) for name in ("ModelInfer", "ServerLive", "ModelStatistics")
        }
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(echo_stream)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        outcomes = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

                async def call(method: str, key: str | None) -> object:
                    metadata = (("authorization", f"Bearer {key}"),) if key else ()
                    try:
                        return await channel.unary_unary(service + method)(b"x", metadata=metadata, timeout=10)
                    except grpc.aio.AioRpcError as error:
                        return error.code(), error.details()

                outcomes.append(await call("ServerLive", None))
                outcomes.append(await call("ModelInfer", None))
                outcomes.append(await call("ModelInfer", "ndk_00000000_" + "a" * 43))
                outcomes.append(await call("ModelInfer", secured.predict))
                outcomes.append(await call("ModelStatistics", secured.predict))
                outcomes.append(await call("ModelStatistics", secured.admin))
                stream = channel.stream_stream(service + "ModelStreamInfer")(iter([b"y"]), timeout=10)
                try:
                    outcomes.append([answer async for answer in stream])
                except grpc.aio.AioRpcError as error:
                    outcomes.append(error.code())
        finally:
            await server.stop(None)
        return outcomes

    live, missing, bad, inferred, denied, allowed, streamed = asyncio.run(scenario())
    assert live == b"ok:x" and inferred == b"ok:x" and allowed == b"ok:x"
    assert missing == (grpc.StatusCode.UNAUTHENTICATED, auth.NO_KEY)
    assert bad == (grpc.StatusCode.UNAUTHENTICATED, auth.BAD_KEY)
    assert denied[0] == grpc.StatusCode.PERMISSION_DENIED and "needs an 'admin' key" in denied[1]
    assert streamed == grpc.StatusCode.UNAUTHENTICATED
    entries = failures(secured.audit_log)
    assert [(e["protocol"], e["path"].rsplit("/", 1)[1], e["reason"]) for e in entries] == [
        ("grpc", "ModelInfer", "missing_key"),
        ("grpc", "ModelInfer", "invalid_key"),
        ("grpc", "ModelStatistics", "insufficient_role"),
        ("grpc", "ModelStreamInfer", "missing_key"),
    ]
    assert all(e["client"].startswith("ipv4:127.0.0.1:") for e in entries)


# -- a real server ----------------------------------------------------------------------------------------


def self_signed_certificate(folder) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.mark.integration
def test_a_real_server_refuses_and_records_over_http(forest_bundle, secured, iris):
    with nd.serve(forest_bundle, api_key=secured.predict, **secured.settings) as server:
        assert server.predict(iris[0][:3]).tolist() == forest_bundle.predict(iris[0][:3]).tolist()
        no_key = requests.post(f"{server.url}/predict", json=ROWS, timeout=10)
        assert no_key.status_code == 401 and no_key.json() == {"detail": auth.NO_KEY}
        assert no_key.headers["www-authenticate"] == "Bearer"
        wrong_role = requests.get(f"{server.url}/metadata", headers=bearer(secured.predict), timeout=10)
        assert wrong_role.status_code == 403 and "needs an 'admin' key" in wrong_role.json()["detail"]
        assert requests.get(f"{server.url}/metadata", headers=bearer(secured.admin), timeout=10).status_code == 200
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    entries = failures(secured.audit_log)
    assert [(e["status"], e["path"], e["reason"], e["client"]) for e in entries] == [
        (401, "/predict", "missing_key", "127.0.0.1"),
        (403, "/metadata", "insufficient_role", "127.0.0.1"),
    ]
    assert all(e["pid"] == server.pid for e in entries)


@pytest.mark.integration
def test_keys_default_to_the_store_of_a_served_reference(forest_bundle, session_store):
    keys = KeyStore(root=session_store.root)
    key, record = keys.create("predict", "store-default")
    try:
        with nd.serve("forest", store=session_store, api_key=key) as server:
            assert requests.post(f"{server.url}/predict", json=ROWS, timeout=10).status_code == 401
            assert server.post("predict", ROWS).status_code == 200
    finally:
        keys.path.unlink()  # the session store is shared: a key file left behind, even empty, keeps auth on


@pytest.mark.integration
def test_tls_from_a_certificate_and_key(forest_bundle, tmp_path, secured, iris):
    cert, key = self_signed_certificate(tmp_path)
    with nd.serve(
        forest_bundle, tls_cert=cert, tls_key=key, verify=cert, api_key=secured.predict, **secured.settings
    ) as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert server.predict(iris[0][:2]).tolist() == forest_bundle.predict(iris[0][:2]).tolist()
        assert requests.get(f"{server.url}/healthz", verify=cert, timeout=10).json() == {"status": "ok"}
        with pytest.raises(requests.exceptions.SSLError):  # not trusted without the certificate
            requests.get(f"{server.url}/healthz", timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP gets no answer
            requests.get(server.url.replace("https://", "http://") + "/healthz", timeout=10)
    with pytest.raises(ServeError, match="--tls-cert and --tls-key go together"):
        nd.serve(forest_bundle, tls_cert=cert)
