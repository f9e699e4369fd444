"""notebook_deploy.push and `notebook-deploy push`: a bundle's image built as data and pushed to a
real registry (a base without Python here; running the image is tested with a real base and dockerd)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from images import push_test_base
from registries import Registry as RealRegistry
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.errors import RegistryAuthError, RegistryError
from notebook_deploy.image import build
from notebook_deploy.image.publish import layer_cache
from notebook_deploy.image.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(tmp_path):
    with RealRegistry("basic", tmp_path / "registry") as real:
        client = Registry(real.host, scheme="http", credentials=None)
        from notebook_deploy.image.credentials import Credentials

        client.credentials = Credentials(real.username, real.password)
        base = push_test_base(client, tmp_path)
        (tmp_path / "docker").mkdir()
        real.write_docker_config(tmp_path / "docker")
        yield real, base


@pytest.fixture
def docker_config(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


def _model(C: float, store) -> nd.Bundle:
    rng = np.random.default_rng(0)
    X = rng.random((80, 3))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    return nd.capture(LogisticRegression(C=C).fit(X, y), name="lr", sample=X[:3], store=store)


def _config(real, image: str) -> dict:
    return json.loads(
        subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--config",
                "--tls-verify=false",
                "--creds",
                f"{real.username}:{real.password}",
                f"docker://{image}",
            ],
            capture_output=True,
            check=True,
        ).stdout
    )


def test_push_builds_a_labelled_image_and_a_model_change_uploads_only_the_bundle(
    registry, docker_config, store, monkeypatch, own_layer_cache
):
    real, base = registry
    first = _model(1.0, store)
    result = nd.push(first, f"{real.host}/models/lr:1", base=base)
    assert sorted(result.blobs.values()).count("uploaded") == 4  # dependencies, runtime, bundle, config
    config = _config(real, f"{real.host}/models/lr:1")
    settings = config["config"]
    assert settings["Labels"]["io.notebook-deploy.bundle"] == first.ref
    assert settings["Entrypoint"][:4] == ["python3", "-m", "notebook_deploy", "serve"]
    assert settings["User"] == "65532" and "PORT=8000" in settings["Env"] and "8000/tcp" in settings["ExposedPorts"]
    assert settings["Healthcheck"]["Test"][0] == "CMD"
    assert [h["created_by"] for h in config["history"][-3:]][-1] == f"bundle {first.ref}"

    kept = layer_cache().entries()  # the default store's: the push was given no store
    assert sorted(str(e.facts["kind"]) for e in kept) == ["dependencies", "runtime"]

    def no_pip(*args, **kwargs):
        raise AssertionError("the dependency layer was built again although its requirements did not change")

    monkeypatch.setattr(build, "download_wheels", no_pip)  # from here on, layers must come from the cache
    again = nd.push(first, f"{real.host}/models/lr:again", base=base)
    assert again.digest == result.digest and again.uploaded_bytes == 0  # same bundle, same image
    assert again.attached.packages == result.attached.packages  # the SBOM lists the cached layer's packages

    second = _model(0.01, store)
    changed = nd.push(second, f"{real.host}/models/lr:2", base=base)
    uploaded = [d for d, what in changed.blobs.items() if what == "uploaded"]
    assert len(uploaded) == 2  # the bundle layer and the config; dependencies and runtime exist
    report = changed.layer_lines()  # each added layer with its size and what the push did with it
    assert [line.split()[-1] for line in report] == ["exists", "exists", "uploaded"]
    assert "dependencies for linux/amd64" in report[0] and f"bundle {second.ref}" in report[2]
    assert "\n".join(report) in str(changed)
    assert changed.uploaded_bytes < 20_000 < result.uploaded_bytes


def test_a_wrong_password_is_a_clear_error_and_tags_nothing(registry, store, tmp_path, monkeypatch):
    real, base = registry
    (tmp_path / "wrong").mkdir()
    real.write_docker_config(tmp_path / "wrong", password="not-it")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "wrong"))
    with pytest.raises(RegistryAuthError, match="refused"):
        nd.push(_model(1.0, store), f"{real.host}/models/lr:1", base=base)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
        Registry(real.host, scheme="http").get_manifest("models/lr", "1")


def test_the_cli_push_prints_the_digest(registry, docker_config, store):
    real, base = registry
    bundle = _model(1.0, store)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "notebook_deploy",
            "--store",
            str(store.root),
            "push",
            bundle.ref,
            f"{real.host}/models/lr:cli",
            "--base",
            base,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Pushed {real.host}/models/lr:cli@sha256:")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "notebook_deploy",
            "--store",
            str(store.root),
            "push",
            bundle.ref,
            "Not/A Valid:Ref",
            "--base",
            base,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "not a valid" in refused.stderr


def test_push_to_a_bearer_token_registry(tmp_path, store, monkeypatch):
    with RealRegistry("token", tmp_path / "token-registry") as real:
        from notebook_deploy.image.credentials import Credentials

        client = Registry(real.host, scheme="http", credentials=Credentials(real.username, real.password))
        base = push_test_base(client, tmp_path)
        (tmp_path / "token-docker").mkdir()
        real.write_docker_config(tmp_path / "token-docker")
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "token-docker"))
        result = nd.push(_model(1.0, store), f"{real.host}/models/lr:1", base=base, backend="daemonless")
        assert (
            result.blobs[json.loads(client.get_manifest("base/python", "3.11-amd64")[0])["layers"][0]["digest"]]
            == "mounted"
        )
        assert client.get_manifest("models/lr", "1")[0]  # tagged


CUDA_ENV = [
    "PATH=/usr/bin",
    "CUDA_VERSION=12.8.1",
    "NVIDIA_VISIBLE_DEVICES=all",
    "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
]


def test_on_a_cuda_base_the_image_keeps_its_settings_and_asks_for_cuda_builds(registry, docker_config, store, tmp_path):
    """A CUDA base as NVIDIA's images describe themselves (``CUDA_VERSION``; the CUDA libraries themselves
    cannot be pulled here, so the base is the test base with that config). The image keeps the base's
    settings, so the NVIDIA container runtime gives it the GPUs; a model without torch needs nothing
    else. A torch bundle captured with the CPU build asks for the CUDA build of the same version."""
    real, _ = registry
    client = Registry(real.host, scheme="http", credentials=None)
    from notebook_deploy.image.credentials import Credentials

    client.credentials = Credentials(real.username, real.password)
    (tmp_path / "cuda").mkdir()
    cuda_base = push_test_base(
        client, tmp_path / "cuda", "base/cuda", overrides={"config": {"Env": CUDA_ENV, "Cmd": ["python3"]}}
    )
    bundle = _model(1.0, store)
    nd.push(bundle, f"{real.host}/models/lr:cuda", base=cuda_base)
    env = _config(real, f"{real.host}/models/lr:cuda")["config"]["Env"]
    assert set(CUDA_ENV) <= set(env) and "PYTHONPATH=/opt/notebook-deploy/site-packages" in env
    assert build.dependency_requirements(bundle, "linux/amd64", cuda=True) == build.dependency_requirements(
        bundle, "linux/amd64"
    )  # nothing of it has a CPU build

    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    torched = nd.capture(model, name="tiny-torch", sample=torch.randn(2, 3), store=store)
    cpu = [line for line in build.dependency_requirements(torched, "linux/amd64") if line.startswith("torch==")]
    cuda = [
        line for line in build.dependency_requirements(torched, "linux/amd64", cuda=True) if line.startswith("torch==")
    ]
    version = torch.__version__
    assert cpu == [f"torch=={version}"]
    if version.endswith("+cpu"):  # the test machines' torch: the CPU build
        assert cuda == [f"torch=={version.removesuffix('+cpu')},!={version}"]
    else:  # a CUDA build already
        assert cuda == cpu
    assert build.dependency_facts(torched, "linux/amd64", cuda=True) != build.dependency_facts(torched, "linux/amd64")
