"""Signing keys, the trust store, raw Ed25519 signatures and DSSE envelopes.

A signing key is one Ed25519 private key (PKCS#8 PEM, mode 0600): ``signing-key.pem`` in the store
root, or ``$NOTEBOOK_DEPLOY_SIGNING_KEY``, or the path given. Its id is the first 16 hex digits of the
sha256 of its 32 raw public bytes: short enough for messages, stable, and computable by anyone who has
the public key. The trust store is a directory of public keys (SubjectPublicKeyInfo PEM, one
``<key id>.pem`` each): ``trusted-keys/`` in the store root, or ``$NOTEBOOK_DEPLOY_TRUST_DIR``. Any PEM
file dropped there (a Kubernetes ConfigMap, an image layer) is trusted; its id is recomputed from its
content, never taken from its file name.

Why ``cryptography``'s Ed25519 and not the OpenSSF ``model-signing`` package: a bundle is already a
manifest of sha256 file hashes sealed by a digest, so one signature over a statement naming that digest
covers every byte; ``model-signing`` would hash the directory again into its own manifest format and pulls
in sigstore's dependency tree for keyless signing, which an air-gapped user cannot use. Ed25519 is what
cosign/sigstore accept for keyed signing, so the same key signs images in the cosign format, and
``openssl pkeyutl -verify -rawin`` checks its signatures without this code. ``cryptography`` is already a
dependency (registry tokens, TLS).

DSSE (the envelope in-toto attestations use): the signature is over
``PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body`` (lengths in decimal ASCII),
never over the JSON, so the signed bytes are unambiguous.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import audit
from .errors import SigningError
from .files import default_root, replace_file

SIGNING_KEY_VARIABLE = "NOTEBOOK_DEPLOY_SIGNING_KEY"
TRUST_DIR_VARIABLE = "NOTEBOOK_DEPLOY_TRUST_DIR"
KEY_FILE = "signing-key.pem"
TRUST_DIR = "trusted-keys"
_NAME_PREFIX = "# name: "  # the optional first line of a trusted key file, before the PEM block


def default_key_path(root: str | os.PathLike[str] | None = None) -> Path:
    """``$NOTEBOOK_DEPLOY_SIGNING_KEY``, else ``signing-key.pem`` in the store ``root`` (default: the default store)."""
    configured = os.environ.get(SIGNING_KEY_VARIABLE)
    if configured:
        return Path(configured)
    return Path(root if root is not None else default_root()) / KEY_FILE


def default_trust_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """``$NOTEBOOK_DEPLOY_TRUST_DIR``, else ``trusted-keys`` in the store ``root`` (default: the default store)."""
    configured = os.environ.get(TRUST_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return Path(root if root is not None else default_root()) / TRUST_DIR


def _public_key(public_pem: bytes) -> Ed25519PublicKey:
    """The Ed25519 key in ``public_pem``; raise ``SigningError`` for anything else."""
    try:
        key = serialization.load_pem_public_key(_pem_block(public_pem))
    except ValueError as error:
        raise SigningError(
            f"not a PEM public key ({error}); export one with 'notebook-deploy signing-key export'"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(
            f"the public key is {type(key).__name__.lstrip('_')}, not Ed25519: "
            "notebook-deploy signs and verifies with Ed25519 keys only"
        )
    return key


def _pem_block(text: bytes) -> bytes:
    """The PEM block of ``text``, without the comment lines a trusted key file may start with."""
    start = text.find(b"-----BEGIN")
    return text[start:] if start >= 0 else text


def key_id(public_pem: bytes) -> str:
    """The id of a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    raw = _public_key(public_pem).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public_pem: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``data`` by the key in ``public_pem``."""
    try:
        _public_key(public_pem).verify(signature, data)
    except InvalidSignature:
        return False
    return True


class SigningKey:
    """An Ed25519 private key on disk (mode 0600) that signs bundles and images."""

    def __init__(self, private: Ed25519PrivateKey, path: Path) -> None:
        self._private = private
        self.path = path
        self.key_id = key_id(self.public_pem())

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id}, {str(self.path)!r})"

    @classmethod
    def create(
        cls,
        path: Path | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        audit_log: str | os.PathLike[str] | None = None,
    ) -> SigningKey:
        """Make a new key at ``path`` (default: ``default_key_path(root)``); refuse to replace one,
        which would make every bundle signed with it unverifiable by its owner."""
        path = Path(path) if path is not None else default_key_path(root)
        if path.exists():
            raise SigningError(
                f"a signing key already exists at {path}; 'notebook-deploy signing-key show' "
                "shows it (delete the file first to replace it)"
            )
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, pem, mode=0o600)
        key = cls(private, path)
        audit.record("signing_key_create", audit_log=audit_log, root=root, key_id=key.key_id, path=str(path))
        return key

    @classmethod
    def load(cls, path: Path | None = None, *, root: str | os.PathLike[str] | None = None) -> SigningKey:
        """Read the key at ``path`` (default: ``default_key_path(root)``)."""
        path = Path(path) if path is not None else default_key_path(root)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SigningError(
                f"no signing key at {path}; make one with 'notebook-deploy signing-key create'"
            ) from None
        except OSError as error:
            raise SigningError(f"cannot read the signing key {path}: {error}") from None
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise SigningError(f"{path} is not an unencrypted PEM private key ({error})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SigningError(f"{path} holds a {type(private).__name__.lstrip('_')}, not an Ed25519 key")
        return cls(private, path)

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM (what ``trust add`` and ``openssl -pubin`` read)."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def default_signing_key(root: str | os.PathLike[str] | None = None) -> SigningKey | None:
    """The key at ``default_key_path(root)`` if there is one, else None."""
    path = default_key_path(root)
    return SigningKey.load(path) if path.exists() else None


@dataclass(frozen=True)
class TrustedKey:
    """A public key in the trust store."""

    key_id: str
    name: str
    public_pem: bytes
    path: Path | None  # None: given to the TrustStore in memory (``keys``)


class TrustStore:
    """The public keys whose signatures are trusted: ``add``, ``list``, ``find``, ``remove``.

    ``directory`` defaults to ``default_trust_dir(root)``. ``keys`` (PEM) are trusted too, in memory:
    how a deployment whose bundle was verified where it was deployed from passes the signer on to its
    replicas. Changes go to the audit log."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        audit_log: str | os.PathLike[str] | None = None,
        keys: Sequence[bytes] = (),
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_trust_dir(root)
        self._root = root
        self._audit_log = audit_log
        self._keys = [TrustedKey(key_id(pem), "given", _pem_block(pem), None) for pem in keys]

    def __repr__(self) -> str:
        return f"TrustStore({str(self.directory)!r})"

    def list(self) -> list[TrustedKey]:
        """Every trusted key, by id. A file that is not an Ed25519 public key is skipped (not trusted)."""
        found = {key.key_id: key for key in self._keys}
        for file in sorted(self.directory.glob("*.pem")) if self.directory.is_dir() else []:
            with contextlib.suppress(OSError, SigningError):
                text = file.read_bytes()
                identifier = key_id(text)
                found.setdefault(
                    identifier, TrustedKey(identifier, _name_of(text) or file.stem, _pem_block(text), file)
                )
        return sorted(found.values(), key=lambda key: key.key_id)

    def find(self, identifier: str) -> TrustedKey | None:
        """The trusted key with id ``identifier``, or None."""
        return next((key for key in self.list() if key.key_id == identifier), None)

    def add(self, public_pem: bytes, name: str | None = None) -> TrustedKey:
        """Trust the Ed25519 key in ``public_pem`` (``name`` labels it in listings); adding a trusted
        key again changes nothing."""
        identifier = key_id(public_pem)
        block = _pem_block(public_pem)
        existing = self.find(identifier)
        if existing is not None:
            return existing
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{identifier}.pem"
        label = (name or identifier).replace("\n", " ")
        replace_file(path, f"{_NAME_PREFIX}{label}\n".encode() + block)
        audit.record(
            "trust_add",
            audit_log=self._audit_log,
            root=self._root,
            key_id=identifier,
            name=label,
            trust_dir=str(self.directory),
        )
        return TrustedKey(identifier, label, block, path)

    def remove(self, identifier: str) -> TrustedKey:
        """Stop trusting the key ``identifier``: bundles signed only by it are refused from now on."""
        key = self.find(identifier)
        if key is None or key.path is None:
            known = ", ".join(key.key_id for key in self.list()) or "none"
            raise SigningError(
                f"no trusted key with id {identifier!r} in {self.directory} (ids: {known}); "
                "'notebook-deploy trust list' shows them"
            )
        key.path.unlink()
        audit.record(
            "trust_remove",
            audit_log=self._audit_log,
            root=self._root,
            key_id=key.key_id,
            name=key.name,
            trust_dir=str(self.directory),
        )
        return key


