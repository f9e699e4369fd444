"""The local store of versioned bundles.

Layout under the root (``~/.notebook_deploy``, or ``$NOTEBOOK_DEPLOY_HOME``)::

    bundles/NAME/VERSION/   one immutable bundle directory per version
    bundles/NAME/tags.json  {"latest": VERSION, "prod": VERSION, ...}
    tmp/                    bundles being written, and versions being deleted
    serving/NAME/VERSION.PID.json   a local server (process PID) serves NAME:VERSION: it cannot be deleted
    lock                    the file whose lock serialises writers

A bundle is written in ``tmp/`` and renamed into place only when complete, so a reader never sees half
a version, and a capture killed halfway leaves only a staging directory that the next writer removes.
Every change to ``bundles/`` holds an exclusive ``flock`` on ``lock``; tags are replaced atomically.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import audit
from .bundle import Bundle, extract_archive, read_manifest, write_file
from .errors import (
    BundleIntegrityError,
    BundleInUseError,
    BundleNotFoundError,
    BundleReferenceError,
    NotebookDeployError,
)
from .files import default_root, file_lock, replace_file

LATEST = "latest"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
VERSION_PATTERN = re.compile(r"^[0-9a-f]{12}$")


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``name[:tag-or-version]`` into its parts; a bare name means ``name:latest``."""
    name, _, selector = ref.partition(":")
    check_name(name)
    return name, selector or LATEST


def check_name(name: str) -> None:
    """Raise unless ``name`` can name a bundle (and so, later, an image repository)."""
    if not NAME_PATTERN.match(name):
        raise BundleReferenceError(
            f"{name!r} is not a valid bundle name: use lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 128 characters)"
        )


def check_tag(tag: str) -> None:
    """Raise unless ``tag`` can be a tag: not a version id, which would make references ambiguous."""
    if not TAG_PATTERN.match(tag) or VERSION_PATTERN.match(tag):
        raise BundleReferenceError(
            f"{tag!r} is not a valid tag: use letters, digits, '.', '_' and '-' (at most 128), "
            "and not 12 hex digits, which read as a version id"
        )


