"""Trust in a pushed image: what ``push`` attaches to it (an SBOM, the in-toto provenance, a cosign
signature) and what ``verify-image`` checks.

Push attaches 1 and 2 at once, then 3, so that a signature is only ever there once the rest is:
1. the CycloneDX SBOM of the image's Python packages (``sbom``);
2. the provenance: an in-toto statement with a SLSA v1 predicate whose subject is the image's manifest
   digest and which names the bundle's digest (and the base image's), plus the SBOM's digest as a
   byproduct, so the SBOM is covered by the signed statement; as a DSSE envelope signed by the key;
3. the signature: the simple-signing payload naming the manifest digest, signed (Ed25519) by the key.

Verification trusts nothing it reads until the signature checks out against a trusted key (or one
given), then requires the payload, the statement's subject and the SBOM to agree with the image's
digest and with each other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bundle import compact_json
from ..errors import ImageVerificationError, NotebookDeployError, RegistryError
from ..provenance import signed_statement
from ..provenance import statement as bundle_statement
from ..signing import TrustedKey, TrustStore, envelope, envelope_signers, key_id, verify_signature
from ..version import __version__
from . import sbom
from .attachments import (
    DSSE,
    IN_TOTO,
    SIGNATURE_ANNOTATION,
    SIGNATURE_TYPE,
    SIMPLE_SIGNING,
    Layer,
    b64,
    push_attachment,
    read_attached,
    simple_signing_payload,
    stage_signature,
)
from .reference import ImageReference
from .registry import OCI_MANIFEST, Registry, registry_for, run_all

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..signing import SigningKey
    from .assemble import BaseImage

STATEMENT = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://notebook-deploy.dev/image-build/v1"  # names this project's build; not fetched
BUILDER = f"notebook-deploy/{__version__}"
KEY_ID_ANNOTATION = "io.notebook-deploy.key-id"


@dataclass
class Attached:
    """What a push attached to an image, and where (a tag, or the referrers API)."""

    sbom: str = ""
    provenance: str = ""
    signature: str = ""
    packages: int = 0
    key_id: str | None = None

    def lines(self) -> list[str]:
        """The lines of the push summary."""
        signed = f"signed by key {self.key_id}" if self.key_id else "unsigned: no signing key"
        return [
            f"  {'sbom':<11}{self.packages} Python packages (CycloneDX) at {self.sbom}",
            f"  {'provenance':<11}in-toto SLSA statement ({signed}) at {self.provenance}",
            f"  {'signature':<11}"
            + (
                f"cosign, key {self.key_id}, at {self.signature}"
                if self.signature
                else "none: create a key with `notebook-deploy signing-key create`"
            ),
        ]


@dataclass
class ImageVerification:
    """A verified image: who signed it, which bundle it serves, what its SBOM lists."""

    image: str
    digest: str
    key_id: str
    bundle_digest: str
    bundle: str
    packages: int
    found: dict[str, str] = field(default_factory=dict)  # sig/att/sbom -> where it was found

    def __str__(self) -> str:
        return (
            f"Verified {self.image}@{self.digest}\n"
            f"  signature  cosign simple-signing, key {self.key_id} ({self.found.get('sig')})\n"
            f"  provenance bundle {self.bundle} {self.bundle_digest} ({self.found.get('att')})\n"
            f"  sbom       {self.packages} Python packages, valid CycloneDX ({self.found.get('sbom')})"
        )


def image_provenance(
    bundle: Bundle, image: str, digest: str, base: BaseImage, platform: str, sbom_layer: Layer
) -> dict[str, Any]:
    """The in-toto statement (SLSA v1 provenance) of the image ``image`` (``host/repository``) with
    manifest ``digest``, built from ``bundle`` on ``base``."""
    dependencies = [
        {
            "name": "bundle",
            "uri": f"notebook-deploy:bundle/{bundle.ref}",
            "digest": {"sha256": _hex(bundle.digest)},
        }
    ]
    if base.digest:
        dependencies.append({"name": "base", "uri": f"oci://{base.reference}", "digest": {"sha256": _hex(base.digest)}})
    # what made the bundle (notebook, recipe, data files, lock), as the bundle's own statement names it
    dependencies += bundle_statement(bundle)["predicate"]["buildDefinition"]["resolvedDependencies"]
    return {
        "_type": STATEMENT,
        "subject": [{"name": image, "digest": {"sha256": _hex(digest)}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "bundle": bundle.ref,
                    "bundleDigest": bundle.digest,
                    "base": str(base.reference),
                    "platform": platform,
                },
                "internalParameters": {"python": bundle.python_version},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER},
                "metadata": {"invocationId": f"{image}@{digest}"},
                "byproducts": [
                    {"name": "sbom", "mediaType": sbom.MEDIA_TYPE, "digest": {"sha256": _hex(sbom_layer.digest)}}
                ],
            },
        },
    }


def attach(
    registry: Registry,
    target: ImageReference,
    subject: dict[str, Any],
    bundle: Bundle,
    packages: list[tuple[str, str]],
    base: BaseImage,
    platform: str,
    key: SigningKey | None,
    fresh: bool = False,
) -> Attached:
    """Attach the SBOM, the provenance and (with ``key``) the signature to the pushed image whose
    manifest descriptor is ``subject``. The SBOM and the provenance are pushed at once (with the
    signature's blobs beside them), the signature's tag only after both are there. Raises if any step
    fails; nothing is signed before the rest is there. ``fresh``: the image was not in the repository
    before this push (a blob of it was uploaded), so the attachments' blobs are not there either and
    are uploaded without asking first."""
    image = f"{target.registry}/{target.repository}"
    digest = subject["digest"]
    done = Attached(key_id=key.key_id if key else None)
    document = sbom.image_sbom(packages, image, digest, bundle.created)
    sbom_layer = Layer(document, sbom.MEDIA_TYPE)
    done.packages = len(json.loads(document)["components"])
    statement = compact_json(image_provenance(bundle, image, digest, base, platform, sbom_layer))
    wrapped = (
        envelope(IN_TOTO, statement, key)
        if key
        else {"payloadType": IN_TOTO, "payload": b64(statement), "signatures": []}
    )
    layers = [Layer(compact_json(wrapped), DSSE, {"predicateType": SLSA_PROVENANCE})]
    signed_bundle = signed_statement(bundle)  # the bundle's own statement, signed at capture: attached as it is
    if signed_bundle is not None:
        layers.append(Layer(compact_json(signed_bundle), DSSE, {"predicateType": SLSA_PROVENANCE}))
    jobs: list[tuple[str, Callable[[], Any]]] = [
        (
            "sbom",
            partial(
                push_attachment, registry, target.repository, subject, "sbom", sbom.MEDIA_TYPE, [sbom_layer], fresh
            ),
        ),
        ("att", partial(push_attachment, registry, target.repository, subject, "att", IN_TOTO, layers, fresh)),
    ]
    if key is not None:  # its blobs go up beside the rest; its tag, which makes it a signature, only after
        payload = simple_signing_payload(image, digest, {KEY_ID_ANNOTATION: key.key_id})
        signature = Layer(payload, SIMPLE_SIGNING, {SIGNATURE_ANNOTATION: b64(key.sign(payload))})
        jobs.append(("sig", partial(stage_signature, registry, target.repository, digest, signature, fresh)))
    done_jobs = run_all(jobs)  # raises if any failed, and then no signature is put
    done.sbom, done.provenance = done_jobs["sbom"], done_jobs["att"]
    if key is not None:
        tag, body = done_jobs["sig"]
        registry.put_manifest(target.repository, tag, body, OCI_MANIFEST)
        done.signature = tag
    return done


def verify_image(
    image: str,
    key: str | os.PathLike[str] | None = None,
    trust: TrustStore | None = None,
    registry: Registry | None = None,
) -> ImageVerification:
    """Check ``image``'s cosign signature against the trust store (or only the public key file
    ``key``), that it names the image's manifest digest, that its provenance is signed by the same key,
    names that digest and a bundle digest equal to the image's label, and that its SBOM is the one the
    provenance names and valid CycloneDX. Raises ``ImageVerificationError`` naming what failed."""
    reference = ImageReference.parse(image)
    registry = registry or registry_for(reference)
    name = f"{reference.registry}/{reference.repository}"
    digest = _digest_of(registry, reference)
    keys = _GivenKey(Path(key)) if key is not None else trust or TrustStore()
    if not keys.list():
        raise ImageVerificationError(
            "no trusted key to verify with: add the signer's public key with "
            "`notebook-deploy trust add PUBLIC_KEY_FILE`, or pass --key PUB"
        )
    shown = f"{name}@{digest}"
    signed = read_attached(registry, reference.repository, digest, "sig")
    if signed is None:
        raise ImageVerificationError(
            f"{shown} is unsigned: no signature exists at {name}:{digest.replace(':', '-')}.sig. Push it with a "
            "signing key (`notebook-deploy signing-key create`, then `notebook-deploy push`)"
        )
    found = {"sig": signed[0]}
    signer_id = None
    other_digests = []
    for descriptor, payload in signed[1]:
        if descriptor.get("mediaType") != SIMPLE_SIGNING:
            continue
        signature = _b64decode(descriptor.get("annotations", {}).get(SIGNATURE_ANNOTATION, ""))
        signer = next(
            (k.key_id for k in keys.list() if signature and verify_signature(k.public_pem, payload, signature)), None
        )
        if signer is None:
            continue
        critical = _json(payload, "signature payload").get("critical", {})
        named = critical.get("image", {}).get("docker-manifest-digest")
        if critical.get("type") != SIGNATURE_TYPE or named != digest:
            other_digests.append(str(named))
            continue
        signer_id = signer
        break
    if signer_id is None:
        if other_digests:
            raise ImageVerificationError(
                f"{shown}: its signature is for another image ({', '.join(other_digests)}), not this manifest "
                "digest: the tag was moved to an image that was not signed, or a signature was copied"
            )
        raise ImageVerificationError(
            f"{shown}: no signature at {found['sig']} verifies with a trusted key "
            f"({', '.join(k.key_id for k in keys.list())}). Trust the signer's public key with "
            "`notebook-deploy trust add PUBLIC_KEY_FILE`, or pass it with --key"
        )

    attested = read_attached(registry, reference.repository, digest, "att", IN_TOTO)
    if attested is None:
        raise ImageVerificationError(f"{shown} is signed but has no provenance attached (sha256-….att or referrers)")
    found["att"] = attested[0]
    statement = _signed_statement(attested[1], keys, signer_id, _hex(digest), shown)
    build = statement.get("predicate", {}).get("buildDefinition", {})
    bundle_digest = build.get("externalParameters", {}).get("bundleDigest", "")
    labelled = _labels(registry, reference.repository, digest).get("io.notebook-deploy.digest")
    if (
        not bundle_digest
        or labelled != bundle_digest
        or not any(
            d.get("digest", {}).get("sha256") == _hex(bundle_digest) for d in build.get("resolvedDependencies", [])
        )
    ):
        raise ImageVerificationError(
            f"{shown}: the provenance names bundle digest {bundle_digest or 'none'}, "
            f"but the image is labelled {labelled}"
        )

    listed = read_attached(registry, reference.repository, digest, "sbom", sbom.MEDIA_TYPE)
    if listed is None:
        raise ImageVerificationError(f"{shown} has no SBOM attached (sha256-….sbom or referrers)")
    found["sbom"] = listed[0]
    expected = {
        b.get("digest", {}).get("sha256")
        for b in statement["predicate"].get("runDetails", {}).get("byproducts", [])
        if b.get("name") == "sbom"
    }
    documents = [data for descriptor, data in listed[1] if descriptor["digest"].split(":")[1] in expected]
    if not documents:
        raise ImageVerificationError(f"{shown}: the attached SBOM is not the one its signed provenance names")
    try:
        parsed = sbom.check_sbom(documents[0])
    except NotebookDeployError as error:
        raise ImageVerificationError(f"{shown}: {error}") from None
    return ImageVerification(
        name,
        digest,
        signer_id,
        bundle_digest,
        str(build.get("externalParameters", {}).get("bundle", "")),
        len(parsed.get("components", [])),
        found,
    )


class _GivenKey:
    """One public key file given to verify with, in place of the trust store (what envelope_signers asks)."""

    def __init__(self, path: Path) -> None:
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise ImageVerificationError(f"cannot read the public key {path}: {error}") from None
        self.key = TrustedKey(key_id(pem), str(path), pem, path)

    def list(self) -> list[TrustedKey]:
        return [self.key]

    def find(self, identifier: str) -> TrustedKey | None:
        return self.key if identifier == self.key.key_id else None


def _signed_statement(
    layers: list[tuple[dict[str, Any], bytes]], keys: Any, signer: str, digest_hex: str, shown: str
) -> dict[str, Any]:
    """The statement about the image (``digest_hex`` among its subjects) in a DSSE envelope that the
    image's signer signed. (The bundle's own statement, attached beside it, is about the bundle.)"""
    about: list[str] = []
    for descriptor, data in layers:
        if descriptor.get("mediaType") != DSSE:
            continue
        wrapped = _json(data, "provenance envelope")
        statement = _json(_b64decode(wrapped.get("payload", "")), "provenance statement")
        digests = [s.get("digest", {}).get("sha256") for s in statement.get("subject", []) if isinstance(s, dict)]
        if digest_hex not in digests:
            about += [str(d) for d in digests]
        elif signer in envelope_signers(wrapped, keys)[0]:
            return statement
    raise ImageVerificationError(
        f"{shown}: no provenance statement about this image is signed by the key that signed it ({signer})"
        + (f"; the attached statements are about sha256:{', sha256:'.join(about)}" if about else "")
    )


def _digest_of(registry: Registry, reference: ImageReference) -> str:
    try:
        body, _ = registry.get_manifest(reference.repository, reference.reference)
    except RegistryError as error:
        raise ImageVerificationError(f"cannot read {reference}: {error}") from None
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if reference.digest and reference.digest != digest:
        raise ImageVerificationError(f"the registry returned a manifest of digest {digest} for {reference}")
    return digest


def _labels(registry: Registry, repository: str, digest: str) -> dict[str, str]:
    manifest = json.loads(registry.get_manifest(repository, digest)[0])
    data = registry.get_blob(repository, manifest["config"]["digest"])
    if "sha256:" + hashlib.sha256(data).hexdigest() != manifest["config"]["digest"]:
        raise ImageVerificationError(f"the registry returned another config than {manifest['config']['digest']}")
    config = json.loads(data)
    return config.get("config", {}).get("Labels") or {}


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise ImageVerificationError(f"the {what} is not JSON") from None
    if not isinstance(parsed, dict):
        raise ImageVerificationError(f"the {what} is not a JSON object")
    return parsed


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]
