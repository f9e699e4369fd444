"""Signed images, their provenance and SBOM (notebook_deploy.image.trust, attachments, sbom), checked
against a real docker-registry (distribution 2.8, which has no referrers API, so the tag scheme) and
independently of this project's code: the signature with openssl, the refusal of an unsigned image
with Debian's skopeo, the SBOM with the CycloneDX JSON schema.

No registry that runs here has the OCI referrers API, so the referrers path of push_attachment and
read_attached is not exercised against a real one (see docs/security.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from images import push_test_base
from registries import Registry as RealRegistry
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.errors import ImageAttachError
from notebook_deploy.image import trust
from notebook_deploy.image.attachments import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    attachment_tag,
    simple_signing_payload,
)
from notebook_deploy.image.registry import OCI_MANIFEST, Registry
from notebook_deploy.image.sbom import check_sbom
from notebook_deploy.signing import TRUST_DIR_VARIABLE, SigningKey, TrustStore, pae

REPOSITORY = "models/lr"


# -- the formats, without a registry -----------------------------------------------------------------
def test_the_signature_payload_is_cosigns_simple_signing_layout():
    payload = json.loads(simple_signing_payload("reg.example/models/lr", "sha256:" + "a" * 64, {"k": "v"}))
    assert payload == {
        "critical": {
            "identity": {"docker-reference": "reg.example/models/lr"},
            "image": {"docker-manifest-digest": "sha256:" + "a" * 64},
            "type": "cosign container image signature",
        },
        "optional": {"k": "v"},
    }
    assert attachment_tag("sha256:" + "b" * 64, "sig") == "sha256-" + "b" * 64 + ".sig"


def test_an_invalid_sbom_is_refused_with_the_schema_error():
    with pytest.raises(nd.NotebookDeployError, match="'type' is a required property"):
        check_sbom(b'{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "x"}]}')
    with pytest.raises(nd.NotebookDeployError, match="not a CycloneDX JSON document"):
        check_sbom(b"[]")


# -- against a real registry -------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A docker-registry without auth, the test base on it, and a signing key (the default one)."""
    with RealRegistry("none", tmp_path / "registry") as real:
        client = Registry(real.host, scheme="http", credentials=None)
        base = push_test_base(client, tmp_path)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        yield real, client, base


@pytest.fixture
def signing_key(tmp_path, monkeypatch) -> SigningKey:
    monkeypatch.setenv("NOTEBOOK_DEPLOY_SIGNING_KEY", str(tmp_path / "keys" / "signing.key"))
    key = SigningKey.create(tmp_path / "keys" / "signing.key")
    (tmp_path / "signer.pub.pem").write_bytes(key.public_pem())
    TrustStore().add(key.public_pem(), name="signer")  # its captures are signed by it: image builds need that
    return key


def _bundle(store, C: float = 1.0) -> nd.Bundle:
    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    return nd.capture(LogisticRegression(C=C).fit(X, y), name="lr", sample=X[:3], store=store)


def _attached(client: Registry, digest: str, suffix: str) -> tuple[dict, list[bytes]]:
    manifest = json.loads(client.get_manifest(REPOSITORY, attachment_tag(digest, suffix))[0])
    return manifest, [client.get_blob(REPOSITORY, layer["digest"]) for layer in manifest["layers"]]


