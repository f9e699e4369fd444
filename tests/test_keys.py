"""API keys: created once, stored as hashes in a 0600 file, verified in constant time; the CLI group."""

from __future__ import annotations

import json
import stat
import threading

import pytest
from click.testing import CliRunner

from notebook_deploy import audit, keys
from notebook_deploy.cli import cli
from notebook_deploy.errors import KeyStoreError
from notebook_deploy.keys import KeyStore


@pytest.fixture
def key_store(tmp_path) -> KeyStore:
    return KeyStore(root=tmp_path / "store")


def test_a_key_is_shown_once_and_only_its_hash_is_stored(key_store):
    key, record = key_store.create("predict", "dashboard")
    assert key.startswith(f"ndk_{record.id}_") and len(key) == len("ndk_") + 8 + 1 + 43
    assert (record.name, record.role) == ("dashboard", "predict")
    assert key_store.path.name == "keys.json" and key_store.path.parent.name == "store"
    text = key_store.path.read_text()
    assert key not in text and key.rsplit("_", 1)[1] not in text  # neither the key nor its secret part
    assert stat.S_IMODE(key_store.path.stat().st_mode) == 0o600
    assert not list(key_store.path.parent.glob(".keys.json.*"))  # no temporary file left behind
    entry = json.loads(text)["keys"][0]
    assert entry["hash"].startswith("sha256:") and entry["id"] == record.id
    assert key_store.list() == [record]


def test_verify_accepts_the_key_and_nothing_else(key_store):
    key, record = key_store.create("admin")
    assert key_store.verify(key) == record
    assert record.name == f"admin-{record.id}"
    wrong_secret = key[:-1] + ("A" if key[-1] != "A" else "B")
    for candidate in (wrong_secret, f"ndk_ffffffff_{key.rsplit('_', 1)[1]}", key + "x", key[4:], "", "Bearer " + key):
        assert key_store.verify(candidate) is None, candidate
    assert key_store.verify(None) is None  # type: ignore[arg-type]


def test_hashes_are_compared_with_compare_digest_even_for_unknown_ids(key_store, monkeypatch):
    key, _ = key_store.create("predict")
    calls = []
    real = keys.hmac.compare_digest
    monkeypatch.setattr(keys.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert key_store.verify(key) is not None
    assert key_store.verify(key[:-2] + "xx") is None
    assert key_store.verify("ndk_00000000_" + "a" * 43) is None  # unknown id: a dummy hash, the same path
    assert len(calls) == 3


def test_revoke_removes_the_key_and_other_instances_see_it_without_restart(key_store):
    server_side = KeyStore(key_store.path)  # as a running server holds it
    key, record = key_store.create("predict")
    other, _ = key_store.create("admin")
    assert server_side.verify(key) == record
    assert key_store.revoke(record.id) == record
    assert server_side.verify(key) is None  # the file changed: re-read
    assert server_side.verify(other) is not None
    assert [k.id for k in key_store.list()] == [parse_id(other)]
    with pytest.raises(KeyStoreError, match=r"no key with id 'nope'.*keys list"):
        key_store.revoke("nope")
    key_store.revoke(other)  # a whole key names its id too
    assert key_store.list() == [] and len(server_side) == 0


def parse_id(key: str) -> str:
    return keys.parse(key) or ""


def test_roles_are_checked(key_store):
    with pytest.raises(KeyStoreError, match="predict, admin"):
        key_store.create("root")


def test_a_damaged_key_file_lets_no_key_in(key_store, caplog):
    key, _ = key_store.create("predict")
    key_store.path.write_text("{not json")
    assert key_store.verify(key) is None
    assert "not a notebook-deploy key file" in caplog.text
    with pytest.raises(KeyStoreError, match="damaged"):
        key_store.list()


def test_the_environment_names_the_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_DEPLOY_KEYS_FILE", str(tmp_path / "mounted" / "keys.json"))
    assert KeyStore().path == tmp_path / "mounted" / "keys.json"
    assert KeyStore(tmp_path / "given.json").path == tmp_path / "given.json"


def test_concurrent_creations_keep_every_key(key_store):
    made: list[str] = []
    threads = [threading.Thread(target=lambda: made.append(key_store.create("predict")[0])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(key_store.list()) == 8 and all(key_store.verify(key) for key in made)


def test_key_changes_are_audited_without_the_key(key_store):
    key, record = key_store.create("predict", "ci")
    key_store.revoke(record.id)
    entries = audit.read(root=key_store.path.parent)
    assert [(e["event"], e["key_id"], e["role"], e["name"]) for e in entries] == [
        ("key_create", record.id, "predict", "ci"),
        ("key_revoke", record.id, "predict", "ci"),
    ]
    assert key not in (key_store.path.parent / "audit.log").read_text()


# -- the CLI ------------------------------------------------------------------------------------------


def keys_cli(store_root, *args: str, exit_code: int = 0):
    result = CliRunner().invoke(cli, ["--store", str(store_root), "keys", *args])
    assert result.exit_code == exit_code, result.output
    return result


def test_cli_create_prints_only_the_key_on_stdout(tmp_path):
    result = keys_cli(tmp_path, "create", "--role", "predict", "--name", "dashboard")
    key = result.stdout.strip()
    record = KeyStore(root=tmp_path).verify(key)
    assert record is not None and record.name == "dashboard"
    assert "only time the key is shown" in result.stderr and "Authorization: Bearer" in result.stderr
    assert key not in (tmp_path / "keys.json").read_text()


def test_cli_list_and_revoke(tmp_path):
    key = keys_cli(tmp_path, "create", "--role", "admin").stdout.strip()
    key_id = keys.parse(key)
    listing = keys_cli(tmp_path, "list").stdout
    assert "ID" in listing and key_id in listing and "admin" in listing and key not in listing
    assert f"Revoked key {key_id}" in keys_cli(tmp_path, "revoke", key_id).stdout
    assert "No keys in" in keys_cli(tmp_path, "list").stdout
    assert "no key with id" in keys_cli(tmp_path, "revoke", key_id, exit_code=1).output
    assert "'root' is not one of" in keys_cli(tmp_path, "create", "--role", "root", exit_code=2).output


def test_cli_keys_file_option_and_environment(tmp_path, monkeypatch):
    elsewhere = tmp_path / "secrets" / "keys.json"
    keys_cli(tmp_path / "store", "--keys-file", str(elsewhere), "create", "--role", "predict")
    assert len(KeyStore(elsewhere).list()) == 1
    monkeypatch.setenv("NOTEBOOK_DEPLOY_KEYS_FILE", str(elsewhere))
    assert "predict" in keys_cli(tmp_path / "store", "list").stdout


def test_cli_help_teaches_with_examples():
    for args in (
        ["keys", "--help"],
        ["keys", "create", "--help"],
        ["keys", "list", "--help"],
        ["keys", "revoke", "--help"],
    ):
        output = CliRunner().invoke(cli, args).output
        assert "Example" in output, args
    assert "--auth / --no-auth" in CliRunner().invoke(cli, ["serve", "--help"]).output
