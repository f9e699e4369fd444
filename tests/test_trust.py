"""Signed bundles: a crafted pickle re-sealed with the project's own sealing function is refused at
import and at serve (unsigned, signed by an untrusted key, or with a signature copied from a trusted
bundle) before it is unpickled; bundles signed by a trusted key import and serve; --allow-unsigned
works and is audited. Real parts: the CLI, server processes, openssl for the signature."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import notebook_deploy as nd
from notebook_deploy import audit
from notebook_deploy.bundle import MODEL_FILE, SIGNATURE_FILE, Bundle, canonical_json, seal_manifest
from notebook_deploy.cli import cli
from notebook_deploy.errors import UntrustedBundleError
from notebook_deploy.provenance import PAYLOAD_TYPE, sign, statement
from notebook_deploy.serving.app import create_app
from notebook_deploy.signing import SigningKey, TrustStore


class _Payload:
    """Pickles as a call of exec that writes the marker file: what a malicious bundle would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


def _copy(bundle: Bundle, folder: Path) -> Path:
    target = folder / bundle.version
    shutil.copytree(bundle.path, target)
    return target


def _evil(bundle: Bundle, folder: Path, marker: Path) -> Path:
    """A copy of ``bundle`` whose model is the payload, re-sealed as a capture seals: its own integrity holds."""
    path = _copy(bundle, folder / "evil-src")
    (path / SIGNATURE_FILE).unlink()
    (path / MODEL_FILE).write_bytes(pickle.dumps(_Payload(marker)))
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "version", "digest")}
    sealed = seal_manifest(path, {**manifest, "name": "evil"})
    final = path.parent / sealed["version"]
    path.rename(final)
    Bundle.open(final)  # the integrity check passes: a self-computed hash proves nothing about who made it
    return final


def _cli(store: nd.Store, *args: str):
    return CliRunner().invoke(cli, ["--store", str(store.root), *args])


def test_the_crafted_pickle_really_runs_when_loaded_unchecked(forest_bundle, tmp_path, marker):
    """The control: the payload is real, so the tests below that find no marker show the checks stopped it."""
    _ = Bundle.open(_evil(forest_bundle, tmp_path, marker)).model
    assert marker.read_text() == "the payload ran"


@pytest.mark.parametrize("signed_by", ["unsigned", "untrusted", "copied"])
def test_a_malicious_bundle_is_refused_at_import_and_at_serve_before_unpickling(
    forest_bundle, store, tmp_path, marker, signed_by
):
    evil = Bundle.open(_evil(forest_bundle, tmp_path, marker))
    if signed_by == "untrusted":
        stranger = SigningKey.create(tmp_path / "stranger.pem")
        sign(evil, stranger)
        expected = f"signed by key {stranger.key_id}, which is not trusted"
    elif signed_by == "copied":  # the trusted signature of a real bundle does not name this one
        shutil.copyfile(forest_bundle.path / SIGNATURE_FILE, evil.path / SIGNATURE_FILE)
        expected = "its signature is for another bundle"
    else:
        expected = "it is unsigned"
    archive = evil.export(tmp_path)

    result = _cli(store, "import", str(archive))
    assert result.exit_code == 1 and expected in result.output, result.output
    assert "refusing to import evil:" in result.output and "--allow-unsigned" in result.output
    if signed_by != "copied":
        assert "notebook-deploy trust add" in result.output or "notebook-deploy sign" in result.output
    assert store.list() == []

    # serve in a real server process: a folder from elsewhere meets the pickle scan first (load), the
    # signature check after it; a copy written into the store past import (not scanned again) and the
    # app built from the Bundle meet the signature check alone
    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "notebook_deploy", "--store", str(store.root), "serve", *args, "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
        )

    served = serve(str(evil.path))
    assert served.returncode == 1 and ("loading it would run code" in served.stderr or expected in served.stderr)
    (store.root / "bundles" / "evil").mkdir(parents=True)
    shutil.copytree(evil.path, store.root / "bundles" / "evil" / evil.version)  # written past import
    for workers in ("1", "2"):
        served = serve("evil", "--workers", workers)
        assert served.returncode == 1 and expected in served.stderr, served.stderr
    with pytest.raises(nd.errors.ServeError, match=expected):
        nd.serve("evil", store=store, timeout=60)
    with pytest.raises(UntrustedBundleError, match=expected):
        create_app(evil)
    assert not marker.exists()


