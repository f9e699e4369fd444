"""Images assembled as data on a base resolved from a real registry, pushed, and read back by skopeo."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time

import pytest
from images import push_test_base
from registries import Registry as RealRegistry

from notebook_deploy.errors import NotebookDeployError, RegistryError
from notebook_deploy.image.assemble import ImageSpec, assemble, push_image, resolve_base
from notebook_deploy.image.layers import Entry, build_layer
from notebook_deploy.image.outputs import write_image_tar, write_oci_layout
from notebook_deploy.image.reference import ImageReference
from notebook_deploy.image.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(tmp_path):
    """A real registry holding base/python:3.11, an index of a linux/amd64 and a linux/arm64 image."""
    with RealRegistry("none", tmp_path / "registry") as real:
        client = Registry(real.host, scheme="http", credentials=None)
        push_test_base(client, tmp_path)
        yield real, client


def _folder(tmp_path, name: str):
    (tmp_path / name).mkdir()
    return tmp_path / name


def _spec(tmp_path, bundle_text: bytes) -> ImageSpec:
    deps = build_layer([Entry("opt/venv/lib/site.py", b"# dependencies")], tmp_path / "deps.tgz")
    bundle = build_layer([Entry("opt/bundle/model.pkl", bundle_text)], tmp_path / f"bundle-{len(bundle_text)}.tgz")
    return ImageSpec(
        layers=[deps, bundle],
        history=["python dependencies", "bundle iris:abc"],
        entrypoint=["python3", "-m", "notebook_deploy", "serve", "/opt/bundle", "--host", "0.0.0.0"],
        env={"PORT": "8000"},
        labels={"org.opencontainers.image.title": "iris"},
        user="1000",
        exposed_ports=[8000],
        healthcheck=["python3", "-c", "print('ok')"],
    )


def _config_as_skopeo_reads_it(target: ImageReference) -> dict:
    command = ["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{target}"]
    return json.loads(subprocess.run(command, capture_output=True, check=True).stdout)


def test_an_index_resolves_to_the_requested_platform(registry):
    real, client = registry
    base = ImageReference.parse(f"{real.host}/base/python:3.11")
    assert resolve_base(client, base, "linux/arm64").config["architecture"] == "arm64"
    assert resolve_base(client, base).config["architecture"] == "amd64"
    with pytest.raises(NotebookDeployError, match="no image for linux/s390x; it offers linux/amd64, linux/arm64"):
        resolve_base(client, base, "linux/s390x")


def test_assemble_push_and_read_back_with_skopeo(registry, tmp_path):
    real, client = registry
    base = resolve_base(client, ImageReference.parse(f"{real.host}/base/python:3.11"))
    image = assemble(base, _spec(tmp_path, b"model v1"))
    target = ImageReference.parse(f"{real.host}/models/iris:1")
    outcome = push_image(client, image, target)
    assert outcome[base.layers[0]["digest"]] == "mounted"
    assert [outcome[layer.digest] for layer in image.layers] == ["uploaded", "uploaded"]

    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{target}"], capture_output=True, check=True
    ).stdout
    assert raw == image.manifest
    config = _config_as_skopeo_reads_it(target)
    assert config["config"]["Env"] == ["PATH=/usr/bin", "PORT=8000"]
    assert config["config"]["User"] == "1000" and "8000/tcp" in config["config"]["ExposedPorts"]
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "iris"
    assert len(config["rootfs"]["diff_ids"]) == len(config["history"]) == 3
    assert json.loads(raw)["annotations"] == {"org.opencontainers.image.title": "iris"}


def test_a_base_with_a_null_env_and_history_gets_the_image_settings(registry, tmp_path):
    """What `docker import` and some minimal bases write: "Env": null (and no history)."""
    real, client = registry
    push_test_base(client, tmp_path, tag="null", overrides={"config": {"Env": None, "Cmd": ["sh"]}, "history": None})
    base = resolve_base(client, ImageReference.parse(f"{real.host}/base/python:null"))
    target = ImageReference.parse(f"{real.host}/models/iris:null")
    push_image(client, assemble(base, _spec(tmp_path, b"model v1")), target)
    config = _config_as_skopeo_reads_it(target)
    assert config["config"]["Env"] == ["PORT=8000"]
    assert [h["created_by"] for h in config["history"]] == ["python dependencies", "bundle iris:abc"]


def test_same_inputs_same_digest_and_a_model_change_uploads_only_the_bundle_layer(registry, tmp_path):
    real, client = registry
    base = resolve_base(client, ImageReference.parse(f"{real.host}/base/python:3.11"))
    first = assemble(base, _spec(_folder(tmp_path, "a"), b"model v1"))
    again = assemble(base, _spec(_folder(tmp_path, "b"), b"model v1"))
    assert first.digest == again.digest
    target = ImageReference.parse(f"{real.host}/models/iris:1")
    push_image(client, first, target)
    changed = assemble(base, _spec(_folder(tmp_path, "c"), b"model v2!"))
    outcome = push_image(client, changed, target.with_tag("2"))
    deps, bundle = changed.layers
    assert (outcome[base.layers[0]["digest"]], outcome[deps.digest], outcome[bundle.digest]) == (
        "exists",
        "exists",
        "uploaded",
    )
    assert changed.digest != first.digest


def test_oci_layout_and_image_tar_are_read_by_skopeo(registry, tmp_path):
    real, client = registry
    base = resolve_base(client, ImageReference.parse(f"{real.host}/base/python:3.11"))
    image = assemble(base, _spec(tmp_path, b"model v1"))
    fetch = lambda digest: client.get_blob("base/python", digest)  # noqa: E731

    layout = write_oci_layout(image, tmp_path / "layout", "models/iris:1", fetch)
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:1"], capture_output=True, check=True).stdout
    assert raw == image.manifest
    # skopeo copy re-checks every blob digest on the way into a registry, and keeps the manifest digest
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{real.host}/copied/iris:1"],
        capture_output=True,
        check=True,
    )
    assert client.get_manifest("copied/iris", "1")[0] == image.manifest

    first = write_image_tar(image, tmp_path / "iris.tar", "models/iris:1", fetch)
    second = write_image_tar(image, tmp_path / "again.tar", "models/iris:1", fetch)
    assert first.read_bytes() == second.read_bytes()
    for transport in ("oci-archive", "docker-archive"):  # the OCI view and the `docker load` view of one tar
        found = json.loads(
            subprocess.run(
                ["skopeo", "inspect", "--config", f"{transport}:{first}"], capture_output=True, check=True
            ).stdout
        )
        assert found["config"]["Labels"]["org.opencontainers.image.title"] == "iris"
        assert len(found["rootfs"]["diff_ids"]) == 3


def _layers(tmp_path, count: int) -> list:
    return [
        build_layer([Entry(f"opt/bundle/part-{i}.bin", f"part {i} ".encode() * (i + 1))], tmp_path / f"part-{i}.tgz")
        for i in range(count)
    ]


def test_blobs_pushed_at_once_keep_every_outcome_and_progress(registry, tmp_path):
    """The blobs of a push go up on several threads: each still gets its outcome, its progress ends at its
    size, and the progress callback is never entered by two threads at once."""
    real, client = registry
    base = resolve_base(client, ImageReference.parse(f"{real.host}/base/python:3.11"))
    spec = _spec(tmp_path, b"model v1")
    spec.layers += _layers(tmp_path, 8)
    spec.history += [f"part {i}" for i in range(8)]
    image = assemble(base, spec)
    target = ImageReference.parse(f"{real.host}/models/iris:parts")
    inside, overlapped, last = threading.Lock(), [], {}

    def progress(digest: str, done: int, total: int) -> None:
        if not inside.acquire(blocking=False):
            overlapped.append(digest)
            return
        try:
            time.sleep(0.01)  # long enough for another thread to arrive, were calls not serialised
            last[digest] = (done, total)
        finally:
            inside.release()

    outcome = push_image(client, image, target, progress)
    layers = {layer.digest: layer.size for layer in image.layers}
    assert list(outcome) == [d["digest"] for d in base.layers] + list(layers) + [image.config_digest]
    assert {outcome[d] for d in layers} == {"uploaded"} and outcome[image.config_digest] == "uploaded"
    assert {outcome[d["digest"]] for d in base.layers} == {"mounted"}
    assert {d: last[d] for d in layers} == {d: (size, size) for d, size in layers.items()}
    assert overlapped == []
    assert client.get_manifest("models/iris", "parts")[0] == image.manifest
    again = push_image(client, image, target.with_tag("parts-again"))
    assert set(again.values()) == {"exists"} and list(again) == list(outcome)


def test_a_push_whose_blob_upload_fails_puts_no_manifest(registry, tmp_path):
    """One layer is refused (its bytes are not its digest's) while the others go up beside it: the error is
    raised, and no manifest is put, so the tag does not name an image whose blobs are missing."""
    real, client = registry
    base = resolve_base(client, ImageReference.parse(f"{real.host}/base/python:3.11"))
    spec = _spec(tmp_path, b"model v1")
    parts = _layers(tmp_path, 6)
    parts[3] = dataclasses.replace(parts[3], digest=parts[2].digest.replace(parts[2].digest[-4:], "0000"))
    spec.layers += parts
    spec.history += [f"part {i}" for i in range(6)]
    image = assemble(base, spec)
    target = ImageReference.parse(f"{real.host}/models/iris:broken")
    with pytest.raises(RegistryError, match="DIGEST_INVALID|BLOB_UPLOAD_INVALID"):
        push_image(client, image, target)
    with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
        client.get_manifest("models/iris", "broken")
    with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
        client.get_manifest("models/iris", image.digest)