def _name_of(text: bytes) -> str | None:
    first = text.split(b"\n", 1)[0].decode(errors="replace")
    return first[len(_NAME_PREFIX) :].strip() or None if first.startswith(_NAME_PREFIX) else None


# -- DSSE envelopes -----------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of ``payload``: the bytes that are signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(payload_type: str, payload: bytes, key: SigningKey) -> dict[str, Any]:
    """A DSSE envelope of ``payload`` signed by ``key``."""
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [_envelope_signature(payload_type, payload, key)],
    }


def add_signature(existing: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """``existing`` with a signature by ``key`` added (a co-signer, an approver); unchanged if it has one."""
    payload = envelope_payload(existing)
    if any(entry.get("keyid") == key.key_id for entry in existing.get("signatures", [])):
        return existing
    signatures = [*existing.get("signatures", []), _envelope_signature(existing["payloadType"], payload, key)]
    return {**existing, "signatures": signatures}


def _envelope_signature(payload_type: str, payload: bytes, key: SigningKey) -> dict[str, str]:
    return {"keyid": key.key_id, "sig": base64.b64encode(key.sign(pae(payload_type, payload))).decode()}


def envelope_payload(existing: dict[str, Any]) -> bytes:
    """The payload bytes of a DSSE envelope; raise ``SigningError`` if it is not one."""
    try:
        return base64.b64decode(existing["payload"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise SigningError("not a DSSE envelope: it has no base64 'payload'") from None


def envelope_signers(existing: dict[str, Any], trust: TrustStore) -> tuple[list[str], list[str]]:
    """The key ids whose signatures on ``existing`` verify against a trusted key, and the key ids of
    every other signature (unknown signers, or trusted ids whose signature does not verify)."""
    payload = envelope_payload(existing)
    signed = pae(str(existing.get("payloadType", "")), payload)
    trusted: list[str] = []
    others: list[str] = []
    for entry in existing.get("signatures", []) if isinstance(existing.get("signatures"), list) else []:
        identifier = str(entry.get("keyid", "")) if isinstance(entry, dict) else ""
        key = trust.find(identifier) if identifier else None
        try:
            signature = base64.b64decode(str(entry.get("sig", "")), validate=True)
        except ValueError:
            signature = b""
        if key is not None and verify_signature(key.public_pem, signed, signature):
            trusted.append(identifier)
        else:
            others.append(identifier or "(no key id)")
    return trusted, others


def dumps(value: dict[str, Any]) -> bytes:
    """The JSON text an envelope is stored as."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
