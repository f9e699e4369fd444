"""The whole way: capture, push without a daemon on a real Python base, then pull and run the image
with a real Docker engine and get the in-process predictions over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import requests
from containers import DockerDaemon
from registries import Registry as RealRegistry
from registries import free_port

import notebook_deploy as nd
from notebook_deploy.errors import RegistryError

pytestmark = pytest.mark.integration


def _serve(docker: DockerDaemon, image: str) -> tuple[str, str]:
    """Run ``image`` on the host network on a free port; return the container name and base URL."""
    port = free_port()
    name = f"nd-test-{port}"
    docker.docker("run", "-d", "--rm", "--name", name, "--network", "host", "-e", f"PORT={port}", image)
    url = f"http://127.0.0.1:{port}"
    docker.wait_until_answers(name, f"{url}/readyz")
    return name, url


def test_a_pushed_image_serves_the_in_process_predictions(engine, forest_bundle, iris, tmp_path):
    registry, docker, base = engine
    image = f"{registry.host}/models/forest:1"
    result = nd.push(forest_bundle, image, base=base)
    docker.docker("pull", image)
    labels = docker.docker("inspect", "--format", "{{json .Config.Labels}}", image).stdout
    assert forest_bundle.ref in labels
    name, url = _serve(docker, image)
    try:
        X = iris[0][::5]
        answer = requests.post(f"{url}/predict", json={"instances": X.tolist()}, timeout=30).json()
        assert answer == {"predictions": forest_bundle.predict(X).tolist()}
        assert requests.get(f"{url}/readyz", timeout=5).json()["sample_check"] == "match"
        user = docker.docker("exec", name, "id", "-u").stdout.strip()
        assert user == "65532"
    finally:
        docker.docker("rm", "-f", name, check=False)
    assert result.digest in docker.docker("inspect", "--format", "{{json .RepoDigests}}", image).stdout


def test_an_exported_tar_loads_into_docker_and_serves(engine, pipeline_bundle, customers, tmp_path):
    registry, docker, base = engine
    tar = nd.export_image(pipeline_bundle, tmp_path / "customers.tar", name="models/customers:1", base=base)
    assert "models/customers:1" in docker.docker("load", "-i", str(tar)).stdout
    name, url = _serve(docker, "models/customers:1")
    try:
        frame = customers[0].head(20)
        answer = requests.post(f"{url}/predict_proba", json={"instances": frame.to_dict(orient="records")}, timeout=30)
        assert np.array_equal(np.asarray(answer.json()["predictions"]), pipeline_bundle.predict(frame, "predict_proba"))
    finally:
        docker.docker("rm", "-f", name, check=False)


def test_the_docker_backend_pushes_the_same_image_through_the_daemon(engine, forest_bundle, monkeypatch, tmp_path):
    registry, docker, base = engine
    monkeypatch.setenv("DOCKER_HOST", docker.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no credentials: the test registry needs none
    through_docker = nd.push(
        forest_bundle, f"{registry.host}/models/forest:docker", base=base
    )  # auto: a daemon answers
    assert through_docker.backend == "docker" and through_docker.digest.startswith("sha256:")
    daemonless = nd.push(forest_bundle, f"{registry.host}/models/forest:data", base=base, backend="daemonless")
    configs = [
        json.loads(
            subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--raw",
                    "--config",
                    "--tls-verify=false",
                    f"docker://{registry.host}/models/forest:{tag}",
                ],
                capture_output=True,
                check=True,
            ).stdout
        )
        for tag in ("docker", "data")
    ]
    assert configs[0]["rootfs"]["diff_ids"] == configs[1]["rootfs"]["diff_ids"]  # the very same layers
    assert configs[0]["config"]["Labels"] == configs[1]["config"]["Labels"]
    assert daemonless.backend == "daemonless"


def test_an_error_inside_the_docker_push_stream_is_raised(engine, forest_bundle, monkeypatch, tmp_path):
    registry, docker, base = engine
    monkeypatch.setenv("DOCKER_HOST", docker.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    nowhere = f"127.0.0.1:{free_port()}/models/forest:1"  # nothing listens there
    with pytest.raises(RegistryError, match="the Docker daemon could not push"):
        nd.push(forest_bundle, nowhere, base=base, backend="docker")


def test_containerize_gives_a_context_that_docker_builds_and_runs(engine, forest_bundle, iris, tmp_path):
    registry, docker, base = engine
    context = tmp_path / "context"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "notebook_deploy",
            "containerize",
            str(forest_bundle.path),
            "--output",
            str(context),
            "--base",
            base,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    dockerfile = (context / "Dockerfile").read_text()
    assert f"ARG BASE={base}" in dockerfile and 'ENTRYPOINT ["python3", "-m", "notebook_deploy"' in dockerfile
    docker.docker("build", "--network", "host", "-t", "models/forest:built", str(context))
    name, url = _serve(docker, "models/forest:built")
    try:
        X = iris[0][::7]
        answer = requests.post(f"{url}/predict", json={"instances": X.tolist()}, timeout=30).json()
        assert answer == {"predictions": forest_bundle.predict(X).tolist()}
    finally:
        docker.docker("rm", "-f", name, check=False)


def test_build_image_into_the_daemon_or_into_a_file(engine, forest_bundle, monkeypatch, tmp_path):
    registry, docker, base = engine
    monkeypatch.setenv("DOCKER_HOST", docker.host)
    assert nd.build_image(forest_bundle, "models/forest:local", base=base) == "models/forest:local"
    labels = docker.docker("image", "inspect", "--format", "{{json .Config.Labels}}", "models/forest:local").stdout
    assert forest_bundle.ref in labels
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "notebook_deploy",
            "build",
            str(forest_bundle.path),
            "models/forest:file",
            "--base",
            base,
            "--output",
            str(tmp_path / "forest.tar"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"docker-archive:{tmp_path / 'forest.tar'}"],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert config["config"]["Labels"]["io.notebook-deploy.bundle"] == forest_bundle.ref


def test_the_docker_backend_pushes_with_the_docker_config_credentials(engine, forest_bundle, monkeypatch, tmp_path):
    registry, docker, base = engine
    with RealRegistry("basic", tmp_path / "basic-registry") as secured:
        (tmp_path / "docker-config").mkdir()
        secured.write_docker_config(tmp_path / "docker-config")
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
        monkeypatch.setenv("DOCKER_HOST", docker.host)
        result = nd.push(forest_bundle, f"{secured.host}/models/forest:1", base=base, backend="docker")
        assert result.backend == "docker"
        found = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                "--creds",
                f"{secured.username}:{secured.password}",
                f"docker://{secured.host}/models/forest:1",
            ],
            capture_output=True,
            check=True,
        ).stdout
        assert json.loads(found)["Digest"] == result.digest
