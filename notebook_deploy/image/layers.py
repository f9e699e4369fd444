"""Reproducible image layers: the same files give the same bytes, so the same digests.

A layer is a gzip'd tar. Entries are sorted, parent directories are written first, owners are root,
times are fixed (``SOURCE_DATE_EPOCH`` when set, else 1 January 1980 as Jib does), and the gzip header
carries no name and no time. A layer records both digests an image needs: ``digest`` (of the gzip'd
bytes, which the manifest names) and ``diff_id`` (of the tar, which the config's ``rootfs`` lists).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_EPOCH_1980 = 315532800

Content = bytes | Path


@dataclass(frozen=True)
class Entry:
    """One file of a layer: its path in the image, its content (bytes, or a file to read), its mode."""

    path: str
    content: Content
    mode: int = 0o644


@dataclass(frozen=True)
class Layer:
    """A built layer: the gzip'd bytes on disk and their digests."""

    path: Path
    digest: str
    diff_id: str
    size: int
    media_type: str = OCI_LAYER


def build_layer(entries: Iterable[Entry], destination: Path, media_type: str = OCI_LAYER) -> Layer:
    """Write ``entries`` as a reproducible gzip'd tar at ``destination``."""
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", _EPOCH_1980))
    entries = sorted(entries, key=lambda e: _clean(e.path))
    tar_digest, gzip_digest = hashlib.sha256(), hashlib.sha256()
    with open(destination, "wb") as raw:
        zipped = HashingWriter(raw, gzip_digest)
        with gzip.GzipFile(filename="", fileobj=zipped, mode="wb", mtime=0, compresslevel=6) as compressed:
            hashing = HashingWriter(compressed, tar_digest)
            with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
                written: set[str] = set()
                for entry in entries:
                    path = _clean(entry.path)
                    for parent in reversed(PurePosixPath(path).parents[:-1]):
                        if str(parent) not in written:
                            tar.addfile(_info(str(parent) + "/", tarfile.DIRTYPE, 0o755, 0, mtime))
                            written.add(str(parent))
                    if isinstance(entry.content, bytes):
                        info = _info(path, tarfile.REGTYPE, entry.mode, len(entry.content), mtime)
                        tar.addfile(info, io.BytesIO(entry.content))
                    else:  # copied in pieces: a model's weights file may be larger than memory should hold
                        with open(entry.content, "rb") as f:
                            size = os.fstat(f.fileno()).st_size
                            tar.addfile(_info(path, tarfile.REGTYPE, entry.mode, size, mtime), f)
                    written.add(path)
    return Layer(
        destination,
        f"sha256:{gzip_digest.hexdigest()}",
        f"sha256:{tar_digest.hexdigest()}",
        destination.stat().st_size,
        media_type,
    )


def entries_from_directory(directory: Path, prefix: str) -> list[Entry]:
    """Every file under ``directory``, placed under ``prefix`` in the image, modes kept (executables stay so)."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        found.append(Entry(f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}", path, mode))
    return found


class HashingWriter(io.RawIOBase):
    """Passes bytes on to ``target`` and hashes them: the tar's and the gzip's digests without a second pass."""

    def __init__(self, target: io.BufferedIOBase, digest: hashlib._Hash) -> None:
        self.target = target
        self.digest = digest
        self.position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.position += len(data)
        return self.target.write(data)


def _clean(path: str) -> str:
    cleaned = PurePosixPath("/", path).as_posix().lstrip("/")
    if ".." in PurePosixPath(cleaned).parts:
        raise ValueError(f"a layer path may not go up: {path!r}")
    return cleaned


def _info(name: str, kind: bytes, mode: int, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