def name_from(text: str) -> str:
    """Make a valid bundle name from any text: ``'RandomForestClassifier'`` → ``'randomforestclassifier'``."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return cleaned[:128] or "model"


class Store:
    """A directory of versioned bundles with tags. ``Store()`` opens the default one."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def _bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def _tmp(self) -> Path:
        return self.root / "tmp"

    # -- reading ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The names that have at least one version, sorted."""
        if not self._bundles.is_dir():
            return []
        return sorted(p.name for p in self._bundles.iterdir() if p.is_dir() and self._versions_of(p.name))

    def list(self, name: str | None = None) -> list[Bundle]:
        """Every readable version (of ``name``, or of all names), oldest first; manifests are read, files
        not hashed. Versions whose manifest cannot be read are left out: ``damaged`` lists them."""
        return self.inventory(name)[0]

    def damaged(self, name: str | None = None) -> builtins.list[dict[str, str]]:
        """The versions and tags files (of ``name``, or of all names) that cannot be read, each with
        ``name``, ``version`` (or ``tags.json``), ``path`` and ``reason``: one of them must not hide the rest."""
        return self.inventory(name)[1]

    def inventory(self, name: str | None = None) -> tuple[builtins.list[Bundle], builtins.list[dict[str, str]]]:
        """``(list(name), damaged(name))`` from one pass over the manifests."""
        bundles, damaged = [], []
        for each in [name] if name is not None else self.names():
            for version in self._versions_of(each):
                path = self._bundles / each / version
                try:
                    bundles.append(_listable(Bundle(path, read_manifest(path)), each, version))
                except BundleIntegrityError as error:
                    damaged.append({"name": each, "version": version, "path": str(path), "reason": str(error)})
            try:
                self.tags(each)
            except BundleIntegrityError as error:
                damaged.append({"name": each, "version": "tags.json", "path": error.path, "reason": str(error)})
        return sorted(bundles, key=lambda b: (b.name, b.created, b.version)), damaged

    def tags(self, name: str) -> dict[str, str]:
        """The tags of ``name``: tag → version; ``BundleIntegrityError`` if tags.json cannot be read."""
        check_name(name)
        path = self._bundles / name / "tags.json"
        try:
            tags = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise BundleIntegrityError(
                str(path), f"cannot be read ({error}): fix or delete it; `notebook-deploy tag` writes it again"
            ) from None
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise BundleIntegrityError(str(path), "is not an object of tag → version: fix or delete it")
        return tags

    def tags_of(self, bundle: Bundle) -> builtins.list[str]:
        """The tags that point at ``bundle``'s version."""
        return _tags_at(self.tags(bundle.name), bundle.version)

    def summaries(self) -> builtins.list[dict[str, Any]]:
        """Every name with its tags, its versions (newest first, each ``Bundle.to_dict``) and what of it
        is damaged (``damaged``), sorted by name."""
        return [self._summary(name) for name in self.names()]

    def _summary(self, name: str) -> dict[str, Any]:
        bundles, damaged = self.inventory(name)
        try:
            tags = self.tags(name)  # read once per name: the sidebar polls this
        except BundleIntegrityError:
            tags = {}  # inventory listed it as damaged
        versions = [b.to_dict(_tags_at(tags, b.version)) for b in reversed(bundles)]
        return {"name": name, "tags": tags, "versions": versions, "damaged": damaged}

    def details(self, ref: str) -> dict[str, Any]:
        """``Bundle.details`` of the version ``ref`` names, with the tags on it; files are not hashed."""
        bundle = self.get(ref, verify=False)
        return bundle.details(self.tags_of(bundle))

    def resolve(self, ref: str) -> tuple[str, str]:
        """``(name, version)`` for a reference: ``name``, ``name:latest``, ``name:TAG``, ``name:VERSION``
        (or a unique prefix of at least 4 digits of one)."""
        name, selector = parse_ref(ref)
        versions = self._versions_of(name)
        if not versions:
            known = ", ".join(self.names()) or "none yet: capture a model first"
            raise BundleNotFoundError(f"no bundle named {name!r} in {self.root} (names: {known})")
        tags = self.tags(name)
        if selector in tags and tags[selector] in versions:
            return name, tags[selector]
        if selector == LATEST:
            return name, self._newest(name, versions)
        matches = [v for v in versions if v.startswith(selector)] if len(selector) >= 4 else []
        if len(matches) == 1:
            return name, matches[0]
        if len(matches) > 1:
            raise BundleReferenceError(f"{ref!r} is ambiguous: it starts {len(matches)} versions; give more digits")
        raise BundleNotFoundError(
            f"{name!r} has no tag or version {selector!r}; tags: {', '.join(sorted(tags)) or 'none'}; "
            f"see `notebook-deploy list {name}`"
        )

    def get(self, ref: str, verify: bool = True) -> Bundle:
        """The bundle a reference names, its files checked against the manifest unless ``verify=False``."""
        name, version = self.resolve(ref)
        return Bundle.open(self._bundles / name / version, verify=verify)

    def latest_version(self, name: str) -> str | None:
        """The version ``name`` resolves to, or None if there is none."""
        try:
            return self.resolve(name)[1]
        except BundleReferenceError:
            return None

    def stamp(self, name: str) -> tuple[tuple[int, int, int] | None, ...]:
        """What changes when a tag of ``name`` moves or a version of it comes or goes (a stat of its tags
        file, replaced on every change, and of its folder): cheap enough to read every second."""
        found: builtins.list[tuple[int, int, int] | None] = []
        for path in (self._bundles / name / "tags.json", self._bundles / name):
            try:
                status = path.stat()
            except FileNotFoundError:
                found.append(None)
                continue
            found.append((status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(found)

    # -- writing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory to write a bundle in, removed on exit unless ``commit`` moved it into place."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"stage-{os.getpid()}-", dir=self._tmp))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, staged: Path, manifest: Mapping[str, Any], tag_latest: bool = True) -> Bundle:
        """Move a sealed bundle from ``staged`` into place and point ``latest`` at it.

        Committing a version that is already there keeps the existing one: versions derive from content.
        """
        name, version = manifest["name"], manifest["version"]
        with self._locked():
            target = self._bundles / name / version
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staged, target)
            if tag_latest:
                self._set_tag(name, LATEST, version)
        return Bundle.open(target, verify=False)

    def tag(self, ref: str, tag: str) -> Bundle:
        """Point ``tag`` at the version ``ref`` names; moving ``latest`` back is a rollback."""
        check_tag(tag)
        with self._locked():
            name, version = self.resolve(ref)
            self._set_tag(name, tag, version)
        audit.record("tag", root=self, name=name, tag=tag, version=version)
        return self.get(f"{name}:{version}", verify=False)

    def untag(self, name: str, tag: str) -> None:
        """Remove ``tag`` from ``name``."""
        with self._locked():
            tags = self.tags(name)
            if tag not in tags:
                raise BundleNotFoundError(f"{name!r} has no tag {tag!r}")
            version = tags.pop(tag)
            self._write_tags(name, tags)
        audit.record("untag", root=self, name=name, tag=tag, version=version)

    def delete(self, ref: str) -> Bundle:
        """Delete the version ``ref`` names and the tags on it; ``latest`` falls back to the newest left."""
        with self._locked():
            name, version = self.resolve(ref)
            self._check_not_served(name, version)
            bundle = Bundle.open(self._bundles / name / version, verify=False)
            self._remove_dir(self._bundles / name / version)
            tags = {t: v for t, v in self.tags(name).items() if v != version}
            remaining = self._versions_of(name)
            if remaining:
                tags.setdefault(LATEST, self._newest(name, remaining))
                self._write_tags(name, tags)
            else:
                self._remove_dir(self._bundles / name)
        audit.record("rm", root=self, name=name, version=version)
        return bundle

    def import_archive(
        self,
        archive: str | os.PathLike[str],
        tag_latest: bool = True,
        *,
        allow_unsigned: bool = False,
        trust: Any = None,
    ) -> Bundle:
        """Add the bundle in a ``.tar.gz`` made by ``Bundle.export``, after checking every file's hash,
        that a key in ``trust`` (a ``signing.TrustStore``; default: the user's) signed it, unless
        ``allow_unsigned`` (written to the audit log), and scanning its pickle; the import, or its refusal
        and why, goes to the audit log."""
        try:
            imported = self._import_archive(archive, tag_latest, allow_unsigned, trust)
        except NotebookDeployError as error:
            audit.record("import", root=self, archive=str(archive), result="refused", error=str(error)[:500])
            raise
        audit.record(
            "import", root=self, archive=str(archive), result="ok", name=imported.name, version=imported.version
        )
        return imported

    def _import_archive(
        self, archive: str | os.PathLike[str], tag_latest: bool, allow_unsigned: bool, trust: Any
    ) -> Bundle:
        from .provenance import check_trusted  # imported on use: it loads the cryptography library

        with self.staging() as staged:
            extract_archive(Path(archive), staged)
            bundle = Bundle.open(staged)  # checks integrity
            check_trusted(
                bundle, trust, allow_unsigned=allow_unsigned, action="import", audit_log=audit.default_path(self)
            )
            check_name(bundle.name)
            if not VERSION_PATTERN.match(bundle.version):
                raise BundleIntegrityError(str(archive), f"has a malformed version id {bundle.version!r}")
            bundle.check_pickle()  # before anything unpickles it
            return self.commit(staged, bundle.manifest, tag_latest=tag_latest)

    @contextlib.contextmanager
    def serving(self, bundle: Bundle, url: str) -> Iterator[None]:
        """Mark ``bundle`` as served by this process at ``url`` while the block runs, so that ``delete``
        (from any process) refuses it rather than pull the files from under the server's workers. A
        process killed without cleaning up leaves a file that is ignored once its process is gone."""
        directory = self.root / "serving" / bundle.name
        pin = directory / f"{bundle.version}.{os.getpid()}.json"
        with self._locked():
            if not (self._bundles / bundle.name / bundle.version).is_dir():
                raise BundleNotFoundError(f"{bundle.ref} was deleted before its server started")
            directory.mkdir(parents=True, exist_ok=True)
            write_file(pin, json.dumps({"pid": os.getpid(), "url": url, "ref": bundle.ref}).encode())
        try:
            yield
        finally:
            pin.unlink(missing_ok=True)

    @classmethod
    def holding(cls, path: Path) -> Store | None:
        """The store whose version directory ``path`` is, or None for a bundle elsewhere."""
        path = Path(path).absolute()
        if path.parent.parent.name != "bundles" or not VERSION_PATTERN.match(path.name):
            return None
        return cls(path.parent.parent.parent)

    # -- internals --------------------------------------------------------------------------------
    def _check_not_served(self, name: str, version: str) -> None:
        for pin in sorted((self.root / "serving" / name).glob(f"{version}.*.json")):
            try:
                served = json.loads(pin.read_bytes())
                alive = _process_alive(int(served["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                alive = False
            if not alive:
                pin.unlink(missing_ok=True)  # its server is gone
                continue
            raise BundleInUseError(
                f"{name}:{version} is served by the local server at {served.get('url')} (process {served['pid']}): "
                "stop that server first (Ctrl+C, or Server.stop()), then delete the version"
            )

    def _versions_of(self, name: str) -> builtins.list[str]:
        directory = self._bundles / name
        if not directory.is_dir():
            return []
        return [p.name for p in directory.iterdir() if VERSION_PATTERN.match(p.name) and (p / "bundle.json").is_file()]

    def _newest(self, name: str, versions: builtins.list[str]) -> str:
        readable = {b.version: b.created for b in self.list(name) if b.version in versions}
        if not readable:
            raise BundleNotFoundError(f"no version of {name!r} can be read: see `notebook-deploy list {name}`")
        return max(readable, key=lambda v: (readable[v], v))

    def _set_tag(self, name: str, tag: str, version: str) -> None:
        tags = self.tags(name)
        tags[tag] = version
        self._write_tags(name, tags)

    def _write_tags(self, name: str, tags: dict[str, str]) -> None:
        replace_file(self._bundles / name / "tags.json", (json.dumps(tags, indent=2, sort_keys=True) + "\n").encode())

    def _remove_dir(self, path: Path) -> None:
        """Take ``path`` out of view in one rename, then delete it."""
        doomed = Path(tempfile.mkdtemp(prefix=f"delete-{os.getpid()}-", dir=self._tmp))
        os.rename(path, doomed / path.name)
        shutil.rmtree(doomed, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(exist_ok=True)
        with file_lock(self.root / "lock"):
            self._clean_stale_staging()
            yield

    def _clean_stale_staging(self) -> None:
        """Remove what writers that died (a capture killed halfway) left in ``tmp/``."""
        for entry in self._tmp.iterdir():
            match = re.match(r"^(?:stage|delete)-(\d+)-", entry.name)
            if match and not _process_alive(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True)


def _listable(bundle: Bundle, name: str, version: str) -> Bundle:
    """``bundle`` if its manifest has what a listing shows and matches its place in the store."""
    manifest = bundle.manifest
    model = manifest.get("model")
    if (manifest.get("name"), manifest.get("version")) != (name, version):
        raise BundleIntegrityError(
            str(bundle.path),
            f"holds the manifest of {manifest.get('name')}:{manifest.get('version')}, not of {name}:{version}",
        )
    if (
        not isinstance(manifest.get("created"), str)
        or not isinstance(model, dict)
        or "type" not in model
        or not isinstance(model.get("methods"), list)
    ):
        raise BundleIntegrityError(str(bundle.path / "bundle.json"), "lacks created, model.type or model.methods")
    return bundle


def _tags_at(tags: dict[str, str], version: str) -> list[str]:
    """The tags (of ``tag → version``) that point at ``version``, sorted."""
    return sorted(tag for tag, pointed in tags.items() if pointed == version)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
