"""Artifacts attached to an image in a registry, in sigstore/cosign's layout, so that cosign, skopeo and
podman find what notebook-deploy attaches.

Matched against cosign's specs (specs/SIGNATURE_SPEC.md, ATTESTATION_SPEC.md, SBOM_SPEC.md) and its
``pkg/oci/static`` package:

- a signature is an OCI image manifest tagged ``sha256-<hex>.sig`` in the image's repository, with one
  layer per signature: the simple-signing payload (media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``) whose descriptor carries the base64 signature in
  the annotation ``dev.cosignproject.cosign/signature``; a second signature adds a layer;
- attestations are DSSE envelopes (``application/vnd.dsse.envelope.v1+json``) of in-toto statements,
  with a ``predicateType`` annotation, under ``sha256-<hex>.att``; an SBOM is a layer of its own media
  type (``application/vnd.cyclonedx+json``) under ``sha256-<hex>.sbom``;
- each manifest's config is an OCI image config naming the layers as its ``diff_ids``, as the manifests
  go-containerregistry writes for cosign.

Attestations and SBOMs also carry a ``subject`` (the image) and an ``artifactType``: a registry with the
OCI referrers API indexes them (it answers ``OCI-Subject``) and they are found there; on one without
it (distribution 2.8) they are tagged by the scheme above. Signatures are always tagged, as cosign's
tag-based discovery (the one every verifier supports) and containers/image's
``use-sigstore-attachments`` read them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..bundle import compact_json
from ..errors import NotebookDeployError, RegistryError
from .registry import OCI_MANIFEST, Blob, Registry, run_all

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
DSSE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

Suffix = Literal["sig", "att", "sbom"]


@dataclass(frozen=True)
class Layer:
    """One attached document: its bytes, media type and descriptor annotations."""

    data: bytes
    media_type: str
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        found: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if self.annotations:
            found["annotations"] = dict(self.annotations)
        return found


def attachment_tag(digest: str, suffix: Suffix) -> str:
    """``sha256:abc…`` → ``sha256-abc….sig`` (cosign's tag-based discovery)."""
    return digest.replace(":", "-") + "." + suffix


def simple_signing_payload(image: str, digest: str, optional: dict[str, str]) -> bytes:
    """The payload a cosign signature signs: which image (``host/repository``) and manifest digest."""
    return compact_json(
        {
            "critical": {
                "identity": {"docker-reference": image},
                "image": {"docker-manifest-digest": digest},
                "type": SIGNATURE_TYPE,
            },
            "optional": optional,
        }
    )


def push_signature(registry: Registry, repository: str, digest: str, layer: Layer) -> str:
    """Add ``layer`` (a payload and its signature) to the image's ``.sig`` manifest, keeping signatures
    already there (another key's); return the tag. The same signature twice is stored once."""
    tag, body = stage_signature(registry, repository, digest, layer)
    registry.put_manifest(repository, tag, body, OCI_MANIFEST)
    return tag


def stage_signature(
    registry: Registry, repository: str, digest: str, layer: Layer, fresh: bool = False
) -> tuple[str, bytes]:
    """All of ``push_signature`` but its last step: read the signatures already there, push the layer and
    the config; return the tag and the manifest to put under it. Until that manifest is put, nothing
    names these blobs, so no one sees a signature: they may be pushed while the image's other
    attachments are, and the tag put once those are there. ``fresh`` as for ``push_attachment``."""
    tag = attachment_tag(digest, "sig")
    kept = [
        d
        for d in _existing_layers(registry, repository, tag)
        if (d.get("digest"), d.get("annotations")) != (layer.digest, layer.annotations or None)
    ]
    config, body = _manifest(kept + [layer.descriptor()])
    _push_blobs(registry, repository, [layer], config, fresh)
    return tag, body


def push_attachment(
    registry: Registry,
    repository: str,
    subject: dict[str, Any],
    suffix: Suffix,
    artifact_type: str,
    layers: list[Layer],
    fresh: bool = False,
) -> str:
    """Attach ``layers`` to the image ``subject`` (its descriptor): through the referrers API where the
    registry has it, else under the ``sha256-<hex>.SUFFIX`` tag. Returns where: ``referrers`` or the tag.
    ``fresh``: the image was not in the repository before this push, so neither are documents about it:
    their blobs are uploaded without asking first."""
    config, body = _manifest([layer.descriptor() for layer in layers], subject, artifact_type)
    _push_blobs(registry, repository, layers, config, fresh)
    if registry.put_referrer(repository, body, OCI_MANIFEST):
        return "referrers"
    tag = attachment_tag(subject["digest"], suffix)
    registry.put_manifest(repository, tag, body, OCI_MANIFEST)
    return tag


def read_attached(
    registry: Registry, repository: str, digest: str, suffix: Suffix, artifact_type: str | None = None
) -> tuple[str, list[tuple[dict[str, Any], bytes]]] | None:
    """The layers (descriptor, verified bytes) attached to ``digest`` as ``suffix``, and where they were
    found; None if nothing is attached. Signatures are read from their tag; other artifacts from the
    referrers API where the registry has it, then from the tag."""
    manifests: list[tuple[str, bytes]] = []
    if suffix != "sig" and artifact_type is not None:
        for descriptor in registry.referrers(repository, digest, artifact_type) or []:
            manifests.append(("referrers", registry.get_manifest(repository, descriptor["digest"])[0]))
    if not manifests:
        tag = attachment_tag(digest, suffix)
        try:
            manifests.append((tag, registry.get_manifest(repository, tag)[0]))
        except RegistryError as error:
            if error.code != "MANIFEST_UNKNOWN":
                raise
            return None
    where = manifests[0][0]
    layers = []
    for _, body in manifests:
        for descriptor in json.loads(body).get("layers", []):
            data = registry.get_blob(repository, descriptor["digest"])
            if "sha256:" + hashlib.sha256(data).hexdigest() != descriptor["digest"]:
                raise NotebookDeployError(
                    f"the registry returned other bytes for {descriptor['digest']} than "
                    "its digest says: the attachment is damaged"
                )
            layers.append((descriptor, data))
    return where, layers


def _existing_layers(registry: Registry, repository: str, tag: str) -> list[dict[str, Any]]:
    try:
        return list(json.loads(registry.get_manifest(repository, tag)[0]).get("layers", []))
    except RegistryError as error:
        if error.code == "MANIFEST_UNKNOWN":
            return []
        raise


def _push_blobs(registry: Registry, repository: str, layers: list[Layer], config: bytes, fresh: bool) -> None:
    """Push the layers and the config of one attachment, at once (before its manifest is put); if
    ``fresh``, without asking whether each is there."""
    blobs = [Blob(layer.digest, len(layer.data), layer.data) for layer in layers]
    blobs.append(Blob("sha256:" + hashlib.sha256(config).hexdigest(), len(config), config))
    run_all([(b.digest, functools.partial(registry.push_blob, repository, b, check=not fresh)) for b in blobs])


def _manifest(
    layers: list[dict[str, Any]],
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
) -> tuple[bytes, bytes]:
    """The config and the OCI image manifest over ``layers``, the config naming them as diff_ids."""
    config = compact_json(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            "size": len(config),
        },
        "layers": layers,
    }
    if artifact_type:
        manifest["artifactType"] = artifact_type
    if subject:
        manifest["subject"] = subject
    return config, compact_json(manifest)


def b64(data: bytes) -> str:
    """Standard base64 text, as cosign's annotations and DSSE envelopes hold it."""
    return base64.b64encode(data).decode()
