"""Build the image that serves a bundle and push it to a registry, without a Docker daemon."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import audit, display
from ..api import load
from ..bundle import Bundle
from ..errors import ImageAttachError, NotebookDeployError
from ..signing import SigningKey, default_signing_key
from ..store import Store
from . import BACKENDS
from .assemble import Image, push_image, resolve_base
from .build import build, dependency_packages
from .cache import LAYER_CACHE_VARIABLE, LayerCache
from .docker_backend import docker_client, load_image, push_from_daemon
from .outputs import write_image_tar, write_oci_layout
from .reference import ImageReference
from .registry import Registry, registry_for
from .trust import Attached, attach

Progress = Callable[[str, int, int], None]  # (blob digest, bytes done, bytes in all)


@dataclass
class PushResult:
    """What a push did: the image pushed, its digest, and what happened to each blob."""

    image: str
    digest: str
    blobs: dict[str, str] = field(default_factory=dict)  # digest -> exists | mounted | uploaded
    sizes: dict[str, int] = field(default_factory=dict)
    backend: str = "daemonless"
    attached: Attached | None = None  # the SBOM, provenance and signature attached in the registry
    layers: list[tuple[str, str]] = field(default_factory=list)  # (what it holds, digest) of each layer added

    def layer_lines(self) -> list[str]:
        """A line per layer the image adds to its base: what it holds, its size, what the push did with it."""
        width = max((len(name) for name, _ in self.layers), default=0)
        return [
            f"  {'layers' if i == 0 else '':<10}{name:<{width}}  {display.human_size(self.sizes[digest]):>10}"
            + (f"  {self.blobs[digest]}" if digest in self.blobs else "")
            for i, (name, digest) in enumerate(self.layers)
        ]

    @property
    def uploaded_bytes(self) -> int:
        return sum(self.sizes[d] for d, what in self.blobs.items() if what == "uploaded")

    def __str__(self) -> str:
        counts = {what: sum(1 for v in self.blobs.values() if v == what) for what in ("uploaded", "mounted", "exists")}
        if self.backend == "docker":
            lines = [f"Pushed {self.image}@{self.digest}", "  through   the Docker daemon"]
        else:
            lines = [
                f"Pushed {self.image}@{self.digest}",
                "  blobs     " + ", ".join(f"{n} {what}" for what, n in counts.items() if n),
                f"  uploaded  {display.human_size(self.uploaded_bytes)}",
            ]
        return "\n".join(lines + self.layer_lines() + (self.attached.lines() if self.attached else []))


def default_base(bundle: Bundle) -> str:
    """``python:3.X-slim`` for the bundle's Python minor version."""
    return f"python:{bundle.python_minor}-slim"


def push(
    ref: str | Bundle,
    image: str,
    *,
    base: str | None = None,
    platform: str = "linux/amd64",
    backend: str = "auto",
    store: Store | str | os.PathLike[str] | None = None,
    progress: Progress | bool | None = None,
    sign: bool | None = None,
) -> PushResult:
    """Build the image that serves bundle ``ref`` on ``base`` (default ``python:3.X-slim``) and push it
    to ``image`` (``registry/repository:tag``). Credentials come from the Docker config or the
    environment. ``backend``: ``"daemonless"`` pushes with the registry API (blobs already there are not
    sent again); ``"docker"`` loads the same image into a Docker daemon and pushes it from there;
    ``"auto"`` takes the daemon when one answers. ``progress``: a callback ``(digest, done, total)``,
    or ``True`` for a byte bar per layer (tqdm in terminals, widgets in notebooks). Every push attaches
    the image's SBOM and provenance; ``sign`` signs it (cosign format) with the signing key: None signs
    when a key exists, True requires one, False does not sign."""
    if progress is True:
        bars = display.ByteBars()
        try:
            return push(
                ref, image, base=base, platform=platform, backend=backend, store=store, progress=bars, sign=sign
            )
        finally:
            bars.close()
    try:
        result = _push(ref, image, base, platform, backend, store, progress or None, sign)  # True was taken above
    except BaseException as error:
        audit.record(
            "push", root=store, reference=image, result="failed", error=f"{type(error).__name__}: {error}"[:500]
        )
        raise
    audit.record(
        "push",
        root=store,
        reference=result.image,
        digest=result.digest,
        result="ok",
        backend=result.backend,
        signed_by=result.attached.key_id if result.attached else None,
    )
    return result


