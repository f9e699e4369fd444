"""The bundle format: a directory that holds everything needed to serve and to rebuild a model.

Layout::

    bundle.json        the manifest: identity, model, schema, requirements, sha256 of every file
    model.pkl          the model, serialized with cloudpickle
    weights.safetensors  its torch tensors, which model.pkl refers to (notebook_deploy.weights)
    pretrained.json    instead of those two, for a standard transformers pipeline or sentence transformer:
    pretrained.*       its library's own files, loaded without unpickling (notebook_deploy.pretrained)
    requirements.txt   the lock: every distribution the model needs, pinned to the captured version
    recipe.ipynb       the cells that rebuilt the model (when captured from a notebook), with
    recipe-requirements.txt  what those cells import beyond the lock, pinned, and data-* files they read
    environment.json   a snapshot of the whole capturing environment, for audit
    sample.json        a few input rows and the model's outputs on them
    reference.json     reference statistics of the input features and predictions, for drift monitoring
    provenance.dsse.json  the signed in-toto provenance statement (notebook_deploy.provenance); not sealed,
                       since it names the digest computed from the sealed files

The version id is a hash of the manifest's content (which includes the hash of every file) leaving out
when and after what it was made, so the same capture twice is the same version. The manifest also
carries a digest of its own canonical text, so a change to any byte of any file is found by ``check_integrity``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import orjson

from . import display
from .errors import BundleIntegrityError
from .manifest import Manifest, RecipeSummary, ReferenceSummary, SampleInfo, SchemaDocument, Source
from .methods import resolve_method
from .pickle_scan import PickleScan, check_pickle
from .pretrained import DESCRIPTOR, load_model
from .schema import Schema, schema_from_dict

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
MODEL_FILE = "model.pkl"
LOCK_FILE = "requirements.txt"
ENVIRONMENT_FILE = "environment.json"
SAMPLE_FILE = "sample.json"
RECIPE_FILE = "recipe.ipynb"  # the cells that rebuilt the model (notebook_deploy.capturing.recipe)
# What the recipe's cells import beyond the model's lock, pinned: verify --fresh-env installs both
RECIPE_LOCK_FILE = "recipe-requirements.txt"
REFERENCE_FILE = "reference.json"  # drift reference statistics of the inputs and predictions (notebook_deploy.drift)
SIGNATURE_FILE = "provenance.dsse.json"  # the signed provenance statement (notebook_deploy.provenance)
UNSEALED = (MANIFEST, SIGNATURE_FILE)  # the files beside the sealed content: the seal and its signature

# Manifest fields that say when and after what a version was made, not what it is.
_NOT_CONTENT = ("version", "created", "parent", "digest")


class Bundle:
    """A bundle on disk: its manifest, files and model. Get one from ``capture``, ``load`` or ``Store``."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | os.PathLike[str], verify: bool = True) -> Bundle:
        """Read the bundle at ``path``; with ``verify`` (the default) check every file's hash first."""
        path = Path(path)
        manifest = read_manifest(path)
        bundle = cls(path, manifest)
        if verify:
            bundle.check_integrity()
        return bundle

    # -- identity ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def ref(self) -> str:
        """``name:version``, a reference that always means this bundle."""
        return f"{self.name}:{self.version}"

    @property
    def created(self) -> str:
        return self.manifest["created"]

    @property
    def digest(self) -> str:
        """``sha256:...`` of the canonical manifest, which holds the hash of every file: the whole content."""
        return self.manifest["digest"]

    @property
    def model_type(self) -> str:
        """``module.Class`` of the model."""
        return self.manifest["model"]["type"]

    @property
    def batchable(self) -> bool:
        """Whether capture found that one call on a batch gives what row-by-row calls give."""
        return bool(self.manifest["model"].get("batchable", False))

    @property
    def python_version(self) -> str:
        """The Python the bundle was captured with, ``3.11.9``."""
        return self.manifest["python"]["version"]

    @property
    def python_minor(self) -> str:
        """``3.11``: the Python an image or a fresh environment of the bundle must have."""
        return self.python_version.rsplit(".", 1)[0]

    @property
    def source(self) -> Source:
        """Where it was captured from (``kind``, ``path``); empty when not known."""
        return self.manifest.get("provenance") or {}

    @property
    def sample_info(self) -> SampleInfo | None:
        """Where the stored sample came from and its rows; None for bundles made before it was recorded."""
        return self.manifest.get("sample")

    @property
    def recipe_summary(self) -> RecipeSummary | None:
        """The recipe's summary in the manifest (``recipe()`` adds its cells), or None without a recipe."""
        return self.manifest.get("recipe") or None

    @property
    def reference_summary(self) -> ReferenceSummary | None:
        """What the manifest says of the drift reference (``reference`` has the statistics), or None."""
        return self.manifest.get("reference") or None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.manifest.get("labels") or {})

    @property
    def schema_document(self) -> SchemaDocument:
        """The input and output schemas as stored (``input_schema``/``output_schema`` build them)."""
        return self.manifest["schema"]

    @property
    def methods(self) -> list[str]:
        return list(self.manifest["model"]["methods"])

    @property
    def requirements(self) -> list[str]:
        """The distributions the model itself uses, pinned (the lock in requirements.txt adds their dependencies)."""
        return list(self.manifest["requirements"])

    @property
    def warnings(self) -> list[str]:
        return list(self.manifest.get("warnings", []))

    @property
    def input_schema(self) -> Schema:
        return schema_from_dict(self.manifest["schema"]["input"])

    def output_schema(self, method: str) -> Schema:
        return schema_from_dict(self.manifest["schema"]["outputs"][method])

    @property
    def size(self) -> int:
        """Bytes on disk, all files included."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    # -- content ----------------------------------------------------------------------------------
    def lock(self) -> list[str]:
        """The lines of requirements.txt: every needed distribution as ``name==version``."""
        text = (self.path / LOCK_FILE).read_text()
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    def environment(self) -> dict[str, Any]:
        """The snapshot of the environment the bundle was captured in."""
        return json.loads((self.path / ENVIRONMENT_FILE).read_text())

    @cached_property
    def sample(self) -> dict[str, Any]:
        """The stored sample: ``{"instances": [...], "outputs": {method: [...]}}``."""
        return orjson.loads((self.path / SAMPLE_FILE).read_bytes())

    @cached_property
    def reference(self) -> dict[str, Any] | None:
        """The drift reference statistics (see ``notebook_deploy.drift``), or None for a bundle without them."""
        if REFERENCE_FILE not in self.manifest.get("files", {}):
            return None
        return orjson.loads((self.path / REFERENCE_FILE).read_bytes())

    @property
    def model_file(self) -> str:
        """The file the model loads from: ``pretrained.json`` for a model in its library's format, else model.pkl."""
        return DESCRIPTOR if DESCRIPTOR in self.manifest["files"] else MODEL_FILE

    @cached_property
    def model(self) -> Any:
        """The model object, loaded on first use: with its library, or unpickled (its tensors from the
        weights file, where it has one)."""
        if self.model_file == MODEL_FILE:
            import cloudpickle  # noqa: F401  (pickles made by cloudpickle need it importable)

        return load_model(self.path / self.model_file)

    def check_pickle(self) -> PickleScan:
        """Scan model.pkl's opcodes and raise ``UnsafePickleError`` if loading it would import or call
        something dangerous: the check before the first unpickle of a bundle that came from elsewhere.
        A model in its library's format has no pickle: nothing to scan (``pretrained.load`` checks its files)."""
        if self.model_file != MODEL_FILE:
            return PickleScan()
        return check_pickle(self.path / MODEL_FILE, self.manifest.get("pickle_scan"))

    def predict(self, data: Any, method: str = "predict") -> Any:
        """Call the model's ``method`` on ``data`` in this process."""
        if method not in self.methods:
            raise ValueError(f"{self.ref} has no method {method!r}; it has {', '.join(self.methods)}")
        return resolve_method(self.model, method)(data)

    def recipe(self) -> dict[str, Any] | None:
        """The recipe that rebuilds the model: its summary in the manifest plus its ``cells``, or None."""
        summary = self.recipe_summary
        if not summary:
            return None
        import nbformat

        notebook = nbformat.read(self.path / RECIPE_FILE, as_version=4)
        cells = [
            {"source": cell.source, "execution_count": cell.metadata.get("notebook_deploy", {}).get("execution_count")}
            for cell in notebook.cells
        ]
        return {**summary, "cells": cells}

    def to_dict(self, tags: list[str] | None = None) -> dict[str, Any]:
        """This version as JSON-ready data, with the store's ``tags`` on it (the Jupyter REST API's version)."""
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "created": self.created,
            "tags": list(tags or []),
            "model_type": self.model_type,
            "methods": self.methods,
            "size": self.size,
        }

    def details(self, tags: list[str] | None = None) -> dict[str, Any]:
        """``to_dict`` plus everything there is to show of this version: manifest, recipe, lock, schemas,
        sample and the summary of the drift reference (the Jupyter REST API's bundle details)."""
        summary = self.reference_summary
        reference = None
        if summary:
            features = [{"name": name, "kind": kind} for name, kind in summary["features"].items()]
            reference = {**summary, "features": features}
        return {
            **self.to_dict(tags),
            "manifest": self.manifest,
            "recipe": self.recipe(),
            "lock": self.lock(),
            "requirements": self.requirements,
            "warnings": self.warnings,
            "schema": {
                "input": _schema_dict(self.input_schema),
                "outputs": {method: _schema_dict(self.output_schema(method)) for method in self.methods},
            },
            "sample": self.sample,
            "reference": reference,
        }

    # -- integrity --------------------------------------------------------------------------------
    def check_integrity(self) -> None:
        """Check the manifest's digest and version and every file's hash; raise ``BundleIntegrityError``."""
        verify_manifest(self.manifest, self.path / MANIFEST)
        listed = self.manifest["files"]
        for name, expected in listed.items():
            file = self.path / name
            if file.is_symlink():
                raise BundleIntegrityError(str(file), "is a link: a bundle holds plain files only")
            if not file.is_file():
                raise BundleIntegrityError(str(file), "is missing; the bundle is incomplete")
            if file_digest(file) != expected:
                raise BundleIntegrityError(
                    str(file), "does not match the hash in bundle.json: the file was changed or truncated"
                )
        for file in self.path.iterdir():
            if file.name not in UNSEALED and file.name not in listed:
                raise BundleIntegrityError(str(file), "is not listed in bundle.json: it was added after capture")

    def export(self, destination: str | os.PathLike[str]) -> Path:
        """Write this bundle as one ``.tar.gz`` file; a directory destination gets ``NAME-VERSION.tar.gz``."""
        destination = Path(destination)
        if destination.is_dir():
            destination = destination / f"{self.name}-{self.version}.tar.gz"
        write_archive(self.path, destination, mtime=_timestamp(self.created))
        return destination

    # -- display (display.py) -------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<Bundle {self.ref} {self.model_type} ({', '.join(self.methods)})>"

    def __str__(self) -> str:
        return display.text_table(f"Bundle {self.ref}", display.bundle_rows(self))

    def _repr_html_(self) -> str:
        return display.html_table(f"Bundle {self.ref}", display.bundle_rows(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bundle) and other.ref == self.ref and other.path == self.path

    def __hash__(self) -> int:
        return hash((self.ref, self.path))


def _schema_dict(schema: Schema) -> dict[str, Any]:
    return {"description": schema.describe(), "json_schema": schema.json_schema()}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, in hex, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, as OCI and the manifest write digests."""
    return "sha256:" + file_sha256(path)


def canonical_json(value: Any) -> bytes:
    """The one text a manifest is written as, so that its digest can be checked byte for byte."""
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def compact_json(value: Any) -> bytes:
    """Compact JSON with sorted keys: the bytes that image documents and signed statements are stored,
    hashed and signed as (one text for one value, so that a digest made twice is the same)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def seal_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash the files in ``directory``, derive the version id and digest, and write bundle.json."""
    manifest = dict(manifest)
    manifest["format"] = FORMAT_VERSION
    manifest["files"] = {
        f.name: file_digest(f) for f in sorted(directory.iterdir()) if f.is_file() and f.name not in UNSEALED
    }
    manifest["version"] = content_version(manifest)
    manifest.pop("digest", None)
    manifest["digest"] = "sha256:" + hashlib.sha256(canonical_json(manifest)).hexdigest()
    write_file(directory / MANIFEST, canonical_json(manifest))
    return manifest


def content_version(manifest: Mapping[str, Any]) -> str:
    """The version id: 12 hex digits of the hash of everything the manifest says about the content."""
    content = {k: v for k, v in manifest.items() if k not in _NOT_CONTENT}
    return hashlib.sha256(canonical_json(content)).hexdigest()[:12]


def read_manifest(path: Path) -> Manifest:
    """Parse ``path/bundle.json``; raise ``BundleIntegrityError`` if it is missing or not a manifest."""
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise BundleIntegrityError(str(file), "is missing: this directory is not a bundle") from None
    except ValueError as error:
        raise BundleIntegrityError(str(file), f"is not valid JSON ({error}): the manifest was damaged") from None
    except OSError as error:
        raise BundleIntegrityError(str(file), f"cannot be read ({error.strerror or error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleIntegrityError(
            str(file), f"has format {found!r}; this notebook-deploy reads format {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleIntegrityError(str(file), "has no list of files: the manifest was damaged")
    for name in files:
        check_file_name(name, str(file))
    if MANIFEST in files:
        raise BundleIntegrityError(str(file), f"lists itself ({MANIFEST}) among its files: the manifest was damaged")
    return cast(Manifest, manifest)


def check_file_name(name: str, where: str) -> None:
    """Raise unless ``name`` is a plain file name inside a bundle: no folder, no ``..``, no absolute path."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise BundleIntegrityError(
            where,
            f"names the file {name!r}, which is not a plain file name of a bundle "
            "(no folders, '..' or absolute paths): refusing it",
        )