def test_a_bundle_signed_by_a_trusted_colleague_imports_and_serves(forest_bundle, store, tmp_path, iris):
    colleague = SigningKey.create(tmp_path / "colleague.pem")
    bundle = Bundle.open(_copy(forest_bundle, tmp_path))
    (bundle.path / SIGNATURE_FILE).unlink()
    sign(bundle, colleague)
    archive = bundle.export(tmp_path)
    (tmp_path / "colleague.pub").write_bytes(colleague.public_pem())
    trust = TrustStore(tmp_path / "trusted")
    # a store whose user trusts only the colleague
    refused = CliRunner().invoke(
        cli,
        ["--store", str(store.root), "import", str(archive)],
        env={"NOTEBOOK_DEPLOY_TRUST_DIR": str(trust.directory)},
    )
    assert refused.exit_code == 1 and colleague.key_id in refused.output
    added = CliRunner().invoke(
        cli,
        ["trust", "add", str(tmp_path / "colleague.pub"), "--name", "colleague"],
        env={"NOTEBOOK_DEPLOY_TRUST_DIR": str(trust.directory)},
    )
    assert added.exit_code == 0 and f"Trusted key {colleague.key_id} (colleague)" in added.output
    imported = CliRunner().invoke(
        cli,
        ["--store", str(store.root), "import", str(archive)],
        env={"NOTEBOOK_DEPLOY_TRUST_DIR": str(trust.directory)},
    )
    assert imported.exit_code == 0, imported.output
    copy = store.get(forest_bundle.name)
    assert (copy.path / SIGNATURE_FILE).read_bytes() == (bundle.path / SIGNATURE_FILE).read_bytes()
    shown = (
        CliRunner()
        .invoke(
            cli,
            ["--store", str(store.root), "show", forest_bundle.name],
            env={"NOTEBOOK_DEPLOY_TRUST_DIR": str(trust.directory)},
        )
        .output
    )
    assert f"signed    {colleague.key_id} (trusted)" in shown
    sign(copy, SigningKey.load())  # a second signature, by a key this trust store does not hold: an approval
    shown = (
        CliRunner()
        .invoke(
            cli,
            ["--store", str(store.root), "show", forest_bundle.name],
            env={"NOTEBOOK_DEPLOY_TRUST_DIR": str(trust.directory)},
        )
        .output
    )
    assert f"signed    {colleague.key_id} (trusted), {SigningKey.load().key_id} (not trusted)" in shown
    with nd.serve(copy, store=store, trust_dir=str(trust.directory)) as server:
        assert server.predict(iris[0][:3]).tolist() == forest_bundle.predict(iris[0][:3]).tolist()


