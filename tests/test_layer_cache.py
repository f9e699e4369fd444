"""The layer cache (notebook_deploy.image.cache): layers kept by key, found again whole, pruned."""

from __future__ import annotations

import os
import time

from click.testing import CliRunner

from notebook_deploy.cli import cli
from notebook_deploy.image.cache import ENTRY_FILE, LAYER_FILE, LayerCache, layer_key
from notebook_deploy.image.layers import Entry, build_layer


def _layer(tmp_path, text: bytes):
    return build_layer([Entry("opt/site/a.py", text)], tmp_path / f"layer-{len(text)}.tar.gz")


def test_a_kept_layer_is_found_again_with_its_digests_and_packages(tmp_path):
    cache = LayerCache(tmp_path / "cache")
    facts = {"kind": "dependencies", "requirements": ["numpy==2.0.0"], "python": "3.11", "platform": "linux/amd64"}
    key = layer_key(facts)
    assert cache.get(key) is None
    built = _layer(tmp_path, b"print(1)\n")
    kept = cache.put(key, built, [("numpy", "2.0.0")], facts)
    assert kept.layer.path.parent == tmp_path / "cache" / key  # the kept copy, not the build's scratch file
    built.path.unlink()
    found = cache.get(key)
    assert found is not None
    assert (found.layer.digest, found.layer.diff_id, found.layer.size) == (built.digest, built.diff_id, built.size)
    assert found.layer.path.read_bytes() == kept.layer.path.read_bytes()
    assert found.packages == [("numpy", "2.0.0")]


def test_the_key_changes_with_any_fact():
    facts = {"kind": "dependencies", "requirements": ["a==1"], "python": "3.11", "platform": "linux/amd64"}
    keys = {
        layer_key(facts),
        layer_key({**facts, "requirements": ["a==2"]}),
        layer_key({**facts, "python": "3.12"}),
        layer_key({**facts, "platform": "linux/arm64"}),
    }
    assert len(keys) == 4
    assert layer_key(dict(reversed(list(facts.items())))) == layer_key(facts)  # order does not matter


def _bytes(folder) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_truncated_or_partial_entry_counts_as_absent_and_is_pruned(tmp_path):
    cache = LayerCache(tmp_path / "cache")
    kept = cache.put("k1", _layer(tmp_path, b"x" * 1000), [], {"kind": "runtime"})
    kept.layer.path.write_bytes(b"cut short")  # a crash, a disk full, a hand edit
    assert cache.get("k1") is None and cache.entries() == []
    (tmp_path / "cache" / "k2").mkdir()
    (tmp_path / "cache" / "k2" / LAYER_FILE).write_bytes(b"no entry file")  # an entry never finished
    everything = _bytes(tmp_path / "cache")
    assert cache.prune(older_than=3600) == (2, everything)  # damaged ones go whatever their age
    assert list((tmp_path / "cache").iterdir()) == []


def test_prune_older_than_keeps_what_was_used_recently(tmp_path):
    cache = LayerCache(tmp_path / "cache")
    old = cache.put("old", _layer(tmp_path, b"old"), [], {"kind": "runtime"})
    cache.put("new", _layer(tmp_path, b"new!"), [], {"kind": "runtime"})
    long_ago = time.time() - 40 * 86400
    os.utime(old.layer.path.parent / ENTRY_FILE, (long_ago, long_ago))
    old_bytes = _bytes(old.layer.path.parent)
    assert cache.prune(older_than=30 * 86400) == (1, old_bytes)
    assert [e.key for e in cache.entries()] == ["new"]
    cache.get("new")
    assert cache.prune()[0] == 1 and cache.entries() == []


def test_the_cli_lists_and_prunes_the_store_cache(tmp_path, own_layer_cache):
    from notebook_deploy.image.publish import layer_cache

    store = tmp_path / "store"
    cache = layer_cache(str(store))
    assert cache.root == store / "cache" / "layers"
    runner = CliRunner()
    empty = runner.invoke(cli, ["--store", str(store), "cache", "ls"])
    assert empty.exit_code == 0 and "No layers kept" in empty.output
    cache.put(layer_key({"kind": "runtime", "files": "abc"}), _layer(tmp_path, b"rt"), [], {"kind": "runtime"})
    listed = runner.invoke(cli, ["--store", str(store), "cache", "ls"])
    assert listed.exit_code == 0, listed.output
    assert "runtime" in listed.output and "1 layer(s)" in listed.output
    pruned = runner.invoke(cli, ["--store", str(store), "cache", "prune"])
    assert pruned.exit_code == 0 and pruned.output.startswith("Removed 1 layer(s)")
    assert cache.entries() == []


def test_the_layer_cache_variable_gives_every_store_one_cache(tmp_path, monkeypatch):
    from notebook_deploy.image.cache import LAYER_CACHE_VARIABLE
    from notebook_deploy.image.publish import layer_cache

    monkeypatch.setenv(LAYER_CACHE_VARIABLE, str(tmp_path / "shared"))
    key = layer_key({"kind": "runtime", "files": "shared"})
    layer_cache(str(tmp_path / "one")).put(key, _layer(tmp_path, b"shared"), [], {"kind": "runtime"})
    found = layer_cache(str(tmp_path / "two")).get(key)
    assert found is not None and found.layer.path.is_relative_to(tmp_path / "shared")
    assert not (tmp_path / "one" / "cache").exists()
    listed = CliRunner().invoke(cli, ["--store", str(tmp_path / "two"), "cache", "ls"])
    assert listed.exit_code == 0 and "1 layer(s)" in listed.output, listed.output
