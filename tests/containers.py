"""Real containers for tests: a Python base image built with mmdebstrap, and a private dockerd.

    layer = python_base_layer()                          # cached gzip'd rootfs tar (about 30 s the first time)
    ref = push_python_base(reg.host, cache_dir)          # "127.0.0.1:PORT/base/python:3.11"
    with DockerDaemon() as docker:
        docker.docker("pull", ref)
        docker.docker("run", "--rm", "--network", "host", ref, "python3", "-c", "print(1)")

No image can come from Docker Hub here, so the base is Debian bookworm's own python3 (3.11, the host's
minor version), made reproducibly (``SOURCE_DATE_EPOCH``) by ``mmdebstrap``. ``scripts/install-test-deps.sh``
installs mmdebstrap and docker.io (../shared/notes/environment.md, oci-images.md §5.3).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from registries import Service

from notebook_deploy.image.layers import OCI_LAYER, HashingWriter
from notebook_deploy.image.registry import OCI_MANIFEST, Blob, Registry

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
VARIANT = "essential"
PACKAGES = ("python3", "libstdc++6", "ca-certificates")
EXCLUDED = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
EPOCH = 1700000000  # SOURCE_DATE_EPOCH: same packages, same tar
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CACHE = Path.home() / ".cache" / "notebook-deploy-tests"
DOCKERD = next((p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), "/usr/sbin/dockerd")
DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker may be another one

_FORMAT = 1  # bump when the way the layer is made changes, to miss old cache entries


def _mmdebstrap_command(output: str) -> list[str]:
    command = [
        "mmdebstrap",
        "--mode=auto",
        f"--variant={VARIANT}",
        "--include=" + ",".join(PACKAGES),
        "--aptopt=Acquire::Languages \"none\"",
    ]
    command += [f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDED]
    return command + [SUITE, output, MIRROR]


def _cache_name() -> str:
    key = json.dumps([_FORMAT, _mmdebstrap_command("-"), EPOCH]).encode()
    return f"python-base-{SUITE}-{hashlib.sha256(key).hexdigest()[:16]}"


def python_base_layer(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The base rootfs as a gzip'd tar (device nodes dropped), built once per package list and cached."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = _cache_name()
    layer = cache_dir / f"{name}.tar.gz"
    if layer.exists():
        return layer
    with open(cache_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same layer
        if not layer.exists():
            _build(layer, cache_dir / f"{name}.json", cache_dir / f"{name}.log")
    return layer


def _build(layer: Path, sidecar: Path, log_path: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed: run `bash scripts/install-test-deps.sh` as root")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    partial = layer.with_suffix(".partial")
    tar_digest = hashlib.sha256()
    with open(log_path, "wb") as log, open(partial, "wb") as raw:
        # stdin must not be a pipe: mmdebstrap would read sources.list from it
        process = subprocess.Popen(
            _mmdebstrap_command("-"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env
        )
        assert process.stdout is not None
        try:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=6) as compressed:
                hashing = HashingWriter(compressed, tar_digest)
                with (
                    tarfile.open(fileobj=process.stdout, mode="r|") as source,
                    tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as target,
                ):
                    for member in source:
                        if member.ischr() or member.isblk() or member.isfifo():
                            continue  # the runtime makes /dev; a layer may not carry device nodes
                        target.addfile(member, source.extractfile(member) if member.isfile() else None)
        finally:
            code = process.wait()
        if code != 0:
            partial.unlink(missing_ok=True)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"mmdebstrap exited with {code}:\n{tail}")
    digest = hashlib.sha256()
    with open(partial, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    sidecar.write_text(
        json.dumps(
            {
                "digest": f"sha256:{digest.hexdigest()}",
                "diff_id": f"sha256:{tar_digest.hexdigest()}",
                "size": partial.stat().st_size,
            }
        )
    )
    os.replace(partial, layer)


def layer_digests(layer: Path) -> tuple[str, str]:
    """``(digest, diff_id)`` of a gzip'd layer: from the build's sidecar file, else computed."""
    sidecar = layer.with_name(layer.name.removesuffix(".tar.gz") + ".json")
    if sidecar.exists():
        recorded = json.loads(sidecar.read_text())
        if recorded.get("size") == layer.stat().st_size:
            return recorded["digest"], recorded["diff_id"]
    digest, diff_id = hashlib.sha256(), hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    with gzip.open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            diff_id.update(chunk)
    return f"sha256:{digest.hexdigest()}", f"sha256:{diff_id.hexdigest()}"


def push_python_base(
    registry_host: str, cache_dir: Path = DEFAULT_CACHE, repository: str = "base/python", tag: str = "3.11"
) -> str:
    """Push the base as a one-layer linux/amd64 OCI image over plain http; return ``HOST/repository:tag``."""
    layer = python_base_layer(cache_dir)
    digest, diff_id = layer_digests(layer)
    client = Registry(registry_host, scheme="http", credentials=None)
    layer_blob = Blob(digest, layer.stat().st_size, path=layer)
    client.push_blob(repository, layer_blob)
    created = dt.datetime.fromtimestamp(EPOCH, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": [PATH_ENV], "Cmd": ["python3"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": " ".join(_mmdebstrap_command("rootfs.tar"))}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_blob = Blob("sha256:" + hashlib.sha256(config_bytes).hexdigest(), len(config_bytes), config_bytes)
    client.push_blob(repository, config_blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_blob.digest,
            "size": config_blob.size,
        },
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_blob.digest, "size": layer_blob.size}],
    }
    client.put_manifest(
        repository, tag, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), OCI_MANIFEST
    )
    return f"{registry_host}/{repository}:{tag}"


class DockerDaemon(Service):
    """A private ``dockerd`` (no iptables, no bridge: run containers with ``--network host``).

    Its socket, data and exec roots live in one short temporary folder under /tmp, removed on exit.
    Registries on 127.0.0.0/8 are insecure by default for dockerd, so ``pull 127.0.0.1:PORT/...`` works.
    """

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.root = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))  # a unix socket path has 107 chars
        self.host = f"unix://{self.root}/docker.sock"
        self.log_path = self.root / "dockerd.log"
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
            "DOCKER_CONFIG": str(self.root / "client"),
        }  # not the user's credential helpers
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start dockerd and wait until ``docker info`` answers."""
        for binary in (DOCKERD, DOCKER):
            if not os.access(binary, os.X_OK):
                raise RuntimeError(f"{binary} is missing: run `bash scripts/install-test-deps.sh` as root")
        command = [
            DOCKERD,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "-H",
            self.host,
            "--pidfile",
            str(self.root / "dockerd.pid"),
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if self.docker("info", check=False, timeout=10).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {self.timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def docker(self, *args: str, check: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
        """Run ``docker -H <host> ARGS``; output captured as text; raise with it on failure when ``check``."""
        result = subprocess.run(
            [DOCKER, "-H", self.host, *args],
            capture_output=True,
            text=True,
            env=self._env,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def wait_until_answers(self, container: str, url: str, timeout: float = 120) -> None:
        """Wait until GET ``url`` answers 200; after ``timeout`` seconds fail with ``container``'s logs."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                logs = self.docker("logs", container, check=False)
                raise AssertionError(f"the container never became ready:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM dockerd (it stops its containers and containerd), SIGKILL its group if it hangs; remove the folder."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: dockerd and its containerd
                process.wait(timeout=10)
        self._process = None
        self._unmount_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        """Unmount what dockerd leaves mounted under its folder (``exec/netns/default``), deepest first."""
        try:
            with open("/proc/self/mounts") as f:
                points = [line.split()[1].replace("\\040", " ") for line in f]
        except OSError:
            return
        ours = [p for p in points if p == str(self.root) or p.startswith(f"{self.root}/")]
        for point in sorted(ours, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