def _verify_image(image: str, *args: str, trust_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({TRUST_DIR_VARIABLE: str(trust_dir)} if trust_dir else {})}
    return subprocess.run(
        [sys.executable, "-m", "notebook_deploy", "verify-image", image, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.integration
def test_a_pushed_image_is_signed_in_cosigns_format_and_openssl_verifies_it(registry, signing_key, store, tmp_path):
    real, client, base = registry
    bundle = _bundle(store)
    result = nd.push(bundle, f"{real.host}/{REPOSITORY}:1", base=base, backend="daemonless")
    assert result.attached is not None and result.attached.key_id == signing_key.key_id
    summary = str(result)
    assert f"sha256-{result.digest[7:]}.sig" in summary and "Python packages (CycloneDX)" in summary

    # the digest the registry itself reports for the tag, read by skopeo rather than our client
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{real.host}/{REPOSITORY}:1"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert inspected["Digest"] == result.digest

    manifest, (payload,) = _attached(client, result.digest, "sig")
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["layers"][0]["mediaType"] == SIMPLE_SIGNING
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(manifest["layers"][0]["annotations"][SIGNATURE_ANNOTATION]))
    checked = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(tmp_path / "signer.pub.pem"),
            "-rawin",
            "-in",
            str(tmp_path / "payload"),
            "-sigfile",
            str(tmp_path / "sig"),
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout, checked.stderr
    critical = json.loads(payload)["critical"]
    assert critical["image"]["docker-manifest-digest"] == inspected["Digest"]
    assert critical["identity"]["docker-reference"] == f"{real.host}/{REPOSITORY}"
    assert critical["type"] == "cosign container image signature"

    # one flipped byte of the payload: openssl refuses it (the check above can fail)
    (tmp_path / "payload").write_bytes(payload.replace(b"sha256:", b"sha256;", 1))
    assert (
        subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                str(tmp_path / "signer.pub.pem"),
                "-rawin",
                "-in",
                str(tmp_path / "payload"),
                "-sigfile",
                str(tmp_path / "sig"),
            ],
            capture_output=True,
        ).returncode
        != 0
    )

    # the provenance: a DSSE envelope signed by the same key, naming the image and the bundle digests
    manifest, (envelope, _) = _attached(client, result.digest, "att")
    assert manifest["subject"]["digest"] == result.digest
    assert manifest["layers"][0]["annotations"]["predicateType"] == "https://slsa.dev/provenance/v1"
    envelope = json.loads(envelope)
    statement_bytes = base64.b64decode(envelope["payload"])
    (tmp_path / "pae").write_bytes(pae(envelope["payloadType"], statement_bytes))
    (tmp_path / "pae.sig").write_bytes(base64.b64decode(envelope["signatures"][0]["sig"]))
    assert (
        subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                str(tmp_path / "signer.pub.pem"),
                "-rawin",
                "-in",
                str(tmp_path / "pae"),
                "-sigfile",
                str(tmp_path / "pae.sig"),
            ],
            capture_output=True,
        ).returncode
        == 0
    )
    statement = json.loads(statement_bytes)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"] == {"sha256": result.digest[7:]}
    build = statement["predicate"]["buildDefinition"]
    assert build["externalParameters"]["bundleDigest"] == bundle.manifest["digest"]
    assert {"sha256": bundle.manifest["digest"][7:]} in [d.get("digest") for d in build["resolvedDependencies"]]
    assert "lock" in [d.get("annotations", {}).get("kind") for d in build["resolvedDependencies"]]  # the bundle's

    # the SBOM: valid against CycloneDX's JSON schema, with the image's Python packages as purls
    manifest, (document,) = _attached(client, result.digest, "sbom")
    assert manifest["layers"][0]["mediaType"] == "application/vnd.cyclonedx+json"
    sbom = json.loads(document)
    _validate_cyclonedx(sbom)
    purls = {c["purl"].split("@")[0] for c in sbom["components"]}
    assert {"pkg:pypi/scikit-learn", "pkg:pypi/numpy", "pkg:pypi/fastapi", "pkg:pypi/notebook-deploy"} <= purls
    assert {"sha256": hashlib.sha256(document).hexdigest()} in [
        b["digest"] for b in statement["predicate"]["runDetails"]["byproducts"]
    ]

    done = _verify_image(f"{real.host}/{REPOSITORY}:1", "--key", str(tmp_path / "signer.pub.pem"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Verified {real.host}/{REPOSITORY}@{result.digest}")
    assert bundle.manifest["digest"] in done.stdout

    # without --key: the trust store decides (the fixture trusted the key); an empty one verifies nothing
    done = _verify_image(f"{real.host}/{REPOSITORY}:1")
    assert done.returncode == 0 and f"key {signing_key.key_id}" in done.stdout, done.stderr
    done = _verify_image(f"{real.host}/{REPOSITORY}:1", trust_dir=tmp_path / "empty-trust")
    assert done.returncode == 1 and "no trusted key to verify with" in done.stderr

    # the bundle's own signed statement travels with the image, beside the image's
    _, envelopes = _attached(client, result.digest, "att")
    assert len(envelopes) == 2
    bundle_statement = json.loads(base64.b64decode(json.loads(envelopes[1])["payload"]))
    assert bundle_statement["subject"][0]["digest"] == {"sha256": bundle.manifest["digest"][7:]}

    # a second push of the same image adds no second signature of the same key
    again = nd.push(bundle, f"{real.host}/{REPOSITORY}:again", base=base, backend="daemonless")
    assert again.digest == result.digest
    assert len(_attached(client, result.digest, "sig")[0]["layers"]) == 1


def _validate_cyclonedx(document: dict) -> None:
    """Check against the CycloneDX JSON schema of its version, with the validator cyclonedx-python-lib
    ships (jsonschema over the schema files bundled in the library)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert document["$schema"] == "http://cyclonedx.org/schema/bom-1.6.schema.json"
    problem = JsonStrictValidator(SchemaVersion.from_version(document["specVersion"])).validate_str(
        json.dumps(document)
    )
    assert problem is None, problem


@pytest.mark.integration
def test_unsigned_and_retagged_images_fail_verify_image(registry, signing_key, store, tmp_path):
    real, client, base = registry
    signed = nd.push(_bundle(store), f"{real.host}/{REPOSITORY}:signed", base=base, backend="daemonless")
    unsigned = nd.push(
        _bundle(store, C=0.01), f"{real.host}/{REPOSITORY}:unsigned", base=base, backend="daemonless", sign=False
    )
    assert unsigned.attached.signature == "" and "signature  none" in str(unsigned)
    key = str(tmp_path / "signer.pub.pem")

    done = _verify_image(f"{real.host}/{REPOSITORY}:unsigned", "--key", key)
    assert done.returncode == 1
    assert f"{REPOSITORY}@{unsigned.digest} is unsigned: no signature exists" in done.stderr

    # the signed image's signature copied to the unsigned image's .sig tag: it names another digest
    body, media_type = client.get_manifest(REPOSITORY, attachment_tag(signed.digest, "sig"))
    client.put_manifest(REPOSITORY, attachment_tag(unsigned.digest, "sig"), body, media_type)
    done = _verify_image(f"{real.host}/{REPOSITORY}:unsigned", "--key", key)
    assert done.returncode == 1
    assert f"its signature is for another image ({signed.digest})" in done.stderr

    # the signed tag moved to the unsigned image: verify-image follows the tag to its digest
    client.put_manifest(REPOSITORY, "signed", *client.get_manifest(REPOSITORY, "unsigned"))
    done = _verify_image(f"{real.host}/{REPOSITORY}:signed", "--key", key)
    assert done.returncode == 1 and "signature is for another image" in done.stderr

    # the original, by digest, still verifies; with another key it does not
    assert _verify_image(f"{real.host}/{REPOSITORY}@{signed.digest}", "--key", key).returncode == 0
    other = SigningKey.create(tmp_path / "other" / "signing.key")
    (tmp_path / "other.pub.pem").write_bytes(other.public_pem())
    done = _verify_image(f"{real.host}/{REPOSITORY}@{signed.digest}", "--key", str(tmp_path / "other.pub.pem"))
    assert done.returncode == 1 and "verifies with a trusted key" in done.stderr


@pytest.mark.integration
def test_debians_skopeo_refuses_an_unsigned_tag_under_the_documented_policy(registry, signing_key, store, tmp_path):
    real, client, base = registry
    nd.push(_bundle(store), f"{real.host}/{REPOSITORY}:signed", base=base, backend="daemonless")
    nd.push(_bundle(store, C=0.01), f"{real.host}/{REPOSITORY}:unsigned", base=base, backend="daemonless", sign=False)
    # the policy.json and registries.d settings of docs/security.md, for this registry and key
    policy = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                f"{real.host}/{REPOSITORY}": [
                    {
                        "type": "sigstoreSigned",
                        "keyPath": str(tmp_path / "signer.pub.pem"),
                        "signedIdentity": {"type": "matchRepository"},
                    }
                ]
            }
        },
    }
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    (tmp_path / "registries.d").mkdir()
    (tmp_path / "registries.d" / "notebook-deploy.yaml").write_text(
        f"docker:\n  {real.host}:\n    use-sigstore-attachments: true\n"
    )

    def copy(tag: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "skopeo",
                "--policy",
                str(tmp_path / "policy.json"),
                "--registries.d",
                str(tmp_path / "registries.d"),
                "copy",
                "--src-tls-verify=false",
                f"docker://{real.host}/{REPOSITORY}:{tag}",
                f"dir:{tmp_path / tag}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = copy("unsigned")
    assert refused.returncode != 0 and "no signature exists" in refused.stderr, refused.stderr
    # Debian's skopeo 1.9.3 is built without sigstore verification: it finds the signature and says so
    signed = copy("signed")
    assert signed.returncode != 0 and "Debian-local change: sigstore disabled" in signed.stderr, signed.stderr


@pytest.mark.integration
def test_a_failure_after_the_image_is_pushed_says_the_image_is_unsigned(
    registry, signing_key, store, tmp_path, monkeypatch
):
    real, client, base = registry
    real_attachment = trust.push_attachment

    def registry_goes_down(*args, **kwargs):  # the registry really stops; the patch only picks the moment
        real.kill()
        return real_attachment(*args, **kwargs)

    monkeypatch.setattr(trust, "push_attachment", registry_goes_down)
    monkeypatch.setattr(Registry, "__init__", _fast_retries(Registry.__init__))
    with pytest.raises(ImageAttachError) as failed:
        nd.push(_bundle(store), f"{real.host}/{REPOSITORY}:1", base=base, backend="daemonless")
    message = str(failed.value)
    assert message.startswith(f"Pushed {real.host}/{REPOSITORY}:1@sha256:")
    assert "without its signature" in message and "did not answer" in message
    digest = message.split("@", 1)[1].split(",")[0]

    monkeypatch.undo()
    real.restart()
    assert client.get_manifest(REPOSITORY, "1")  # the image is there, tagged
    done = _verify_image(f"{real.host}/{REPOSITORY}:1", "--key", str(tmp_path / "signer.pub.pem"))
    assert done.returncode == 1 and f"{digest} is unsigned" in done.stderr


def _fast_retries(init):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "retries": 1, "backoff": 0.01})

    return wrapped


@pytest.mark.integration
def test_the_docker_backend_signs_the_digest_the_daemon_pushed(registry, signing_key, store, tmp_path, monkeypatch):
    from containers import DockerDaemon

    real, client, base = registry
    with DockerDaemon() as docker:
        monkeypatch.setenv("DOCKER_HOST", docker.host)
        result = nd.push(_bundle(store), f"{real.host}/{REPOSITORY}:docker", base=base, backend="docker")
    assert result.backend == "docker" and result.attached.key_id == signing_key.key_id
    assert "signature  cosign" in str(result)
    _, (payload,) = _attached(client, result.digest, "sig")
    assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == result.digest
    done = _verify_image(f"{real.host}/{REPOSITORY}:docker", "--key", str(tmp_path / "signer.pub.pem"))
    assert done.returncode == 0, done.stderr


@pytest.mark.integration
def test_a_registry_with_the_referrers_api_gets_the_sbom_and_provenance_as_referrers(
    registry, signing_key, store, tmp_path
):
    from registries import ReferrersProxy

    real, client, _ = registry
    with ReferrersProxy(real) as proxy:  # the real registry's storage behind the referrers API
        via = Registry(proxy.host, scheme="http", credentials=None)
        base = push_test_base(via, tmp_path)
        result = nd.push(_bundle(store), f"{proxy.host}/{REPOSITORY}:1", base=base, backend="daemonless")
        assert (result.attached.sbom, result.attached.provenance) == ("referrers", "referrers")
        assert result.attached.signature == attachment_tag(result.digest, "sig")  # signatures stay tagged
        listed = via.referrers(REPOSITORY, result.digest)
        assert sorted(d["artifactType"] for d in listed) == [
            "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json",
        ]
        for suffix in ("att", "sbom"):  # no tags: the referrers API holds them
            with pytest.raises(nd.NotebookDeployError, match="MANIFEST_UNKNOWN"):
                via.get_manifest(REPOSITORY, attachment_tag(result.digest, suffix))
        done = _verify_image(f"{proxy.host}/{REPOSITORY}:1", "--key", str(tmp_path / "signer.pub.pem"))
        assert done.returncode == 0, done.stderr
        assert "(referrers)" in done.stdout