def _push(
    ref: str | Bundle,
    image: str,
    base: str | None,
    platform: str,
    backend: str,
    store: Store | str | os.PathLike[str] | None,
    progress: Progress | None,
    sign: bool | None,
) -> PushResult:
    client = _daemon(backend)
    target = ImageReference.parse(image)
    # not getattr(store, "root", store): a pathlib.Path store has a .root too, "/"
    key = _signing_key(sign, store.root if isinstance(store, Store) else store)
    bundle = load(ref, store)
    registry = registry_for(target)
    with _building(bundle, base, platform, store) as (built, base_registry, fetch, work):
        sizes = {d["digest"]: d["size"] for d in built.base.layers} | {
            layer.digest: layer.size for layer in built.layers
        }
        sizes[built.config_digest] = len(built.config)
        if client is not None:
            load_image(client, write_image_tar(built, work / "image.tar", str(target), fetch))
            result = PushResult(str(target), push_from_daemon(client, target, progress), {}, sizes, "docker")
            manifest, media_type = registry.get_manifest(target.repository, result.digest)  # the daemon's own
        else:
            blobs = push_image(registry, built, target, progress, base_registry)
            result = PushResult(str(target), built.digest, blobs, sizes)
            manifest, media_type = built.manifest, built.media_type
        history = [entry["created_by"] for entry in json.loads(built.config)["history"]]
        result.layers = list(zip(history[-len(built.layers) :], [layer.digest for layer in built.layers]))
        subject = {"mediaType": media_type, "digest": result.digest, "size": len(manifest)}
        # a blob of the image was missing from the repository, so the image was not there (a registry
        # refuses a manifest whose blobs it lacks), nor anything attached to it
        fresh = "uploaded" in result.blobs.values()
        try:
            result.attached = attach(
                registry, target, subject, bundle, dependency_packages(work), built.base, platform, key, fresh
            )
        except Exception as error:
            raise ImageAttachError(
                f"Pushed {target}@{result.digest}, but attaching its SBOM, provenance and signature failed: {error}. "
                "The image is in the registry without its signature, so `notebook-deploy verify-image` refuses it; "
                "push again to finish (blobs already there are not sent twice)"
            ) from error
    return result


def _signing_key(sign: bool | None, root: str | os.PathLike[str] | None) -> SigningKey | None:
    """The key pushes sign with: the store's default signing key, unless ``sign`` is False; required if True."""
    if sign is False:
        return None
    key = default_signing_key(root)
    if key is None and sign:
        raise NotebookDeployError(
            "no signing key to sign the image with: create one with "
            "`notebook-deploy signing-key create`, or push with --no-sign"
        )
    return key


def export_image(
    ref: str | Bundle,
    output: str | os.PathLike[str],
    *,
    name: str,
    base: str | None = None,
    platform: str = "linux/amd64",
    layout: bool = False,
    store: Store | str | os.PathLike[str] | None = None,
) -> Path:
    """Build the image and write it to ``output``: a tar for ``docker load`` and OCI tools, or with
    ``layout`` an OCI layout directory. ``name`` is the ``repository:tag`` it is loaded as."""
    with _building(load(ref, store), base, platform, store) as (built, _, fetch, _work):
        write = write_oci_layout if layout else write_image_tar
        return write(built, Path(output), name, fetch)


def build_image(
    ref: str | Bundle,
    image: str,
    *,
    base: str | None = None,
    platform: str = "linux/amd64",
    backend: str = "auto",
    output: str | os.PathLike[str] | None = None,
    layout: bool = False,
    store: Store | str | os.PathLike[str] | None = None,
) -> str:
    """Build the image that serves ``ref`` without pushing it. With a Docker daemon (``backend`` docker,
    or auto when one answers) it is loaded into the daemon as ``image`` and its name is returned;
    otherwise it is written to ``output`` (a tar for ``docker load``, or an OCI layout folder with
    ``layout``; default ``NAME-VERSION.tar``) and that path is returned."""
    client = _daemon(backend)
    bundle = load(ref, store)
    if client is None:
        destination = Path(output or f"{bundle.name}-{bundle.version}.tar")
        return str(export_image(bundle, destination, name=image, base=base, platform=platform, layout=layout))
    with _building(bundle, base, platform, store) as (built, _, fetch, work):
        load_image(client, write_image_tar(built, work / "image.tar", image, fetch))
    return image


def _daemon(backend: str) -> Any:
    """The Docker client the backend calls for: None for daemonless, or auto with no daemon answering."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    client = docker_client() if backend != "daemonless" else None
    if backend == "docker" and client is None:
        if importlib.util.find_spec("docker") is None:
            raise NotebookDeployError(
                "backend='docker' needs the Docker SDK for Python, which is not installed: "
                "pip install 'notebook-deploy[docker]' (or pip install docker), or use backend='daemonless'"
            )
        raise NotebookDeployError(
            "no Docker daemon answers (DOCKER_HOST or /var/run/docker.sock): use backend='daemonless'"
        )
    return client


def layer_cache(store: Store | str | os.PathLike[str] | None = None) -> LayerCache:
    """The layer cache of a store (``ROOT/cache/layers``), which every build from it shares; or, when
    ``$NOTEBOOK_DEPLOY_LAYER_CACHE`` names a folder, that one, shared by every store (a CI job's stores,
    a team's machines): entries are keyed by what determines them, so one store's layer is right for any."""
    shared = os.environ.get(LAYER_CACHE_VARIABLE)
    if shared:
        return LayerCache(Path(shared))
    return LayerCache((store if isinstance(store, Store) else Store(store)).root / "cache" / "layers")


@contextmanager
def _building(
    bundle: Bundle, base: str | None, platform: str, store: Store | str | os.PathLike[str] | None
) -> Iterator[tuple[Image, Registry, Callable[[str], bytes], Path]]:
    """Build the bundle's image on ``base`` in a scratch folder, with the layers kept in the store's layer
    cache; yield it, the base's registry, a reader of the base's blobs, and the folder (removed afterwards)."""
    base_ref = ImageReference.parse(base or default_base(bundle))
    base_registry = registry_for(base_ref)
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-build-") as scratch:
        work = Path(scratch)
        built = build(bundle, resolve_base(base_registry, base_ref, platform), work, platform, layer_cache(store))
        yield built, base_registry, lambda digest: base_registry.get_blob(base_ref.repository, digest), work
