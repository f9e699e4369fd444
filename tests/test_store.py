"""The store: references, tags, rollback, deletion, identical captures, concurrent and killed writers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.errors import BundleNotFoundError, BundleReferenceError
from notebook_deploy.store import check_name, check_tag, parse_ref

NAME = "clf"


@pytest.fixture(scope="module")
def models(iris):
    X, y = iris
    return [LogisticRegression(C=c, max_iter=1000).fit(X, y) for c in (1.0, 0.1, 0.01)]


@pytest.fixture(scope="module")
def template(models, iris, tmp_path_factory):
    """A store with three versions of ``clf``, captured in order; tests work on a copy of it."""
    store = nd.Store(tmp_path_factory.mktemp("template") / "store")
    bundles = [nd.capture(m, name=NAME, sample=iris[0][:5], store=store) for m in models]
    return store.root, [b.version for b in bundles]


@pytest.fixture
def store(template, tmp_path) -> nd.Store:
    root, _ = template
    shutil.copytree(root, tmp_path / "store")
    return nd.Store(tmp_path / "store")


@pytest.fixture
def versions(template) -> list[str]:
    return list(template[1])


def shortest_unique_prefix(version: str, others: list[str]) -> str:
    for size in range(4, 13):
        prefix = version[:size]
        if not any(o != version and o.startswith(prefix) for o in others):
            return prefix
    raise AssertionError("no unique prefix")


# -- references ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, expected",
    [
        ("clf", ("clf", "latest")),
        ("clf:latest", ("clf", "latest")),
        ("clf:prod", ("clf", "prod")),
        ("clf:0123456789ab", ("clf", "0123456789ab")),
        ("my.model_v2-x:v1.2", ("my.model_v2-x", "v1.2")),
        ("0model", ("0model", "latest")),
        ("clf:", ("clf", "latest")),
    ],
)
def test_parse_ref(ref, expected):
    assert parse_ref(ref) == expected


BAD_NAMES = ["Clf", "MyModel", "CLF", "-lead", ".lead", "_lead", "has space", "a/b", "", "modèle", "x" * 129]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_rejected(name, tmp_path):
    store = nd.Store(tmp_path / "store")
    for call in (
        lambda: check_name(name),
        lambda: parse_ref(name),
        lambda: parse_ref(f"{name}:latest"),
        lambda: store.resolve(name),
        lambda: store.tags(name),
    ):
        with pytest.raises(BundleReferenceError, match="not a valid bundle name"):
            call()


@pytest.mark.parametrize("name", BAD_NAMES[:4])
def test_capture_refuses_invalid_name_before_writing(name, tmp_path):
    store = nd.Store(tmp_path / "store")
    with pytest.raises(BundleReferenceError, match="not a valid bundle name"):
        nd.capture(lambda X: X, name=name, sample=np.zeros((1, 2)), store=store)
    assert store.names() == []
    assert not (store.root / "bundles").exists()


@pytest.mark.parametrize("name", ["a", "0", "my.model_v2-x", "x" * 128])
def test_valid_names(name):
    check_name(name)
    assert parse_ref(name) == (name, "latest")


BAD_TAGS = ["0123456789ab", "deadbeefcafe", "000000000000", "", "-x", ".x", "has space", "a:b", "a/b", "x" * 129]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_invalid_tags_are_rejected(tag, store, versions):
    with pytest.raises(BundleReferenceError, match="not a valid tag"):
        check_tag(tag)
    with pytest.raises(BundleReferenceError, match="not a valid tag"):
        store.tag(NAME, tag)
    assert store.tags(NAME) == {"latest": versions[-1]}


def test_a_version_id_is_not_a_valid_tag(store, versions):
    with pytest.raises(BundleReferenceError, match="12 hex digits"):
        store.tag(f"{NAME}:{versions[0]}", versions[1])


@pytest.mark.parametrize("tag", ["prod", "Prod", "v1.2", "_x", "0123456789a", "0123456789abc", "0123456789AB"])
def test_valid_tags(tag, store, versions):
    check_tag(tag)
    store.tag(f"{NAME}:{versions[0]}", tag)
    assert store.resolve(f"{NAME}:{tag}") == (NAME, versions[0])


# -- resolving --------------------------------------------------------------------------------------------
def test_versions_and_parents(store, versions):
    listed = store.list(NAME)
    assert [b.version for b in listed] == versions  # oldest first
    assert len(set(versions)) == 3
    assert [b.manifest["parent"] for b in listed] == [None, versions[0], versions[1]]
    assert store.names() == [NAME]
    assert store.tags(NAME) == {"latest": versions[-1]}
    assert sorted(p.name for p in (store.root / "bundles" / NAME).iterdir()) == sorted([*versions, "tags.json"])


def test_resolve_forms(store, versions):
    store.tag(f"{NAME}:{versions[0]}", "prod")
    assert store.resolve(NAME) == (NAME, versions[-1])
    assert store.resolve(f"{NAME}:latest") == (NAME, versions[-1])
    assert store.resolve(f"{NAME}:prod") == (NAME, versions[0])
    for version in versions:
        assert store.resolve(f"{NAME}:{version}") == (NAME, version)
        prefix = shortest_unique_prefix(version, versions)
        assert store.resolve(f"{NAME}:{prefix}") == (NAME, version)
    assert store.get(f"{NAME}:prod").version == versions[0]
    assert nd.load(f"{NAME}:prod", store=store).version == versions[0]
    assert nd.load(NAME, store=store.root).version == versions[-1]
    assert store.latest_version(NAME) == versions[-1]
    assert store.tags_of(store.get(f"{NAME}:{versions[0]}")) == ["prod"]


def test_prefix_shorter_than_four_digits_is_refused(store, versions):
    with pytest.raises(BundleReferenceError, match="has no tag or version"):
        store.resolve(f"{NAME}:{versions[0][:3]}")


def test_ambiguous_prefix(store, versions):
    source = store.root / "bundles" / NAME / versions[0]
    shutil.copytree(source, store.root / "bundles" / NAME / "abcd00000001")
    shutil.copytree(source, store.root / "bundles" / NAME / "abcd00000002")
    with pytest.raises(BundleReferenceError, match="ambiguous"):
        store.resolve(f"{NAME}:abcd")
    assert store.resolve(f"{NAME}:abcd00000001") == (NAME, "abcd00000001")


def test_unknown_name_says_what_exists(store, tmp_path):
    with pytest.raises(BundleReferenceError) as info:
        store.resolve("nope")
    assert "'nope'" in str(info.value)
    assert NAME in str(info.value)
    with pytest.raises(BundleReferenceError, match="none yet"):
        nd.Store(tmp_path / "empty").resolve("nope")


def test_unknown_tag_says_what_exists(store, versions):
    store.tag(f"{NAME}:{versions[0]}", "staging")
    with pytest.raises(BundleReferenceError) as info:
        store.resolve(f"{NAME}:prod")
    message = str(info.value)
    assert "'prod'" in message
    assert "latest" in message and "staging" in message


def test_unknown_full_version_is_refused(store):
    with pytest.raises(BundleReferenceError, match="has no tag or version"):
        store.resolve(f"{NAME}:ffffffffffff")


# -- tags and rollback -----------------------------------------------------------------------------------
def test_rollback_by_moving_latest(store, versions, iris):
    assert store.get(NAME).version == versions[-1]
    bundle = store.tag(f"{NAME}:{versions[0]}", "latest")
    assert bundle.version == versions[0]
    assert store.resolve(NAME) == (NAME, versions[0])
    assert store.get(NAME).version == versions[0]
    assert nd.load(NAME, store=store).version == versions[0]
    assert store.latest_version(NAME) == versions[0]
    assert json.loads((store.root / "bundles" / NAME / "tags.json").read_text()) == {"latest": versions[0]}
    # and forward again, by a prefix
    store.tag(f"{NAME}:{versions[2][:6]}", "latest")
    assert store.resolve(NAME) == (NAME, versions[2])


def test_tag_an_unknown_ref_is_refused(store, versions):
    with pytest.raises(BundleReferenceError):
        store.tag(f"{NAME}:nosuchtag", "prod")
    with pytest.raises(BundleReferenceError):
        store.tag("nope", "prod")
    assert store.tags(NAME) == {"latest": versions[-1]}


def test_untag(store, versions):
    store.tag(f"{NAME}:{versions[1]}", "prod")
    assert store.tags(NAME) == {"latest": versions[-1], "prod": versions[1]}
    store.untag(NAME, "prod")
    assert store.tags(NAME) == {"latest": versions[-1]}
    with pytest.raises(BundleReferenceError, match="'prod'"):
        store.resolve(f"{NAME}:prod")
    with pytest.raises(BundleReferenceError, match="no tag 'prod'"):
        store.untag(NAME, "prod")
    assert [b.version for b in store.list(NAME)] == versions  # untag deletes nothing


def test_untag_latest_falls_back_to_newest(store, versions):
    store.tag(f"{NAME}:{versions[0]}", "latest")
    store.untag(NAME, "latest")
    assert store.resolve(NAME) == (NAME, versions[-1])


def test_references_to_nothing_raise_not_found_and_malformed_ones_do_not(store, versions):
    for ref in ("nothing", f"{NAME}:staging", f"{NAME}:ffffffffffff"):
        with pytest.raises(BundleNotFoundError):
            store.resolve(ref)
    with pytest.raises(BundleNotFoundError):
        store.untag(NAME, "staging")
    for ref in ("Bad Name", "../clf"):
        with pytest.raises(BundleReferenceError) as malformed:
            store.resolve(ref)
        assert not isinstance(malformed.value, BundleNotFoundError)


# -- summaries -------------------------------------------------------------------------------------------
def test_summaries_give_each_name_its_tags_and_versions_newest_first(store, versions):
    store.tag(f"{NAME}:{versions[0]}", "prod")
    [summary] = store.summaries()
    assert summary["name"] == NAME and summary["tags"] == {"latest": versions[2], "prod": versions[0]}
    assert [v["version"] for v in summary["versions"]] == versions[::-1]
    assert [v["tags"] for v in summary["versions"]] == [["latest"], [], ["prod"]]
    assert summary["versions"][0] == store.get(NAME).to_dict(["latest"])


def test_details_carry_the_tags_on_the_version(store, versions):
    store.tag(f"{NAME}:{versions[2]}", "prod")
    details = store.details(NAME)
    assert details["version"] == versions[2] and details["tags"] == ["latest", "prod"]
    assert details["lock"] == store.get(NAME).lock()


# -- delete ---------------------------------------------------------------------------------------------
def test_delete_version_and_its_tags(store, versions):
    store.tag(f"{NAME}:{versions[1]}", "prod")
    store.tag(f"{NAME}:{versions[0]}", "old")
    deleted = store.delete(f"{NAME}:prod")
    assert deleted.version == versions[1]
    assert not (store.root / "bundles" / NAME / versions[1]).exists()
    assert [b.version for b in store.list(NAME)] == [versions[0], versions[2]]
    assert store.tags(NAME) == {"latest": versions[2], "old": versions[0]}
    with pytest.raises(BundleReferenceError):
        store.resolve(f"{NAME}:{versions[1]}")
    assert list((store.root / "tmp").iterdir()) == []


def test_delete_latest_falls_back_to_newest_remaining(store, versions):
    store.delete(NAME)
    assert store.tags(NAME) == {"latest": versions[1]}
    assert store.resolve(NAME) == (NAME, versions[1])
    store.delete(f"{NAME}:latest")
    assert store.resolve(NAME) == (NAME, versions[0])


def test_delete_keeps_a_rolled_back_latest(store, versions):
    store.tag(f"{NAME}:{versions[0]}", "latest")
    store.delete(f"{NAME}:{versions[2]}")
    assert store.resolve(NAME) == (NAME, versions[0])


def test_deleting_the_last_version_removes_the_name(store, versions):
    for version in versions:
        store.delete(f"{NAME}:{version}")
    assert store.names() == []
    assert store.list() == []
    assert not (store.root / "bundles" / NAME).exists()
    assert list((store.root / "tmp").iterdir()) == []
    with pytest.raises(BundleReferenceError, match="no bundle named 'clf'"):
        store.resolve(NAME)
    with pytest.raises(BundleReferenceError):
        store.delete(NAME)


# -- captures -------------------------------------------------------------------------------------------
def test_same_model_twice_is_the_same_version(store, versions, models, iris):
    before = store.get(f"{NAME}:{versions[0]}")
    again = nd.capture(models[0], name=NAME, sample=iris[0][:5], store=store)
    assert again.version == versions[0]
    assert sorted(p.name for p in (store.root / "bundles" / NAME).iterdir()) == sorted([*versions, "tags.json"])
    assert len(store.list(NAME)) == 3
    # the existing version is kept as it was
    assert again.manifest == before.manifest
    assert again.created == before.created
    assert store.get(f"{NAME}:{versions[0]}", verify=True).manifest["parent"] is None
    # and the new capture is the latest one
    assert store.resolve(NAME) == (NAME, versions[0])
    assert list((store.root / "tmp").iterdir()) == []


def test_new_model_under_a_name_gets_the_previous_latest_as_parent(store, versions, iris):
    X, y = iris
    store.tag(f"{NAME}:{versions[0]}", "latest")  # rolled back: the parent is what `clf` meant
    model = LogisticRegression(C=5.0, max_iter=1000).fit(X, y)
    bundle = nd.capture(model, name=NAME, sample=X[:5], store=store)
    assert bundle.version not in versions
    assert bundle.manifest["parent"] == versions[0]
    assert store.resolve(NAME) == (NAME, bundle.version)
    assert len(store.list(NAME)) == 4


# -- concurrent writers ---------------------------------------------------------------------------------
CONCURRENT_CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    root, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    cs = [float(c) for c in sys.argv[4].split(",")]
    import notebook_deploy as nd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    X, y = load_iris(return_X_y=True)
    models = [LogisticRegression(C=c, max_iter=1000).fit(X, y) for c in cs]
    ready.touch()
    deadline = time.time() + 120
    while not go.exists():
        if time.time() > deadline:
            sys.exit("never told to go")
        time.sleep(0.005)
    for model in models:
        print(nd.capture(model, name="shared", sample=X[:5], store=root).version, flush=True)
    """
)


