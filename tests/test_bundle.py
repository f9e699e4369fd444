"""The bundle format: verification of every file, export and import, identity and display."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.bundle import content_version
from notebook_deploy.errors import BundleIntegrityError

BUNDLE_FILES = [
    "bundle.json",
    "environment.json",
    "model.pkl",
    "provenance.dsse.json",
    "reference.json",
    "requirements.txt",
    "sample.json",
]
SEALED_FILES = [f for f in BUNDLE_FILES if f != "provenance.dsse.json"]  # the signature is checked by test_trust


@pytest.fixture(scope="module")
def model(iris):
    X, y = iris
    return LogisticRegression(max_iter=500).fit(X, y)


@pytest.fixture(scope="module")
def captured(model, iris, tmp_path_factory) -> nd.Bundle:
    """One capture for the whole module; tests that damage a bundle work on a copy of its directory."""
    store = nd.Store(tmp_path_factory.mktemp("bundle-store"))
    return nd.capture(model, name="iris-clf", sample=iris[0][:5], store=store)


@pytest.fixture
def copy(captured, tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(captured.path, target)
    return target


def flip_middle_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


def open_both_ways(path: Path) -> list[BundleIntegrityError]:
    """``nd.load(path)`` and ``Bundle.open(str(path))`` must each refuse; return both errors."""
    errors = []
    for opener in (lambda: nd.load(path), lambda: nd.Bundle.open(str(path))):
        with pytest.raises(BundleIntegrityError) as info:
            opener()
        errors.append(info.value)
    return errors


# -- a fresh bundle ------------------------------------------------------------------------------------
def test_fresh_bundle_has_the_documented_files(captured):
    assert sorted(p.name for p in captured.path.iterdir()) == BUNDLE_FILES
    assert sorted(captured.manifest["files"]) == [
        f for f in BUNDLE_FILES if f not in ("bundle.json", "provenance.dsse.json")
    ]


def test_fresh_bundle_verifies(captured, copy):
    captured.check_integrity()
    for bundle in (nd.Bundle.open(copy), nd.load(copy), nd.load(str(copy))):
        assert bundle.ref == captured.ref
        assert bundle.manifest == captured.manifest


def test_manifest_is_sealed(captured):
    manifest = json.loads((captured.path / "bundle.json").read_text())
    assert manifest["version"] == captured.version == content_version(manifest)
    assert len(captured.version) == 12 and int(captured.version, 16) >= 0
    assert manifest["digest"].startswith("sha256:")
    assert manifest["name"] == "iris-clf"
    assert captured.ref == f"iris-clf:{captured.version}"


# -- damage is found, and the message names the file -------------------------------------------------
@pytest.mark.parametrize("name", SEALED_FILES)
def test_one_changed_byte_in_any_file_is_found(copy, name):
    flip_middle_byte(copy / name)
    for error in open_both_ways(copy):
        assert name in str(error)
        assert Path(error.path).name == name


def test_changed_byte_found_when_loading_by_reference(captured, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(captured.path.parents[2], root)
    store = nd.Store(root)
    flip_middle_byte(root / "bundles" / captured.name / captured.version / "model.pkl")
    with pytest.raises(BundleIntegrityError, match="model.pkl"):
        nd.load(captured.name, store=store)
    with pytest.raises(BundleIntegrityError, match="model.pkl"):
        store.get(captured.ref)
    assert store.get(captured.ref, verify=False).version == captured.version


def test_reformatted_manifest_is_refused(copy):
    # Same JSON content, other whitespace: the manifest must be byte-for-byte canonical.
    manifest = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps(manifest, sort_keys=True))
    for error in open_both_ways(copy):
        assert "bundle.json" in str(error)


def test_edited_manifest_with_recomputed_file_hash_is_refused(copy):
    # Someone swaps model.pkl and updates its hash in bundle.json: the manifest digest no longer holds.
    (copy / "model.pkl").write_bytes(b"not the model")
    manifest = json.loads((copy / "bundle.json").read_text())
    from notebook_deploy.bundle import canonical_json, file_digest

    manifest["files"]["model.pkl"] = file_digest(copy / "model.pkl")
    (copy / "bundle.json").write_bytes(canonical_json(manifest))
    for error in open_both_ways(copy):
        assert "bundle.json" in str(error)


@pytest.mark.parametrize("keep", [0, 1, 0.5], ids=["empty", "one-byte", "half"])
def test_truncated_model_is_found(copy, keep):
    file = copy / "model.pkl"
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    for error in open_both_ways(copy):
        assert "model.pkl" in str(error)


@pytest.mark.parametrize("name", SEALED_FILES)
def test_deleted_file_is_found(copy, name):
    (copy / name).unlink()
    for error in open_both_ways(copy):
        assert name in str(error)
        assert "missing" in str(error)


@pytest.mark.parametrize("name", ["notes.txt", ".hidden", "model.pkl.bak"])
def test_added_file_is_found(copy, name):
    (copy / name).write_text("added after capture")
    for error in open_both_ways(copy):
        assert name in str(error)
        assert "not listed" in str(error)


def test_added_directory_is_found(copy):
    (copy / "extra").mkdir()
    for error in open_both_ways(copy):
        assert "extra" in str(error)


def test_open_without_verify_skips_hashing(copy):
    flip_middle_byte(copy / "model.pkl")
    bundle = nd.Bundle.open(copy, verify=False)
    with pytest.raises(BundleIntegrityError, match="model.pkl"):
        bundle.check_integrity()


# -- export and import -----------------------------------------------------------------------------------
def test_export_then_import_into_another_store(captured, tmp_path):
    archive = captured.export(tmp_path)
    assert archive == tmp_path / f"{captured.name}-{captured.version}.tar.gz"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == BUNDLE_FILES
    other = nd.Store(tmp_path / "other-store")
    imported = other.import_archive(archive)
    assert imported.ref == captured.ref
    assert imported.path == other.root / "bundles" / captured.name / captured.version
    imported.check_integrity()
    reopened = other.get(captured.name)
    assert reopened.ref == captured.ref
    assert other.tags(captured.name) == {"latest": captured.version}
    for name in BUNDLE_FILES:
        assert (imported.path / name).read_bytes() == (captured.path / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_export_to_a_file_name(captured, tmp_path):
    target = tmp_path / "mine.tar.gz"
    assert captured.export(target) == target
    assert nd.Store(tmp_path / "s").import_archive(target).ref == captured.ref


def test_import_without_tagging_latest(captured, tmp_path):
    archive = captured.export(tmp_path)
    other = nd.Store(tmp_path / "other-store")
    other.import_archive(archive, tag_latest=False)
    assert other.tags(captured.name) == {}
    assert other.resolve(captured.name) == (captured.name, captured.version)


def test_exports_are_byte_identical(captured, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = captured.export(tmp_path / "one")
    second = captured.export(tmp_path / "two")
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()
    # and so is the export of the imported copy, whose files have other modification times
    imported = nd.Store(tmp_path / "other-store").import_archive(first)
    (tmp_path / "three").mkdir()
    third = imported.export(tmp_path / "three")
    assert third.read_bytes() == first.read_bytes()


def test_export_is_reproducible_across_processes(captured, tmp_path):
    # The archive must not depend on who wrote it: the gzip header must not carry the temporary
    # file name (which holds the writer's pid).
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    here = captured.export(tmp_path / "here")
    code = "import sys, notebook_deploy as nd; nd.Bundle.open(sys.argv[1]).export(sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(captured.path), str(tmp_path / "there")], check=True, timeout=120)
    there = tmp_path / "there" / here.name
    assert here.read_bytes()[:64] == there.read_bytes()[:64]
    assert here.read_bytes() == there.read_bytes()


def test_export_bytes_do_not_depend_on_the_file_name(captured, tmp_path):
    first = captured.export(tmp_path / "a.tar.gz")
    second = captured.export(tmp_path / "b.tar.gz")
    assert first.read_bytes() == second.read_bytes()


def make_archive(captured: nd.Bundle, path: Path, extra: tarfile.TarInfo, data: bytes, first: bool) -> Path:
    """A gzip tar of the real bundle files plus one ``extra`` member, before or after them."""
    with tarfile.open(path, "w:gz") as tar:

        def add_extra():
            tar.addfile(extra, io.BytesIO(data) if extra.isfile() else None)

        if first:
            add_extra()
        for name in BUNDLE_FILES:
            tar.add(captured.path / name, arcname=name)
        if not first:
            add_extra()
    return path


def bad_member(kind: str, tmp_path: Path) -> tuple[tarfile.TarInfo, bytes]:
    data = b"evil"
    if kind == "parent":
        info = tarfile.TarInfo("../evil.txt")
    elif kind == "deep-parent":
        info = tarfile.TarInfo("../../../evil.txt")
    elif kind == "subdirectory-file":
        info = tarfile.TarInfo("sub/evil.txt")
    elif kind == "dot-slash":
        info = tarfile.TarInfo("./evil.txt")
    elif kind == "absolute":
        info = tarfile.TarInfo(str(tmp_path / "outside" / "evil.txt"))
    elif kind == "directory":
        info = tarfile.TarInfo("sub")
        info.type = tarfile.DIRTYPE
        return info, b""
    elif kind == "symlink":
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../evil.txt"
        return info, b""
    else:
        raise AssertionError(kind)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("first", [True, False], ids=["bad-member-first", "bad-member-last"])
@pytest.mark.parametrize(
    "kind", ["parent", "deep-parent", "subdirectory-file", "dot-slash", "absolute", "directory", "symlink"]
)
def test_archive_with_unsafe_member_is_refused(captured, tmp_path, kind, first):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    (tmp_path / "outside").mkdir()  # so that an absolute member could be written if it were let through
    info, data = bad_member(kind, tmp_path)
    archive = make_archive(captured, work / "bad.tar.gz", info, data, first)
    root = work / "store"
    store = nd.Store(root)
    with pytest.raises(BundleIntegrityError) as error:
        store.import_archive(archive)
    assert "bad.tar.gz" in str(error.value)
    assert store.names() == [] and store.list() == []
    assert not (root / "bundles").exists() or not any((root / "bundles").iterdir())
    assert not (root / "tmp").exists() or not any((root / "tmp").iterdir())
    assert not [p for p in tmp_path.rglob("evil.txt")]
    assert not [p for p in tmp_path.rglob("link")]


def test_archive_with_changed_file_is_refused(captured, tmp_path):
    copy_dir = tmp_path / "copy"
    shutil.copytree(captured.path, copy_dir)
    flip_middle_byte(copy_dir / "sample.json")
    with tarfile.open(tmp_path / "changed.tar.gz", "w:gz") as tar:
        for name in BUNDLE_FILES:
            tar.add(copy_dir / name, arcname=name)
    store = nd.Store(tmp_path / "store")
    with pytest.raises(BundleIntegrityError, match="sample.json"):
        store.import_archive(tmp_path / "changed.tar.gz")
    assert store.names() == []
    assert not any((store.root / "tmp").iterdir())


@pytest.mark.parametrize(
    "content", [b"", b"not an archive at all", b"\x1f\x8b\x08\x00garbage"], ids=["empty", "text", "bad-gzip"]
)
def test_unreadable_archive_is_refused(tmp_path, content):
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(content)
    store = nd.Store(tmp_path / "store")
    with pytest.raises(BundleIntegrityError, match="junk.tar.gz"):
        store.import_archive(archive)
    assert store.names() == []


def test_archive_missing_a_file_is_refused(captured, tmp_path):
    with tarfile.open(tmp_path / "partial.tar.gz", "w:gz") as tar:
        for name in BUNDLE_FILES:
            if name != "requirements.txt":
                tar.add(captured.path / name, arcname=name)
    store = nd.Store(tmp_path / "store")
    with pytest.raises(BundleIntegrityError, match="requirements.txt"):
        store.import_archive(tmp_path / "partial.tar.gz")
    assert store.names() == []


# -- identity ------------------------------------------------------------------------------------------
def test_content_version_ignores_created_and_parent(captured):
    manifest = dict(captured.manifest)
    assert content_version(manifest) == captured.version
    later = {**manifest, "created": "2001-01-01T00:00:00+00:00", "parent": "0123456789ab"}
    assert content_version(later) == captured.version
    assert content_version({k: v for k, v in manifest.items() if k not in ("created", "parent")}) == captured.version


@pytest.mark.parametrize(
    "change",
    [
        {"name": "another-name"},
        {"labels": {"team": "x"}},
        {"requirements": ["scikit-learn==0.1"]},
    ],
    ids=["name", "labels", "requirements"],
)
def test_content_version_follows_content(captured, change):
    assert content_version({**captured.manifest, **change}) != captured.version


def test_content_version_follows_file_hashes(captured):
    files = dict(captured.manifest["files"])
    files["model.pkl"] = "sha256:" + "0" * 64
    assert content_version({**captured.manifest, "files": files}) != captured.version


# -- using a bundle ------------------------------------------------------------------------------------
def test_predict_equals_the_models_own(captured, copy, model, iris):
    X = iris[0][::7]
    bundle = nd.Bundle.open(copy)
    np.testing.assert_array_equal(bundle.predict(X), model.predict(X))
    np.testing.assert_array_equal(bundle.predict(X, method="predict_proba"), model.predict_proba(X))
    assert bundle.model is bundle.model  # unpickled once
    assert type(bundle.model) is LogisticRegression


def test_predict_refuses_unknown_method(captured):
    with pytest.raises(ValueError, match="transform"):
        captured.predict(np.zeros((1, 4)), method="transform")


def test_bundle_accessors(captured, iris, model):
    assert captured.methods[0] == "predict"
    assert "predict_proba" in captured.methods
    assert any(r.startswith("scikit-learn==") for r in captured.requirements)
    assert any(line.startswith("scikit-learn==") for line in captured.lock())
    assert captured.input_schema.to_dict() == {
        "type": "tensor",
        "kind": "float",
        "dtype": "float64",
        "shape": [4],
        "domain": {"nullable": False, "limit": None},  # LogisticRegression refuses NaN
    }
    assert captured.sample["instances"] == iris[0][:5].tolist()
    assert captured.sample["outputs"]["predict"] == model.predict(iris[0][:5]).tolist()
    assert captured.size == sum((captured.path / n).stat().st_size for n in BUNDLE_FILES)
    assert isinstance(captured.environment(), dict)


def test_to_dict_and_details_are_json_ready(captured):
    assert captured.to_dict(["latest"]) == {
        "name": "iris-clf",
        "version": captured.version,
        "ref": captured.ref,
        "created": captured.created,
        "tags": ["latest"],
        "model_type": "sklearn.linear_model._logistic.LogisticRegression",
        "methods": captured.methods,
        "size": captured.size,
    }
    details = captured.details()
    assert json.loads(json.dumps(details)) == details
    assert details["tags"] == [] and details["recipe"] is None and captured.recipe() is None
    assert details["manifest"] == captured.manifest and details["lock"] == captured.lock()
    assert details["requirements"] == captured.requirements and details["warnings"] == captured.warnings
    assert details["schema"]["input"] == {
        "description": captured.input_schema.describe(),
        "json_schema": captured.input_schema.json_schema(),
    }
    assert set(details["schema"]["outputs"]) == set(captured.methods)
    assert details["sample"] == captured.sample
    assert details["reference"]["rows"] == 5
    assert details["reference"]["features"] == [{"name": str(i), "kind": "numeric"} for i in range(4)]


def test_repr_str_and_html_mention_the_ref(captured):
    assert captured.ref in repr(captured)
    assert "LogisticRegression" in repr(captured)
    assert captured.ref in str(captured)
    html = captured._repr_html_()
    assert captured.ref in html
    assert html.lstrip().startswith("<")


def test_bundles_compare_by_ref_and_path(captured, copy):
    same = nd.Bundle.open(captured.path)
    assert same == captured and hash(same) == hash(captured)
    assert nd.Bundle.open(copy) != captured


def test_every_lazy_export_is_what_it_names_even_after_its_module_was_imported():
    # A submodule imported before the name is looked up becomes an attribute of the package: an export
    # named like its module (nd.verify from notebook_deploy.verify) then turned into the module.
    script = (
        "import importlib, inspect, notebook_deploy as nd\n"
        "for module in set(nd._EXPORTS.values()):\n"
        "    importlib.import_module(module, 'notebook_deploy')\n"
        "print(sorted(n for n in nd._EXPORTS if inspect.ismodule(getattr(nd, n))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- bounds on archives from elsewhere ----------------------------------------------------------------------
class Zeros(io.RawIOBase):
    """``size`` zero bytes, read in chunks: a huge member is written without holding it in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


