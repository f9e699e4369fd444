"""The container test helpers against real tools: mmdebstrap, docker-registry, skopeo and dockerd."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from containers import DEFAULT_CACHE, DockerDaemon, layer_digests, push_python_base, python_base_layer
from registries import Registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def base_layer() -> Path:
    """The cached base layer (built on first use, about 30 s)."""
    return python_base_layer(DEFAULT_CACHE)


def _skopeo(*args: str) -> dict:
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(result.stdout)


def test_base_layer_is_cached_and_holds_python(base_layer: Path) -> None:
    mtime = base_layer.stat().st_mtime_ns
    again = python_base_layer(DEFAULT_CACHE)
    assert again == base_layer
    assert again.stat().st_mtime_ns == mtime  # not rebuilt
    with tarfile.open(base_layer, "r:gz") as tar:
        members = {m.name.removeprefix("./"): m for m in tar}
    assert members["usr/bin/python3"].issym() or members["usr/bin/python3"].isfile()
    assert "usr/lib/python3.11/json/__init__.py" in members
    assert not any(m.ischr() or m.isblk() for m in members.values())
    assert not any(name.startswith("usr/share/man/") and m.isfile() for name, m in members.items())


def test_push_python_base_is_a_one_layer_amd64_image(base_layer: Path, tmp_path: Path) -> None:
    with Registry("none", tmp_path / "reg") as reg:
        ref = push_python_base(reg.host, DEFAULT_CACHE)
        assert ref == f"{reg.host}/base/python:3.11"
        info = _skopeo("inspect", "--tls-verify=false", f"docker://{ref}")
        config = _skopeo("inspect", "--tls-verify=false", "--config", f"docker://{ref}")
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    assert len(info["Layers"]) == 1
    digest, diff_id = layer_digests(base_layer)
    assert info["Layers"] == [digest]
    with open(base_layer, "rb") as f:
        assert digest == "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    with gzip.open(base_layer, "rb") as f:
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.file_digest(f, "sha256").hexdigest()]
    assert config["config"]["Cmd"] == ["python3"]
    assert any(e.startswith("PATH=") for e in config["config"]["Env"])
    assert len(config["history"]) == 1


def test_docker_pulls_and_runs_the_base(base_layer: Path, tmp_path: Path) -> None:
    with Registry("none", tmp_path / "reg") as reg:
        ref = push_python_base(reg.host, DEFAULT_CACHE)
        with DockerDaemon() as daemon:
            assert daemon.host.startswith("unix:///tmp/")
            daemon.docker("pull", ref)
            run = daemon.docker(
                "run",
                "--rm",
                "--network",
                "host",
                ref,
                "python3",
                "-c",
                "import json, ssl, sqlite3, venv, sys; print('ok', '%d.%d' % sys.version_info[:2])",
            )
        root = daemon.root
    assert run.stdout.strip() == f"ok {sys.version_info.major}.{sys.version_info.minor}"
    assert not root.exists()