def wait_until(condition, limit: float, message: str, interval: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``limit`` seconds (a bound on a
    wait for another process, not a measurement)."""
    give_up = time.monotonic() + limit
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(message)
        time.sleep(interval)


@pytest.mark.integration
def test_concurrent_captures_into_one_store(tmp_path):
    root = tmp_path / "store"
    go = tmp_path / "go"
    groups = [[0.5, 0.05, 0.005], [0.4, 0.04, 0.004], [0.3, 0.03, 0.003]]
    processes = []
    for i, cs in enumerate(groups):
        ready = tmp_path / f"ready-{i}"
        args = [sys.executable, "-c", CONCURRENT_CHILD, str(root), str(ready), str(go), ",".join(map(str, cs))]
        processes.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:

        def all_ready() -> bool:
            assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
            return all((tmp_path / f"ready-{i}").exists() for i in range(len(groups)))

        wait_until(all_ready, 120, "children never got ready")
        go.touch()
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err
    reported = [line for out, _ in outputs for line in out.split()]
    assert len(reported) == 9
    assert len(set(reported)) == 9  # nine distinct models, nine versions

    store = nd.Store(root)
    assert store.names() == ["shared"]
    listed = store.list("shared")
    assert sorted(b.version for b in listed) == sorted(reported)
    for bundle in listed:
        nd.Bundle.open(bundle.path, verify=True)
        store.get(f"shared:{bundle.version}", verify=True)
    tags = json.loads((root / "bundles" / "shared" / "tags.json").read_text())
    assert set(tags) == {"latest"}
    assert tags["latest"] in reported
    assert store.get("shared").version == tags["latest"]
    assert sorted(p.name for p in (root / "bundles" / "shared").iterdir()) == sorted([*reported, "tags.json"])
    assert list((root / "tmp").iterdir()) == []


# -- a capture killed halfway ---------------------------------------------------------------------------
BIG_MODEL = textwrap.dedent(
    """
    import numpy as np


    class Big:
        def __init__(self, size):
            self.blob = np.frombuffer(np.random.default_rng(0).bytes(size), dtype=np.uint8)

        def predict(self, X):
            return np.asarray(X).sum(axis=1)
    """
)

KILLED_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    import notebook_deploy as nd
    from bigmodel import Big
    big = Big(300 * 1024 * 1024)
    nd.capture(big, name="big", sample=np.zeros((2, 3)), store=sys.argv[1])
    print("finished", flush=True)
    """
)


