"""Assemble an image as data: a base image (resolved from its registry) plus layers appended on top,
a new config and manifest, pushed blob by blob. No daemon is involved.

The new image follows the base's media-type family (OCI or Docker v2), keeps the base's history and
adds one history entry per appended layer, and writes the config and manifest canonically, so the same
base and layers always give the same image digest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..bundle import compact_json
from ..errors import NotebookDeployError
from .layers import DOCKER_LAYER, OCI_LAYER, Layer
from .reference import ImageReference
from .registry import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Blob, Progress, Registry, run_all

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"


@dataclass(frozen=True)
class BaseImage:
    """A resolved base: where it lives, its manifest's layer descriptors and its config."""

    reference: ImageReference
    media_type: str  # of its manifest: OCI or Docker v2
    layers: list[dict[str, Any]]
    config: dict[str, Any]
    digest: str = ""  # of its (platform's) manifest, named in the provenance of images built on it


@dataclass
class ImageSpec:
    """What the new image adds to the base."""

    layers: list[Layer]
    history: list[str]  # one line per appended layer, shown by `docker history`
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    working_dir: str | None = None
    exposed_ports: list[int] = field(default_factory=list)
    healthcheck: list[str] | None = None  # the command, as in a Dockerfile HEALTHCHECK CMD


@dataclass(frozen=True)
class Image:
    """A built image: its config and manifest bytes and what they reference."""

    base: BaseImage
    layers: list[Layer]
    config: bytes
    manifest: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def resolve_base(registry: Registry, reference: ImageReference, platform: str = "linux/amd64") -> BaseImage:
    """Read the base image's manifest (choosing ``platform`` from an index) and its config."""
    body, media_type = registry.get_manifest(reference.repository, reference.reference)
    document = json.loads(body)
    if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in document:
        chosen = _choose_platform(document.get("manifests", []), platform)
        if chosen is None:
            offered = sorted({_platform_of(m) for m in document.get("manifests", [])} - {"unknown/unknown"})
            raise NotebookDeployError(f"{reference} has no image for {platform}; it offers {', '.join(offered)}")
        body, media_type = registry.get_manifest(reference.repository, chosen["digest"])
        document = json.loads(body)
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise NotebookDeployError(f"{reference} is a {media_type or 'manifest of unknown type'}, not an image manifest")
    config = json.loads(registry.get_blob(reference.repository, document["config"]["digest"]))
    return BaseImage(
        reference, media_type, list(document["layers"]), config, "sha256:" + hashlib.sha256(body).hexdigest()
    )


def config_env(config: dict[str, Any]) -> dict[str, str]:
    """The environment an image config sets. A missing or null ``Env`` (``docker import`` and some minimal
    bases write ``"Env": null``) is an empty one."""
    settings = config.get("config") or {}
    return dict(entry.split("=", 1) for entry in settings.get("Env") or [] if "=" in entry)


def assemble(base: BaseImage, spec: ImageSpec) -> Image:
    """The new image's config and manifest: the base's, with ``spec``'s layers and settings on top."""
    docker = base.media_type == DOCKER_MANIFEST
    config = json.loads(json.dumps(base.config))  # a deep copy
    settings = config["config"] = config.get("config") or {}  # null in some bases, as Env may be
    if spec.env:
        settings["Env"] = [f"{k}={v}" for k, v in {**config_env(base.config), **spec.env}.items()]
    if spec.entrypoint is not None:  # as in a Dockerfile, a new ENTRYPOINT drops the base's CMD
        settings["Entrypoint"] = spec.entrypoint
        settings.pop("Cmd", None)
    for key, value in (("Cmd", spec.cmd), ("User", spec.user), ("WorkingDir", spec.working_dir)):
        if value is not None:
            settings[key] = value
    if spec.labels:
        settings["Labels"] = {**(settings.get("Labels") or {}), **spec.labels}
    if spec.exposed_ports:
        settings["ExposedPorts"] = {
            **(settings.get("ExposedPorts") or {}),
            **{f"{p}/tcp": {} for p in spec.exposed_ports},
        }
    if spec.healthcheck:
        settings["Healthcheck"] = {
            "Test": ["CMD", *spec.healthcheck],
            "Interval": 10_000_000_000,
            "Timeout": 5_000_000_000,
            "Retries": 3,
        }
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"] += [
        layer.diff_id for layer in spec.layers
    ]
    config["history"] = list(config.get("history") or []) + [
        {"created_by": line, "comment": "notebook-deploy"} for line in spec.history
    ]
    config.pop("created", None)  # a build time would make every build a new image
    config_bytes = compact_json(config)
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            "size": len(config_bytes),
        },
        "layers": base.layers
        + [{"mediaType": layer_type, "digest": layer.digest, "size": layer.size} for layer in spec.layers],
    }
    if not docker and spec.labels:
        manifest["annotations"] = dict(spec.labels)
    return Image(base, spec.layers, config_bytes, compact_json(manifest), media_type)


