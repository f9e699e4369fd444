"""Signing keys, the trust store and DSSE envelopes, checked against openssl where a signature is made."""

from __future__ import annotations

import base64
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notebook_deploy import audit
from notebook_deploy.signing import (
    SIGNING_KEY_VARIABLE,
    TRUST_DIR_VARIABLE,
    SigningError,
    SigningKey,
    TrustStore,
    add_signature,
    default_signing_key,
    envelope,
    envelope_signers,
    key_id,
    pae,
    verify_signature,
)


@pytest.fixture(autouse=True)
def _own_signing_files(tmp_path, monkeypatch):
    """No key and no trusted key yet, in this test's own folder (not the session's)."""
    monkeypatch.delenv(SIGNING_KEY_VARIABLE)
    monkeypatch.delenv(TRUST_DIR_VARIABLE)


def test_a_created_key_is_private_loads_again_and_is_not_replaced(tmp_path):
    assert default_signing_key() is None
    key = SigningKey.create()
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert default_signing_key().key_id == key.key_id == SigningKey.load().key_id
    assert len(key.key_id) == 16
    with pytest.raises(SigningError, match="already exists"):
        SigningKey.create()
    assert [entry["key_id"] for entry in audit.read() if entry["event"] == "signing_key_create"] == [key.key_id]


def test_a_missing_or_foreign_key_file_is_named(tmp_path):
    with pytest.raises(SigningError, match="signing-key create"):
        SigningKey.load(tmp_path / "none.pem")
    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SigningError, match="not an Ed25519 key"):
        SigningKey.load(other)


def test_openssl_verifies_a_signature_and_refuses_a_changed_payload(tmp_path):
    key = SigningKey.create(tmp_path / "key.pem")
    (tmp_path / "pub.pem").write_bytes(key.public_pem())
    (tmp_path / "payload").write_bytes(b"the bytes that were signed")
    (tmp_path / "sig").write_bytes(key.sign(b"the bytes that were signed"))
    assert len((tmp_path / "sig").read_bytes()) == 64
    command = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "pub.pem",
        "-rawin",
        "-in",
        "payload",
        "-sigfile",
        "sig",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "Signature Verified Successfully" in result.stdout
    (tmp_path / "payload").write_bytes(b"the bytes that were signed!")
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=30).returncode != 0
    assert verify_signature(key.public_pem(), b"the bytes that were signed", (tmp_path / "sig").read_bytes())
    assert not verify_signature(key.public_pem(), b"other bytes", (tmp_path / "sig").read_bytes())


def test_the_key_id_is_what_anyone_computes_from_the_raw_public_key(tmp_path):
    key = SigningKey.create(tmp_path / "key.pem")
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=key.public_pem(),
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    raw = der[-32:]  # an Ed25519 SubjectPublicKeyInfo ends with the 32 raw key bytes
    import hashlib

    assert key.key_id == key_id(key.public_pem()) == hashlib.sha256(raw).hexdigest()[:16]


def test_trust_add_list_remove_is_audited_and_a_dropped_in_pem_is_trusted(tmp_path):
    trust = TrustStore()
    alice, bob = SigningKey.create(tmp_path / "alice.pem"), SigningKey.create(tmp_path / "bob.pem")
    added = trust.add(alice.public_pem(), name="alice")
    assert trust.add(alice.public_pem()) == added  # adding again changes nothing
    (trust.directory / "from-a-configmap.pem").write_bytes(bob.public_pem())
    assert {(k.key_id, k.name) for k in trust.list()} == {(alice.key_id, "alice"), (bob.key_id, "from-a-configmap")}
    (trust.directory / "junk.pem").write_text("not a key")  # skipped, not trusted, not an error
    assert len(trust.list()) == 2
    trust.remove(alice.key_id)
    assert trust.find(alice.key_id) is None
    with pytest.raises(SigningError, match=f"no trusted key with id 'nope'.*{bob.key_id}"):
        trust.remove("nope")
    events = [(e["event"], e["key_id"]) for e in audit.read() if e["event"].startswith("trust_")]
    assert events == [("trust_add", alice.key_id), ("trust_remove", alice.key_id)]


def test_only_ed25519_public_keys_can_be_trusted(tmp_path):
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SigningError, match="not Ed25519"):
        TrustStore().add(pem)
    with pytest.raises(SigningError, match="not a PEM public key"):
        TrustStore().add(b"hello")


def test_a_dsse_envelope_verifies_with_openssl_over_its_pae_and_counts_trusted_signers(tmp_path):
    alice, bob = SigningKey.create(tmp_path / "alice.pem"), SigningKey.create(tmp_path / "bob.pem")
    signed = add_signature(envelope("application/vnd.in-toto+json", b'{"a": 1}', alice), bob)
    assert add_signature(signed, bob) == signed
    # PAE as the DSSE specification writes it, computed here, not by the code under test
    expected = b"DSSEv1 28 application/vnd.in-toto+json 8 " + b'{"a": 1}'
    assert pae("application/vnd.in-toto+json", b'{"a": 1}') == expected
    (tmp_path / "pae").write_bytes(expected)
    (tmp_path / "sig").write_bytes(base64.b64decode(signed["signatures"][0]["sig"]))
    (tmp_path / "alice.pub").write_bytes(alice.public_pem())
    subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "alice.pub", "-rawin", "-in", "pae", "-sigfile", "sig"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=30,
    )
    trust = TrustStore(tmp_path / "trust")
    assert envelope_signers(signed, trust) == ([], [alice.key_id, bob.key_id])
    trust.add(bob.public_pem())
    assert envelope_signers(signed, trust) == ([bob.key_id], [alice.key_id])
    forged = {**signed, "payload": base64.b64encode(b'{"a": 2}').decode()}
    assert envelope_signers(forged, trust) == ([], [alice.key_id, bob.key_id])