def test_own_captures_are_signed_by_a_key_made_at_the_first_capture_and_serve(forest, iris, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_DEPLOY_SIGNING_KEY", str(tmp_path / "me" / "signing-key.pem"))
    monkeypatch.setenv("NOTEBOOK_DEPLOY_TRUST_DIR", str(tmp_path / "me" / "trusted-keys"))
    store = nd.Store(tmp_path / "store")
    bundle = nd.capture(forest, name="mine", sample=iris[0][:5], store=store)
    key = SigningKey.load()
    assert [k.key_id for k in TrustStore().list()] == [key.key_id]
    assert json.loads((bundle.path / SIGNATURE_FILE).read_bytes())["signatures"][0]["keyid"] == key.key_id
    events = [e["event"] for e in audit.read(root=store)]
    assert events[:4] == ["capture", "signing_key_create", "trust_add", "bundle_sign"]
    again = nd.capture(forest, name="mine", sample=iris[0][:5], store=store)  # the same key, no new one
    assert again.version == bundle.version and SigningKey.load().key_id == key.key_id
    with nd.serve("mine", store=store) as server:
        assert server.predict(iris[0][:2]).tolist() == forest.predict(iris[0][:2]).tolist()


def test_allow_unsigned_imports_and_serves_and_is_audited(forest_bundle, store, tmp_path, iris):
    bundle = Bundle.open(_copy(forest_bundle, tmp_path))
    (bundle.path / SIGNATURE_FILE).unlink()
    archive = bundle.export(tmp_path)
    assert _cli(store, "import", str(archive)).exit_code == 1
    result = _cli(store, "import", str(archive), "--allow-unsigned")
    assert result.exit_code == 0 and f"Imported {bundle.ref}" in result.output
    entry = [e for e in audit.read(root=store) if e["event"] == "allow_unsigned"][-1]
    assert (entry["action"], entry["ref"], entry["reason"], entry["signers"]) == ("import", bundle.ref, "unsigned", [])
    with pytest.raises(nd.errors.ServeError, match="it is unsigned"):
        nd.serve(bundle.ref, store=store, timeout=60)
    with nd.serve(bundle.ref, store=store, allow_unsigned=True) as server:
        assert server.predict(iris[0][:2]).tolist() == forest_bundle.predict(iris[0][:2]).tolist()
    served = [e for e in audit.read(root=store) if e["event"] == "allow_unsigned" and e["action"] == "serve"]
    assert served and served[-1]["ref"] == bundle.ref
    # the CLI flag itself, and the variable a container sets
    for flag, env in ((["--allow-unsigned"], {}), ([], {"NOTEBOOK_DEPLOY_ALLOW_UNSIGNED": "true"})):
        ready = tmp_path / f"ready-{len(flag)}.json"
        command = [
            sys.executable,
            "-m",
            "notebook_deploy",
            "--store",
            str(store.root),
            "serve",
            bundle.ref,
            "--port",
            "0",
            "--ready-file",
            str(ready),
            *flag,
        ]
        process = subprocess.Popen(command, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ready.exists(), process.stderr.read() if process.poll() is not None else "not ready in time"
        finally:
            process.terminate()
            process.wait(timeout=30)
    actions = [e["action"] for e in audit.read(root=store) if e["event"] == "allow_unsigned"]
    assert actions == ["import", "serve", "serve", "serve"]  # import, nd.serve, the flag, the variable


@pytest.mark.parametrize("damage", ["flipped", "truncated", "deleted"])
def test_a_damaged_or_removed_signature_is_refused(forest_bundle, store, tmp_path, damage):
    bundle = Bundle.open(_copy(forest_bundle, tmp_path))
    signature = bundle.path / SIGNATURE_FILE
    text = signature.read_bytes()
    if damage == "flipped":  # one character of the base64 signature
        at = text.index(b'"sig": "') + 20
        signature.write_bytes(text[:at] + (b"A" if text[at : at + 1] != b"A" else b"B") + text[at + 1 :])
        expected = "does not verify"
    elif damage == "truncated":
        signature.write_bytes(text[: len(text) // 2])
        expected = "damaged"
    else:
        signature.unlink()
        expected = "it is unsigned"
    result = _cli(store, "import", str(bundle.export(tmp_path)))
    assert result.exit_code == 1 and expected in result.output, result.output


def test_the_bundle_signature_verifies_with_openssl_and_names_the_manifest_digest(forest_bundle, tmp_path):
    envelope = json.loads((forest_bundle.path / SIGNATURE_FILE).read_bytes())
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    # DSSE's pre-authentication encoding, written out here from the specification
    pae = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)
    (tmp_path / "payload").write_bytes(pae)
    (tmp_path / "sig").write_bytes(base64.b64decode(envelope["signatures"][0]["sig"]))
    (tmp_path / "pub.pem").write_bytes(SigningKey.load().public_pem())
    verified = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "payload", "-sigfile", "sig"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verified.returncode == 0 and "Signature Verified Successfully" in verified.stdout, verified.stderr
    signed = json.loads(payload)
    manifest = json.loads((forest_bundle.path / "bundle.json").read_bytes())
    unsealed = {k: v for k, v in manifest.items() if k != "digest"}
    digest = hashlib.sha256(canonical_json(unsealed)).hexdigest()
    assert signed["subject"] == [{"name": forest_bundle.ref, "digest": {"sha256": digest}}]
    assert manifest["digest"] == f"sha256:{digest}"
    assert signed == statement(forest_bundle)


def test_the_statement_links_the_notebook_recipe_data_and_lock(tmp_path):
    """A notebook capture (headless, a real kernel) with a data file: the predicate names each."""
    bundle = _headless_capture(tmp_path)
    signed = statement(bundle)
    dependencies = signed["predicate"]["buildDefinition"]["resolvedDependencies"]
    by_kind: dict[str, list] = {}
    for entry in dependencies:
        by_kind.setdefault(entry["annotations"]["kind"], []).append(entry)
    recipe_file = bundle.path / "recipe.ipynb"
    assert by_kind["recipe"][0]["digest"] == {"sha256": hashlib.sha256(recipe_file.read_bytes()).hexdigest()}
    assert by_kind["recipe"][0]["uri"].endswith("train.ipynb")
    data = tmp_path / "work" / "data.csv"
    assert by_kind["data"][0]["name"] == "data.csv"
    assert by_kind["data"][0]["digest"] == {"sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    lock = bundle.path / "requirements.txt"
    assert by_kind["lock"][0]["digest"] == {"sha256": hashlib.sha256(lock.read_bytes()).hexdigest()}
    assert any(e["uri"].startswith("pkg:pypi/scikit-learn@") for e in by_kind["package"])
    assert signed["predicate"]["buildDefinition"]["externalParameters"]["notebook"]["path"].endswith("train.ipynb")


def _headless_capture(tmp_path: Path) -> Bundle:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    work = tmp_path / "work"
    work.mkdir()
    rows = "\n".join(f"{i},{i * 2 % 7},{i % 2}" for i in range(40))
    (work / "data.csv").write_text("a,b,y\n" + rows + "\n")
    cells = [
        "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
        "frame = pd.read_csv('data.csv')",
        "clf = LogisticRegression().fit(frame[['a', 'b']], frame['y'])",
    ]
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), work / "train.ipynb")
    return nd.deploy_notebook(
        work / "train.ipynb", "clf", sample="frame[['a', 'b']].head(3)", store=nd.Store(tmp_path / "store")
    )


def test_ray_replicas_check_the_archive_against_the_signers_keys_they_are_given(forest_bundle, tmp_path, monkeypatch):
    """A replica has no trust store of its own: deploy passes the keys that signed the bundle."""
    from notebook_deploy.serving.settings import ServeSettings
    from notebook_deploy.targets.ray import BundleReplica, _archive_bytes

    monkeypatch.setenv("NOTEBOOK_DEPLOY_TRUST_DIR", str(tmp_path / "empty"))  # as on another machine
    archive = _archive_bytes(forest_bundle)
    with pytest.raises(UntrustedBundleError, match="which is not trusted"):
        BundleReplica(archive, ServeSettings().to_json())
    signer = SigningKey.load()
    replica = BundleReplica(archive, ServeSettings(trusted_keys=(signer.public_pem().decode(),)).to_json())
    assert replica.bundle.manifest["digest"] == forest_bundle.manifest["digest"]
    stranger = SigningKey.create(tmp_path / "stranger.pem")
    with pytest.raises(UntrustedBundleError, match="which is not trusted"):
        BundleReplica(archive, ServeSettings(trusted_keys=(stranger.public_pem().decode(),)).to_json())


def test_an_image_carries_the_keys_that_signed_its_bundle_and_refuses_an_untrusted_one(forest_bundle, tmp_path):
    from notebook_deploy.image.build import TRUST_DIR, image_spec
    from notebook_deploy.image.context import dockerfile

    text = dockerfile(forest_bundle, "python:3.11-slim", "linux/amd64")
    assert f"COPY trusted-keys {TRUST_DIR}" in text and f'NOTEBOOK_DEPLOY_TRUST_DIR="{TRUST_DIR}"' in text
    bundle = Bundle.open(_copy(forest_bundle, tmp_path))
    (bundle.path / SIGNATURE_FILE).unlink()
    with pytest.raises(UntrustedBundleError, match="refusing to build an image of .* it is unsigned"):
        image_spec(bundle, tmp_path / "work")  # before any wheel is downloaded
    assert not (tmp_path / "work").exists()