def push_image(
    registry: Registry,
    image: Image,
    target: ImageReference,
    progress: Callable[[str, int, int], None] | None = None,
    base_registry: Registry | None = None,
) -> dict[str, str]:
    """Push ``image`` to ``target``: the base's layers (mounted from the base's repository when it is on
    the same registry, else copied from ``base_registry``), the new layers and the config, several at a
    time, then, once every one of them is there, the manifest under the tag. Returns what happened to
    each blob: exists, mounted or uploaded. If any blob fails, the manifest is not put (so no tag names
    an image with blobs missing) and the first error is raised once the blobs under way have ended."""
    same = image.base.reference.registry == target.registry
    source = registry if same else base_registry
    if source is None:
        raise NotebookDeployError(f"the base {image.base.reference} is on another registry: pass base_registry=")
    base_repository = image.base.reference.repository
    reported = _serialised(progress)
    jobs: list[tuple[str, Callable[[], str]]] = []
    for base_layer in image.base.layers:  # read from the base's registry only if it must be uploaded
        blob = Blob(
            base_layer["digest"],
            base_layer["size"],
            fetch=functools.partial(source.get_blob, base_repository, base_layer["digest"]),
        )
        jobs.append(
            (
                blob.digest,
                functools.partial(
                    registry.push_blob,
                    target.repository,
                    blob,
                    mount_from=base_repository if same else None,
                    progress=_named(reported, blob.digest),
                ),
            )
        )
    for layer in image.layers:
        blob = Blob(layer.digest, layer.size, path=layer.path)
        jobs.append(
            (
                blob.digest,
                functools.partial(registry.push_blob, target.repository, blob, progress=_named(reported, blob.digest)),
            )
        )
    config = Blob(image.config_digest, len(image.config), image.config)
    jobs.append((config.digest, functools.partial(registry.push_blob, target.repository, config)))
    outcome = run_all(jobs)
    registry.put_manifest(target.repository, target.tag or "latest", image.manifest, image.media_type)
    return outcome


def _choose_platform(manifests: list[dict[str, Any]], platform: str) -> dict[str, Any] | None:
    wanted = platform.split("/")
    for descriptor in manifests:
        found = _platform_of(descriptor).split("/")
        if found[:2] == wanted[:2] and (len(wanted) < 3 or found[2:3] == wanted[2:3]):
            return descriptor
    return None


def _platform_of(descriptor: dict[str, Any]) -> str:
    platform = descriptor.get("platform", {})
    text = f"{platform.get('os', 'unknown')}/{platform.get('architecture', 'unknown')}"
    return text + (f"/{platform['variant']}" if platform.get("variant") else "")


def _serialised(progress: Callable[[str, int, int], None] | None) -> Callable[[str, int, int], None] | None:
    """``progress``, called by one thread at a time: blobs are pushed on several, and a progress display
    (tqdm, widgets) need not be thread-safe."""
    if progress is None:
        return None
    lock = threading.Lock()

    def report(digest: str, done: int, total: int) -> None:
        with lock:
            progress(digest, done, total)

    return report


def _named(progress: Callable[[str, int, int], None] | None, digest: str) -> Progress | None:
    if progress is None:
        return None
    return lambda done, total: progress(digest, done, total)
