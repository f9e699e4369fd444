"""A bundle's signed provenance: an in-toto statement (SLSA provenance v1) in a DSSE envelope, beside
the sealed files, and the check that a trusted key signed it before the model is unpickled.

The statement's subject is the bundle: its ``name:version`` and the manifest digest (``digest`` in
bundle.json, which covers the hash of every file). Its predicate names what made it: the notebook (its
path, and the sha256 of the recipe that rebuilds the model), the data files the recipe read (their
sha256 when first read), the lock (requirements.txt's sha256, and each pinned package as a purl), the
Python and notebook-deploy versions. It is derived from the manifest alone, so anyone can rebuild it.

The envelope is ``provenance.dsse.json`` in the bundle folder (and in its archive). It cannot be one of
the sealed files, since the version id and digest it names are computed from those; ``seal_manifest`` and
``check_integrity`` leave it out, and the signature is what protects it. Because the signed statement
names the manifest digest, a signature copied from another bundle does not verify for this one. More
signers (a reviewer approving a colleague's model: ``notebook-deploy sign``) add signatures to the
same envelope.

Policy: loading a bundle from elsewhere (``import``, ``serve``, the replicas of a deployment) needs a
signature by a key in the trust store, unless ``allow_unsigned`` is given, which is written to the
audit log. The first capture makes the user's signing key and trusts it, so one's own bundles pass with
no extra step (see docs/security.md).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from . import audit
from .bundle import LOCK_FILE, RECIPE_FILE, SIGNATURE_FILE, Bundle, compact_json
from .errors import UntrustedBundleError
from .files import replace_file
from .signing import (
    SigningError,
    SigningKey,
    TrustStore,
    add_signature,
    default_signing_key,
    dumps,
    envelope,
    envelope_payload,
    envelope_signers,
)

log = logging.getLogger("notebook_deploy.provenance")

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/notebook-deploy/notebook-deploy/capture/v1"
BUILDER_ID = "https://github.com/notebook-deploy/notebook-deploy"


def statement(bundle: Bundle) -> dict[str, Any]:
    """The bundle's in-toto Statement v1 with an SLSA provenance v1 predicate, derived from its manifest."""
    manifest = bundle.manifest
    files = manifest["files"]
    recipe = bundle.recipe_summary or {}
    source = bundle.source
    dependencies: list[dict[str, Any]] = []
    if RECIPE_FILE in files:
        dependencies.append(
            {
                "name": RECIPE_FILE,
                "uri": _notebook_uri(source),
                "digest": _digest(files[RECIPE_FILE]),
                "annotations": {
                    "kind": "recipe",
                    "target": recipe.get("target"),
                    "executions": recipe.get("executions"),
                },
            }
        )
    for data in recipe.get("files") or []:
        entry: dict[str, Any] = {
            "name": data["path"],
            "annotations": {"kind": "data", "size": data.get("size"), "included": bool(data.get("included"))},
        }
        if data.get("sha256"):
            entry["digest"] = {"sha256": data["sha256"]}
        dependencies.append(entry)
    dependencies.append({"name": LOCK_FILE, "digest": _digest(files[LOCK_FILE]), "annotations": {"kind": "lock"}})
    dependencies += [{"uri": _purl(line), "annotations": {"kind": "package"}} for line in bundle.lock() if "==" in line]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": bundle.ref, "digest": _digest(bundle.digest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "notebook": {"kind": source.get("kind"), "path": _notebook_path(source)},
                    "name": bundle.name,
                    "target": recipe.get("target"),
                    "methods": bundle.methods,
                },
                "internalParameters": {"python": manifest["python"], "serialization": manifest.get("serialization")},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"notebook-deploy": (manifest.get("runtime") or {}).get("notebook-deploy")},
                },
                "metadata": {"invocationId": bundle.ref, "startedOn": bundle.created, "finishedOn": bundle.created},
            },
        },
    }


