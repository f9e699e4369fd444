"""The registry client against a real docker-registry, in its three authentication modes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading

import pytest
from registries import Registry as RealRegistry

from notebook_deploy.errors import RegistryAuthError, RegistryError
from notebook_deploy.image.credentials import Credentials
from notebook_deploy.image.registry import OCI_MANIFEST, Blob, Registry

pytestmark = pytest.mark.integration


def blob_of(data: bytes) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data)


def file_blob_of(data: bytes, directory) -> Blob:
    """A blob read from a file, as a built layer is: its chunks are streamed from the file."""
    path = directory / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), path=path)


def client_for(real: RealRegistry, **options) -> Registry:
    credentials = Credentials(real.username, real.password) if real.username else None
    return Registry(real.host, scheme="http", credentials=credentials, **options)


def manifest_for(config: Blob, layers: list[Blob]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.digest,
                "size": config.size,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": b.digest, "size": b.size}
                for b in layers
            ],
        },
        separators=(",", ":"),
    ).encode()


@pytest.fixture(params=["none", "basic", "token"])
def real(request, tmp_path):
    with RealRegistry(request.param, tmp_path / "registry") as registry:
        yield registry


def test_push_blobs_and_a_manifest_then_skopeo_sees_them(real, tmp_path):
    client = client_for(real)
    small, large = blob_of(b"x" * 1000), file_blob_of(os.urandom(3_000_000), tmp_path)
    seen: list[int] = []
    assert client.push_blob("models/iris", small) == "uploaded"
    assert (
        client.push_blob("models/iris", large, chunk_size=1_000_000, progress=lambda done, total: seen.append(done))
        == "uploaded"
    )
    assert seen == [1_000_000, 2_000_000, 3_000_000]
    assert client.push_blob("models/iris", large) == "exists"
    assert client.push_blob("models/other", large, mount_from="models/iris") == "mounted"
    config = blob_of(
        json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
    )
    client.push_blob("models/iris", config)
    body = manifest_for(config, [small, large])
    digest = client.put_manifest("models/iris", "v1", body, OCI_MANIFEST)
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert client.get_manifest("models/iris", "v1") == (body, OCI_MANIFEST)
    assert client.get_blob("models/iris", large.digest) == large.path.read_bytes()

    creds = ["--creds", f"{real.username}:{real.password}"] if real.username else []
    inspected = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *creds, f"docker://{real.host}/models/iris:v1"],
        capture_output=True,
        check=True,
    )
    assert inspected.stdout == body


def test_credentials_come_from_the_docker_config(tmp_path, monkeypatch):
    with RealRegistry("token", tmp_path / "registry") as real:
        (tmp_path / "docker").mkdir()
        monkeypatch.setenv("DOCKER_CONFIG", str(real.write_docker_config(tmp_path / "docker").parent))
        client = Registry(real.host, scheme="http")  # credentials="auto"
        assert client.push_blob("team/app", blob_of(b"config")) == "uploaded"
        # one token for the pull,push scope was enough for both the check and the upload
        assert [t["subject"] for t in real.token_server.issued] == ["tester"]


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_a_wrong_password_is_a_clear_error_and_tags_nothing(mode, tmp_path):
    with RealRegistry(mode, tmp_path / "registry") as real:
        wrong = Registry(real.host, scheme="http", credentials=Credentials(real.username, "wrong"))
        with pytest.raises(RegistryAuthError, match=f"{real.host} refused"):
            wrong.put_manifest("models/iris", "v1", b"{}", OCI_MANIFEST)
        right = client_for(real)
        with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
            right.get_manifest("models/iris", "v1")


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_anonymous_pushes_are_refused_saying_how_to_log_in(mode, tmp_path):
    with RealRegistry(mode, tmp_path / "registry") as real:
        anonymous = Registry(real.host, scheme="http", credentials=None)
        with pytest.raises(RegistryAuthError, match="docker login|refused anonymous access"):
            anonymous.push_blob("models/iris", blob_of(b"data"))


@pytest.mark.parametrize("held", ["in memory", "in a file"])
def test_an_upload_survives_the_registry_going_down_mid_blob(held, tmp_path):
    """The registry is killed after the first chunk and comes back a second later: the client asks
    where the upload stands and goes on from there."""
    with RealRegistry("none", tmp_path / "registry") as real:
        client = client_for(real, backoff=0.5)
        content = os.urandom(4_000_000)
        data = blob_of(content) if held == "in memory" else file_blob_of(content, tmp_path)
        restarted = threading.Event()

        def progress(done: int, total: int) -> None:
            if done == 1_000_000 and not restarted.is_set():
                real.kill()
                threading.Timer(1.0, lambda: (real.restart(), restarted.set())).start()

        assert client.push_blob("models/big", data, chunk_size=1_000_000, progress=progress) == "uploaded"
        assert restarted.is_set()
        assert client.get_blob("models/big", data.digest) == content


def test_a_registry_that_stays_down_gives_a_clear_error_and_a_later_push_completes(tmp_path):
    with RealRegistry("none", tmp_path / "registry") as real:
        client = client_for(real, retries=2, backoff=0.1)
        first = blob_of(b"first layer")
        assert client.push_blob("models/iris", first) == "uploaded"
        real.kill()
        with pytest.raises(RegistryError, match="did not answer .* after 3 attempts .* run the push again"):
            client.push_blob("models/iris", blob_of(b"second layer"))
        real.restart()
        assert client.push_blob("models/iris", first) == "exists"
        assert client.push_blob("models/iris", blob_of(b"second layer")) == "uploaded"


def test_a_manifest_naming_a_missing_blob_is_refused_with_the_registry_code(tmp_path):
    with RealRegistry("none", tmp_path / "registry") as real:
        client = client_for(real)
        config = blob_of(b"{}")
        client.push_blob("models/iris", config)
        with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN") as error:
            client.put_manifest("models/iris", "v1", manifest_for(config, [blob_of(b"never pushed")]), OCI_MANIFEST)
        assert error.value.code == "MANIFEST_BLOB_UNKNOWN"


# -- where credentials go ------------------------------------------------------------------------------
class _Recorder:
    """A plain HTTP server on 127.0.0.1 that records each request's path and Authorization header and
    answers with ``answer(handler)``."""

    def __init__(self, answer):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers = answer(self)
                self.send_response(status)
                for name, value in {"Content-Length": "0", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_credentials_never_follow_an_upload_location_or_a_redirect_to_another_origin():
    secret = Credentials("ana", "s3cret")
    with _Recorder(lambda h: (201, {})) as other:

        def registry_answer(handler):
            if handler.headers.get("Authorization") is None:
                return 401, {"WWW-Authenticate": 'Basic realm="r"'}
            if handler.command == "POST":  # the upload session lives elsewhere
                return 202, {"Location": other.url + "/upload/1", "Range": "0-0"}
            if handler.command == "GET":
                return 307, {"Location": other.url + "/blob"}
            return 404, {}

        with _Recorder(registry_answer) as own:
            client = Registry(own.url.removeprefix("http://"), scheme="http", credentials=secret, retries=0)
            client.push_blob("repo", blob_of(b"layer"))
            with pytest.raises(RegistryError):
                client.get_blob("repo", blob_of(b"layer").digest)
    assert any(auth and auth.startswith("Basic ") for _, _, auth in own.seen)  # the registry itself gets them
    assert other.seen and all(auth is None for _, _, auth in other.seen), other.seen


def test_credentials_go_to_a_token_realm_only_over_https_or_on_this_machine():
    import requests

    class Refuse(requests.adapters.BaseAdapter):
        """Stands in for a token server on another host, which cannot run here: records, answers nothing."""

        sent = []

        def send(self, request, **kwargs):
            self.sent.append(request)
            raise requests.ConnectionError("no network here")

        def close(self):
            pass

    challenge = {"WWW-Authenticate": 'Bearer realm="http://tokens.example/token",service="s"'}
    with _Recorder(lambda h: (401, challenge)) as own:
        client = Registry(own.url.removeprefix("http://"), scheme="http", credentials=Credentials("ana", "s3cret"))
        refuse = Refuse()
        client._session.mount("http://tokens.example/", refuse)
        with pytest.raises(RegistryAuthError, match="not https: the credentials .* are not sent there in the clear"):
            client.blob_exists("repo", blob_of(b"x").digest)
    assert refuse.sent == []


def test_blobs_pushed_from_several_threads_share_one_token(tmp_path):
    """Threads that meet the same 401 at once fetch one token between them, and every blob goes up."""
    from notebook_deploy.image.registry import run_all

    with RealRegistry("token", tmp_path / "registry") as real:
        client = client_for(real)
        blobs = [blob_of(f"layer {i}".encode()) for i in range(8)]
        jobs = [(b.digest, lambda b=b: client.push_blob("models/iris", b)) for b in blobs]
        assert run_all(jobs) == {b.digest: "uploaded" for b in blobs}
        assert [t["subject"] for t in real.token_server.issued] == ["tester"]
        assert run_all(jobs) == {b.digest: "exists" for b in blobs}


def test_a_registry_without_the_referrers_api_is_asked_once_per_client(tmp_path):
    """distribution 2.8 answers a manifest with a subject without OCI-Subject: the client stores the first
    by its digest and learns the answer; later ones are left to the caller's tag, with no PUT of their own."""
    with RealRegistry("none", tmp_path / "registry") as real:
        client = client_for(real)
        config, layer = blob_of(b"{}"), blob_of(b"an attached document")
        client.push_blob("models/iris", config)
        client.push_blob("models/iris", layer)
        subject = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 2}
        bodies = [
            json.dumps({**json.loads(manifest_for(config, [layer])), "subject": subject, "artifactType": kind}).encode()
            for kind in ("application/x-first", "application/x-second")
        ]
        assert client.put_referrer("models/iris", bodies[0], OCI_MANIFEST) is False
        assert client.get_manifest("models/iris", "sha256:" + hashlib.sha256(bodies[0]).hexdigest())[0] == bodies[0]
        assert client.put_referrer("models/iris", bodies[1], OCI_MANIFEST) is False
        with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
            client.get_manifest("models/iris", "sha256:" + hashlib.sha256(bodies[1]).hexdigest())
        fresh = client_for(real)  # another client asks again
        assert fresh.put_referrer("models/iris", bodies[1], OCI_MANIFEST) is False
        assert fresh.get_manifest("models/iris", "sha256:" + hashlib.sha256(bodies[1]).hexdigest())[0] == bodies[1]


def test_a_blob_pushed_without_the_check_is_uploaded_even_when_there(tmp_path):
    """check=False (attachments of an image new to the repository) skips the HEAD; a blob that was there
    after all is uploaded again and stays readable, once."""
    with RealRegistry("none", tmp_path / "registry") as real:
        client = client_for(real)
        data = blob_of(b"an sbom")
        assert client.push_blob("models/iris", data, check=False) == "uploaded"
        assert client.push_blob("models/iris", data, check=False) == "uploaded"
        assert client.push_blob("models/iris", data) == "exists"
        assert client.get_blob("models/iris", data.digest) == data.data