@pytest.mark.integration
def test_killed_capture_leaves_nothing_visible(tmp_path, iris):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "bigmodel.py").write_text(BIG_MODEL)
    root = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(root), str(helpers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so that a probe it started dies with it
    )
    try:

        def staging_appeared() -> bool:
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"the capture ended before it was killed: {out!r} {err!r}")
            return (root / "tmp").is_dir() and any((root / "tmp").glob("stage-*"))

        wait_until(staging_appeared, 180, "no staging directory appeared", interval=0.002)
        staged = list((root / "tmp").glob("stage-*"))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert [p.name for p in staged] == [p.name for p in (root / "tmp").glob("stage-*")]
    assert staged[0].name.startswith(f"stage-{process.pid}-")

    store = nd.Store(root)
    assert store.list() == []
    assert store.names() == []
    with pytest.raises(BundleReferenceError):
        store.resolve("big")

    X, y = iris
    small = LogisticRegression(max_iter=1000).fit(X, y)
    bundle = nd.capture(small, name="small", sample=X[:5], store=store)
    bundle.check_integrity()
    assert store.names() == ["small"]
    assert [b.ref for b in store.list()] == [bundle.ref]
    assert not staged[0].exists()
    assert list((root / "tmp").iterdir()) == []


# -- audit, damage, served versions -------------------------------------------------------------------------
def test_tag_untag_and_rm_are_audited(store, versions):
    from notebook_deploy import audit

    store.tag(f"{NAME}:{versions[0]}", "prod")
    store.untag(NAME, "prod")
    store.delete(f"{NAME}:{versions[1]}")
    events = [
        (e["event"], e.get("tag"), e["version"]) for e in audit.read(root=store) if e["event"] in ("tag", "untag", "rm")
    ]
    assert events == [("tag", "prod", versions[0]), ("untag", "prod", versions[0]), ("rm", None, versions[1])]