def _digest(value: str) -> dict[str, str]:
    algorithm, _, hexdigest = value.partition(":")
    return {algorithm: hexdigest}


def _notebook_path(source: dict[str, Any]) -> str | None:
    """The notebook or script a capture came from: ``path`` (a saved notebook, a script) or ``notebook``
    (a live kernel's session, as Jupyter names it)."""
    return source.get("path") or source.get("notebook")


def _notebook_uri(source: dict[str, Any]) -> str | None:
    path = _notebook_path(source)
    return f"file:{path}" if path else None


def _purl(line: str) -> str:
    name, _, version = line.partition("==")
    return f"pkg:pypi/{name.strip().lower().replace('_', '-')}@{version.strip()}"


def signed_statement(bundle: Bundle) -> dict[str, Any] | None:
    """The bundle's DSSE envelope (``provenance.dsse.json``) as stored, or None if it has none. This is
    what is attached to images: the statement in it names the bundle's digest."""
    path = bundle.path / SIGNATURE_FILE
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise UntrustedBundleError(
            f"its {SIGNATURE_FILE} is not valid JSON ({error}): the bundle's signature was damaged"
        ) from None
    if not isinstance(value, dict):
        raise UntrustedBundleError(f"its {SIGNATURE_FILE} is not a DSSE envelope: the bundle's signature was damaged")
    return value


