"""Image references, registry credentials and reproducible layers (no registry needed)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import tarfile

import pytest

from notebook_deploy.errors import ImageReferenceError
from notebook_deploy.image.credentials import Credentials, find_credentials
from notebook_deploy.image.layers import Entry, build_layer, entries_from_directory
from notebook_deploy.image.reference import ImageReference
from notebook_deploy.image.registry import _challenge


@pytest.mark.parametrize(
    "text, registry, repository, tag, scheme",
    [
        ("127.0.0.1:5000/models/iris:1", "127.0.0.1:5000", "models/iris", "1", "http"),
        ("localhost:5000/iris", "localhost:5000", "iris", "latest", "http"),
        ("python:3.11-slim", "registry-1.docker.io", "library/python", "3.11-slim", "https"),
        ("ghcr.io/acme/churn:v2", "ghcr.io", "acme/churn", "v2", "https"),
        ("10.1.2.3:5000/a/b", "10.1.2.3:5000", "a/b", "latest", "https"),  # private is not loopback
        ("192.168.1.5/a", "192.168.1.5", "a", "latest", "https"),
        ("[::1]:5000/a", "[::1]:5000", "a", "latest", "http"),
        ("acme/churn", "registry-1.docker.io", "acme/churn", "latest", "https"),
    ],
)
def test_references_parse_with_docker_defaults(text, registry, repository, tag, scheme):
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.scheme) == (registry, repository, tag, scheme)


def test_plain_http_for_a_private_registry_only_when_named_insecure(monkeypatch):
    monkeypatch.setenv("NOTEBOOK_DEPLOY_INSECURE_REGISTRIES", "10.1.2.3:5000, registry.lan")
    assert ImageReference.parse("10.1.2.3:5000/a/b").scheme == "http"
    assert ImageReference.parse("registry.lan/a").scheme == "http"
    assert ImageReference.parse("10.1.2.3/a").scheme == "https"  # another port is another registry


def test_a_digest_reference_and_round_trip():
    digest = "sha256:" + "a" * 64
    ref = ImageReference.parse(f"ghcr.io/acme/churn@{digest}")
    assert ref.reference == digest and str(ref) == f"ghcr.io/acme/churn@{digest}"
    assert str(ImageReference.parse("ghcr.io/acme/churn:v2")) == "ghcr.io/acme/churn:v2"


@pytest.mark.parametrize("text", ["ghcr.io/Acme/churn", "ghcr.io/acme/churn:bad tag", "x@sha256:123", "ghcr.io/a//b"])
def test_bad_references_say_what_is_wrong(text):
    with pytest.raises(ImageReferenceError, match="not a valid|not a sha256"):
        ImageReference.parse(text)


@pytest.fixture
def docker_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "docker").mkdir()
    return tmp_path / "docker"


def test_credentials_from_an_inline_docker_config_entry(docker_home):
    auth = base64.b64encode(b"ana:pa:ss").decode()
    (docker_home / "config.json").write_text(json.dumps({"auths": {"127.0.0.1:5002": {"auth": auth}}}))
    assert find_credentials("127.0.0.1:5002") == Credentials("ana", "pa:ss")
    assert find_credentials("127.0.0.1:5003") is None
    assert "pa:ss" not in repr(find_credentials("127.0.0.1:5002"))


def test_a_credential_helper_wins_over_inline_entries(docker_home, tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread host\necho "{\\"ServerURL\\": \\"$host\\", \\"Username\\": \\"bot\\", \\"Secret\\": \\"from-helper\\"}"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    auth = base64.b64encode(b"ana:inline").decode()
    (docker_home / "config.json").write_text(
        json.dumps({"credHelpers": {"reg.example:443": "fake"}, "auths": {"reg.example:443": {"auth": auth}}})
    )
    assert find_credentials("reg.example:443") == Credentials("bot", "from-helper")


def test_credentials_from_the_environment_last(docker_home, monkeypatch):
    monkeypatch.setenv("REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("REGISTRY_PASSWORD", "token")
    assert find_credentials("anything:5000") == Credentials("ci", "token")


@pytest.mark.parametrize(
    "header, scheme, params",
    [
        ('Basic realm="basic-realm"', "basic", {"realm": "basic-realm"}),
        (
            'Bearer realm="http://127.0.0.1:5004/token",service="reg",scope="repository:a/b:pull"',
            "bearer",
            {"realm": "http://127.0.0.1:5004/token", "service": "reg", "scope": "repository:a/b:pull"},
        ),
        (
            'Basic realm="r", Bearer realm="http://t/token",service="s"',
            "bearer",
            {"realm": "http://t/token", "service": "s"},
        ),
    ],
)
def test_authentication_challenges_are_parsed(header, scheme, params):
    assert _challenge(header) == (scheme, params)


def test_layers_are_reproducible_and_carry_both_digests(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    entries = [Entry("app/model/bundle.json", b"{}"), Entry("/app/bin/serve", b"#!/bin/sh\n", 0o755)]
    first = build_layer(entries, tmp_path / "1.tar.gz")
    second = build_layer(list(reversed(entries)), tmp_path / "2.tar.gz")
    assert first.digest == second.digest and first.size == second.size
    assert first.digest == "sha256:" + hashlib.sha256((tmp_path / "1.tar.gz").read_bytes()).hexdigest()
    assert (
        first.diff_id == "sha256:" + hashlib.sha256(gzip.decompress((tmp_path / "1.tar.gz").read_bytes())).hexdigest()
    )
    members = {m.name: m for m in tarfile.open(tmp_path / "1.tar.gz")}
    assert list(members) == ["app", "app/bin", "app/bin/serve", "app/model", "app/model/bundle.json"]
    assert members["app/bin/serve"].mode == 0o755 and members["app"].isdir()
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 315532800)}
    changed = build_layer([Entry("app/model/bundle.json", b"{ }"), entries[1]], tmp_path / "3.tar.gz")
    assert changed.digest != first.digest


def test_layers_from_a_directory_keep_executables(tmp_path):
    source = tmp_path / "tree"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "tool").write_text("#!/bin/sh\n")
    (source / "bin" / "tool").chmod(0o755)
    (source / "data.txt").write_text("x")
    entries = entries_from_directory(source, "/opt/app")
    assert [(e.path, e.mode) for e in entries] == [("/opt/app/bin/tool", 0o755), ("/opt/app/data.txt", 0o644)]
    with pytest.raises(ValueError, match="may not go up"):
        build_layer([Entry("../etc/passwd", b"")], tmp_path / "bad.tar.gz")


@pytest.mark.parametrize(
    "config, env",
    [
        ({"config": {"Env": None}}, {}),  # what `docker import` writes
        ({"config": None}, {}),
        ({}, {}),
        ({"config": {"Env": ["PATH=/usr/bin", "LANG=C.UTF-8", "JUNK"]}}, {"PATH": "/usr/bin", "LANG": "C.UTF-8"}),
    ],
)
def test_a_null_or_missing_env_is_an_empty_one(config, env):
    from notebook_deploy.image.assemble import config_env

    assert config_env(config) == env


def test_the_docker_backend_without_the_docker_package_names_the_install(monkeypatch):
    import sys

    import notebook_deploy as nd
    from notebook_deploy.errors import NotebookDeployError

    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` now fails as if it were not installed
    with pytest.raises(NotebookDeployError, match=r"needs the Docker SDK.*pip install 'notebook-deploy\[docker\]'"):
        nd.push("iris", "127.0.0.1:5000/models/iris:1", backend="docker")


@pytest.mark.parametrize(
    "path, dropped",
    [
        ("opt/notebook-deploy/site-packages/scipy/linalg/tests/test_basic.py", True),
        ("opt/notebook-deploy/site-packages/numpy/_core/include/numpy/ndarrayobject.h", True),
        ("opt/notebook-deploy/site-packages/sklearn/utils/_typedefs.pxd", True),
        ("opt/notebook-deploy/site-packages/pandas/__pycache__/__init__.cpython-311.pyc", True),
        ("opt/notebook-deploy/site-packages/numpy/__init__.pyi", True),
        ("opt/notebook-deploy/site-packages/numpy/testing/__init__.py", False),  # imported by libraries
        ("opt/notebook-deploy/site-packages/sklearn/utils/_testing.py", False),
        ("opt/notebook-deploy/site-packages/scipy/linalg/_basic.py", False),
        ("opt/notebook-deploy/site-packages/tests.py", False),  # a module, not a test folder
    ],
)
def test_an_image_leaves_out_tests_caches_headers_and_stubs(path, dropped):
    from notebook_deploy.image.build import left_out

    assert left_out(path) is dropped


def test_the_runtime_layer_has_the_server_but_not_the_jupyter_adapters():
    from notebook_deploy.image.build import SITE, runtime_entries

    paths = {entry.path.removeprefix(f"{SITE}/notebook_deploy/") for entry in runtime_entries()}
    assert {"__main__.py", "cli.py", "serving/app.py", "image/build.py"} <= paths
    assert not [p for p in paths if p.startswith(("jupyter/", "labextension/")) or p.endswith(".pyc")]


def test_the_command_an_image_runs_imports_only_what_its_runtime_layer_installs():
    """An image has the runtime's requirements (RUNTIME_REQUIREMENTS and what they require), not every
    dependency of notebook-deploy: with every other distribution hidden, as the package probe hides them,
    the CLI and the serving app must still import (a module-level `import yaml` in a module the CLI
    imports once broke every container)."""
    import json
    import subprocess
    import sys
    from importlib import metadata

    from packaging.utils import canonicalize_name

    from notebook_deploy.capturing.packages import _with_requirements
    from notebook_deploy.image.build import RUNTIME_REQUIREMENTS

    allowed = set(_with_requirements({canonicalize_name(n) for n in RUNTIME_REQUIREMENTS}))
    hidden = sorted(
        top
        for top, names in metadata.packages_distributions().items()
        if top != "notebook_deploy" and not any(canonicalize_name(n) in allowed for n in names)
    )
    code = (
        "import json, sys\n"
        "from notebook_deploy.capturing.probe import block\n"
        f"block(json.loads({json.dumps(json.dumps(hidden))}))\n"
        "import notebook_deploy.cli, notebook_deploy.serving.app\n"
        "notebook_deploy.serving.app.create_app\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "yaml" in hidden  # the check hides what an image lacks