def test_one_damaged_version_or_tags_file_does_not_hide_the_rest(store, versions):
    (store.root / "bundles" / NAME / versions[0] / "bundle.json").write_text("{broken")
    (store.root / "bundles" / NAME / versions[1] / "bundle.json").write_text('{"format": 1, "files": {}}')
    assert [b.version for b in store.list()] == [versions[2]]
    damaged = {d["version"]: d["reason"] for d in store.damaged()}
    assert "is not valid JSON" in damaged[versions[0]] and f"not of {NAME}:{versions[1]}" in damaged[versions[1]]
    (summary,) = store.summaries()
    assert [v["version"] for v in summary["versions"]] == [versions[2]] and len(summary["damaged"]) == 2
    (store.root / "bundles" / NAME / "tags.json").write_bytes(b"\xff\xfe")
    (summary,) = store.summaries()
    assert summary["tags"] == {} and summary["damaged"][-1]["version"] == "tags.json"
    with pytest.raises(nd.errors.BundleIntegrityError, match="tags.json: cannot be read"):
        store.tag(f"{NAME}:{versions[2]}", "prod")  # a write does not overwrite what it cannot read


def test_tags_are_flushed_to_disk(store, versions, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    store.tag(f"{NAME}:{versions[0]}", "prod")  # a spy only: a power cut cannot be made here
    assert any(path.endswith(".json") and ".tags." in path for path in synced)  # the file, before its rename
    assert str(store.root / "bundles" / NAME) in synced  # and the rename, in its folder


def rm_in_another_process(store, ref: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notebook_deploy", "--store", str(store.root), "rm", ref],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_served_version_cannot_be_deleted_from_another_process(store, versions):
    bundle = store.get(f"{NAME}:{versions[0]}")
    with store.serving(bundle, "http://127.0.0.1:8123"):
        refused = rm_in_another_process(store, bundle.ref)
        assert refused.returncode == 1
        assert (
            f"{bundle.ref} is served by the local server at http://127.0.0.1:8123 (process {os.getpid()})"
            in refused.stderr
        )
        assert store.get(bundle.ref).version == bundle.version
    assert rm_in_another_process(store, bundle.ref).returncode == 0  # the server has ended


def test_a_pin_left_by_a_killed_server_is_ignored(store, versions):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pins = store.root / "serving" / NAME
    pins.mkdir(parents=True)
    (pins / f"{versions[0]}.{dead.pid}.json").write_text(json.dumps({"pid": dead.pid, "url": "http://x"}))
    store.delete(f"{NAME}:{versions[0]}")
    assert not any(pins.iterdir())


@pytest.mark.integration
def test_a_running_server_pins_its_version(store, versions, iris):
    bundle = store.get(f"{NAME}:{versions[0]}")
    with nd.serve(bundle.ref, store=store, workers=2) as server:
        refused = rm_in_another_process(store, bundle.ref)
        assert refused.returncode == 1 and server.url in refused.stderr
        assert server.predict(iris[0][:2]).tolist() == bundle.predict(iris[0][:2]).tolist()
    assert rm_in_another_process(store, bundle.ref).returncode == 0