def sign(bundle: Bundle, key: SigningKey, *, audit_log: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Sign ``bundle``'s statement with ``key``, adding to the signatures already there; returns the
    envelope. An envelope whose statement is not this bundle's is replaced."""
    payload = compact_json(statement(bundle))
    existing = signed_statement(bundle)
    if existing is not None and _payload_or_none(existing) == payload:
        signed = add_signature(existing, key)
        if signed is existing:
            return existing
    else:
        signed = envelope(PAYLOAD_TYPE, payload, key)
    # the temporary file goes in the folder above: a bundle folder holding an unlisted file fails its
    # integrity check, and a reader may be checking right now
    replace_file(bundle.path / SIGNATURE_FILE, dumps(signed), scratch=bundle.path.parent)
    audit.record("bundle_sign", audit_log=audit_log, ref=bundle.ref, digest=bundle.digest, key_id=key.key_id)
    return signed


def _payload_or_none(existing: dict[str, Any]) -> bytes | None:
    try:
        return envelope_payload(existing)
    except SigningError:
        return None


def sign_own_capture(bundle: Bundle, *, audit_log: str | os.PathLike[str] | None = None) -> SigningKey:
    """Sign a capture with the user's signing key, first making the key (and trusting it) if there is
    none yet: as ssh-keygen makes an identity once, so that one's own bundles are signed and trusted."""
    key = default_signing_key()
    if key is None:
        key = SigningKey.create(audit_log=audit_log)
        TrustStore(audit_log=audit_log).add(key.public_pem(), name="own key")
        log.warning(
            "Made a signing key (%s) at %s and trusted it: your captures are signed with it. "
            "Give colleagues its public key ('notebook-deploy signing-key export') to trust yours.",
            key.key_id,
            key.path,
        )
    sign(bundle, key, audit_log=audit_log)
    return key


def signers(bundle: Bundle, trust: TrustStore | None = None) -> tuple[list[str], list[str]]:
    """The key ids of the trusted keys whose signatures of this bundle verify, and of every other
    signature on it; raise ``UntrustedBundleError`` if its envelope names another bundle."""
    signed = signed_statement(bundle)
    if signed is None:
        return [], []
    trust = trust if trust is not None else TrustStore()
    try:
        trusted, others = envelope_signers(signed, trust)
        subject = json.loads(envelope_payload(signed))["subject"]
        digests = [entry["digest"].get("sha256") for entry in subject]
    except (SigningError, ValueError, KeyError, TypeError, AttributeError):
        raise UntrustedBundleError(
            f"its {SIGNATURE_FILE} is not a signed in-toto statement: the bundle's signature was damaged"
        ) from None
    if signed.get("payloadType") != PAYLOAD_TYPE or _digest(bundle.digest)["sha256"] not in digests:
        raise UntrustedBundleError(
            f"its signature is for another bundle (the signed statement does not name this bundle's digest "
            f"{bundle.digest}): it was copied, or the bundle was changed and re-sealed after signing"
        )
    return trusted, others


def check_trusted(
    bundle: Bundle,
    trust: TrustStore | None = None,
    *,
    allow_unsigned: bool = False,
    action: str = "load",
    audit_log: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The ids of the trusted keys that signed ``bundle``; raise ``UntrustedBundleError`` if there are
    none, naming the signer and how to trust it, unless ``allow_unsigned`` (then the decision is written
    to the audit log and ``[]`` is returned). Call it before the model is unpickled."""
    trust = trust if trust is not None else TrustStore()
    try:
        trusted, others = signers(bundle, trust)
    except UntrustedBundleError as error:
        if not allow_unsigned:
            raise UntrustedBundleError(
                f"refusing to {action} {bundle.ref}: {error}. Get a signed export from its author, or pass "
                "--allow-unsigned to load it anyway (it runs the bundle's code; recorded in the audit log)"
            ) from None
        trusted, others, reason = [], [], str(error)
    else:
        reason = f"signed by {', '.join(others)}, not trusted or not verifying" if others else "unsigned"
    if trusted:
        return trusted
    if allow_unsigned:
        audit.record(
            "allow_unsigned",
            audit_log=audit_log,
            action=action,
            ref=bundle.ref,
            digest=bundle.digest,
            signers=others,
            reason=reason,
            path=str(bundle.path),
        )
        log.warning("%s %s although %s (--allow-unsigned)", action, bundle.ref, reason)
        return []
    where = f"the trust store {trust.directory}"
    forged = [key_id for key_id in others if trust.find(key_id) is not None]
    if forged:
        raise UntrustedBundleError(
            f"refusing to {action} {bundle.ref}: its signature by the trusted key {', '.join(forged)} does not "
            "verify: the signature was changed after signing. Get a signed export from its author again, or "
            "pass --allow-unsigned to load it anyway (it runs the bundle's code; recorded in the audit log)"
        )
    if others:
        raise UntrustedBundleError(
            f"refusing to {action} {bundle.ref}: it is signed by key {', '.join(others)}, which is not trusted in "
            f"{where}. If you trust its owner, get their public key (they run 'notebook-deploy signing-key "
            "export -o KEY.pem') and run 'notebook-deploy trust add KEY.pem'; or pass --allow-unsigned to "
            "load it anyway (it runs the bundle's code; recorded in the audit log)"
        )
    raise UntrustedBundleError(
        f"refusing to {action} {bundle.ref}: it is unsigned, so nothing says who made it, and loading it runs "
        f"the code in its pickle. Ask its author for a signed export and their public key "
        "('notebook-deploy trust add KEY.pem'); if it is your own capture from before bundles were signed, "
        f"sign it: 'notebook-deploy sign {bundle.ref}'; or pass --allow-unsigned (recorded in the audit log)"
    )


def signer_keys(
    bundle: Bundle,
    trust: TrustStore | None = None,
    *,
    allow_unsigned: bool = False,
    action: str = "load",
    audit_log: str | os.PathLike[str] | None = None,
) -> dict[str, bytes]:
    """``check_trusted``, returning the public keys (PEM, by id) of the trusted keys that signed
    ``bundle``: what travels with a bundle checked here to where it is loaded (an image's trust
    store, the replicas of a Ray deployment), so that it is checked there too."""
    trust = trust if trust is not None else TrustStore()
    signed = check_trusted(bundle, trust, allow_unsigned=allow_unsigned, action=action, audit_log=audit_log)
    return {key_id: key.public_pem for key_id in signed if (key := trust.find(key_id)) is not None}