@pytest.fixture(scope="module")
def bomb(captured, tmp_path_factory) -> Path:
    """A real bundle's files plus a 1 GiB member of zeros, gzip'd to about 1 MB."""
    archive = tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name in BUNDLE_FILES:
            tar.add(captured.path / name, arcname=name)
        info = tarfile.TarInfo("weights.bin")
        info.size = 1 << 30
        tar.addfile(info, io.BufferedReader(Zeros(info.size), 1 << 20))
    return archive


def test_a_small_archive_holding_a_huge_member_is_refused_without_unpacking_it(bomb, tmp_path):
    assert bomb.stat().st_size < 8 << 20
    script = (
        "import sys\nimport notebook_deploy as nd\nfrom notebook_deploy.errors import BundleIntegrityError\n"
        "try:\n    nd.Store(sys.argv[2]).import_archive(sys.argv[1])\nexcept BundleIntegrityError as error:\n"
        "    print(error)\nprint('maxrss', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bomb), str(tmp_path / "store")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    message, peak = result.stdout.strip().rsplit("\n", 1)
    assert "weights.bin" in message and "over the limit for an archive of its size" in message
    # KiB: the 1 GiB member was never read into memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    # from the forking process (pytest, large once torch is loaded) into the child
    assert int(peak.split()[1]) < 400 * 1024
    assert not any((tmp_path / "store" / "tmp").iterdir()) and nd.Store(tmp_path / "store").names() == []


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"members": 3}, "holds more than 3 files"),
        ({"member_bytes": 100}, "over the limit of 100 bytes a file"),
        ({"total_bytes": 1000}, "unpacks to more than 1000 bytes"),
    ],
)
def test_archive_limits(captured, tmp_path, limits, expected):
    from notebook_deploy.bundle import ArchiveLimits, extract_archive

    archive = captured.export(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(BundleIntegrityError, match=expected):
        extract_archive(archive, tmp_path / "out", ArchiveLimits(**limits))


def test_an_archive_with_a_member_twice_is_refused(captured, tmp_path):
    with tarfile.open(tmp_path / "twice.tar.gz", "w:gz") as tar:
        for name in BUNDLE_FILES + ["model.pkl"]:
            tar.add(captured.path / name, arcname=name)
    with pytest.raises(BundleIntegrityError, match="holds 'model.pkl' twice"):
        nd.Store(tmp_path / "store").import_archive(tmp_path / "twice.tar.gz")


def resealed(manifest: dict, folder: Path) -> None:
    """Write ``manifest`` to ``folder`` with a version and digest that hold, as the project's sealing does."""
    import hashlib

    from notebook_deploy.bundle import canonical_json

    manifest = {k: v for k, v in manifest.items() if k != "digest"}
    manifest["version"] = content_version(manifest)
    manifest["digest"] = "sha256:" + hashlib.sha256(canonical_json(manifest)).hexdigest()
    (folder / "bundle.json").write_bytes(canonical_json(manifest))


@pytest.mark.parametrize("name", ["../outside.txt", "ABSOLUTE", "..", "bundle.json"])
def test_a_manifest_naming_a_file_outside_the_bundle_is_refused(captured, tmp_path, name):
    from notebook_deploy.bundle import file_digest

    folder = tmp_path / "bundle"
    shutil.copytree(captured.path, folder)
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the bundle")
    name = str(outside) if name == "ABSOLUTE" else name
    target = folder / "bundle.json" if name == "bundle.json" else (outside if name != ".." else folder.parent)
    digest = file_digest(target) if target.is_file() else "sha256:" + "0" * 64
    resealed({**captured.manifest, "files": {**captured.manifest["files"], name: digest}}, folder)
    with pytest.raises(BundleIntegrityError, match="not a plain file name of a bundle|lists itself"):
        nd.Bundle.open(folder)


def test_a_linked_file_in_a_bundle_folder_is_refused(captured, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(captured.path, folder)
    (tmp_path / "elsewhere.json").write_bytes((folder / "sample.json").read_bytes())
    (folder / "sample.json").unlink()
    (folder / "sample.json").symlink_to(tmp_path / "elsewhere.json")  # same bytes: the hash alone passes it
    with pytest.raises(BundleIntegrityError, match="sample.json: is a link"):
        nd.Bundle.open(folder)