def verify_manifest(manifest: Mapping[str, Any], file: Path) -> None:
    """Check that bundle.json is byte for byte the canonical text of a manifest whose digest and version hold."""
    unsealed = {k: v for k, v in manifest.items() if k != "digest"}
    expected_digest = "sha256:" + hashlib.sha256(canonical_json(unsealed)).hexdigest()
    if (
        manifest.get("digest") != expected_digest
        or file.read_bytes() != canonical_json(manifest)
        or manifest.get("version") != content_version(manifest)
    ):
        raise BundleIntegrityError(str(file), "was changed after capture: its digest or version does not match")


def write_archive(directory: Path, destination: Path, mtime: int) -> None:
    """Write ``directory`` as a reproducible .tar.gz (sorted entries, fixed owners and times), atomically."""
    import gzip

    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    try:
        with open(temporary, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=mtime) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for file in sorted(directory.iterdir()):
                    info = tarfile.TarInfo(file.name)
                    info.size = file.stat().st_size
                    info.mtime = mtime
                    info.mode = 0o644
                    with open(file, "rb") as f:
                        tar.addfile(info, f)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive from elsewhere may unpack to: members, bytes per member, bytes in all, and bytes
    per byte of archive beyond ``free_bytes`` (a few MB of archive must not fill a disk)."""

    members: int = 1000
    member_bytes: int = 16 << 30
    total_bytes: int = 32 << 30
    expansion: int = 100
    free_bytes: int = 64 << 20

    def total_for(self, archive_bytes: int) -> int:
        """The most bytes an archive of ``archive_bytes`` may unpack to."""
        return min(self.total_bytes, self.free_bytes + self.expansion * archive_bytes)


def extract_archive(archive: Path, directory: Path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Unpack a bundle archive into the empty ``directory``, refusing anything but plain top-level files
    and anything over ``limits``. Members are checked by their headers as the archive streams past, and
    copied to disk in chunks, so a small archive that claims a huge member is refused without unpacking it."""

    def refuse(reason: str) -> BundleIntegrityError:
        return BundleIntegrityError(str(archive), f"{reason}: refusing to import it")

    allowed_total = limits.total_for(archive.stat().st_size)
    total, seen = 0, set()
    try:
        with tarfile.open(archive, "r|*") as tar:  # a stream: each member is read once, in order
            for count, member in enumerate(tar, start=1):
                if not member.isfile():
                    raise refuse(f"holds {member.name!r}, which is not a plain file (a folder or a link)")
                check_file_name(member.name, str(archive))
                if member.name in seen:
                    raise refuse(f"holds {member.name!r} twice")
                seen.add(member.name)
                total += member.size
                if count > limits.members:
                    raise refuse(f"holds more than {limits.members} files")
                if member.size > limits.member_bytes:
                    raise refuse(
                        f"holds {member.name!r} of {member.size} bytes, over the limit of "
                        f"{limits.member_bytes} bytes a file"
                    )
                if total > allowed_total:
                    raise refuse(
                        f"unpacks to more than {allowed_total} bytes (at {member.name!r}, "
                        f"{member.size} bytes), over the limit for an archive of its size"
                    )
                source = tar.extractfile(member)
                assert source is not None
                with open(directory / member.name, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise BundleIntegrityError(str(archive), f"is not a readable bundle archive ({error})") from None


def write_file(path: Path, data: bytes) -> None:
    """Write a bundle file and flush it to disk (the store renames a bundle into place only when all is there)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _timestamp(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp())
