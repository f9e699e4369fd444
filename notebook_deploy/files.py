"""The file primitives every layer that keeps state on disk shares: where the store lives, an exclusive
lock across processes, and an atomic replace. Kept below the store, so that the audit log, the key files
and the trust store use them without importing the store."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def default_root() -> Path:
    """``$NOTEBOOK_DEPLOY_HOME`` if set, else ``~/.notebook_deploy``."""
    return Path(os.environ.get("NOTEBOOK_DEPLOY_HOME") or Path.home() / ".notebook_deploy")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing): one writer at a time, across processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def replace_file(path: Path, data: bytes, *, mode: int = 0o644, scratch: Path | None = None) -> None:
    """Replace ``path`` atomically with ``data``: readers see the old file or the new one, never part of
    it, and neither is lost to a crash. The data goes to a temporary file (made by mkstemp, so 0600 from
    its first byte: key files are never readable by others, even briefly) in ``scratch`` (default: the
    same folder; it must be on the same file system), is fsync'd, given ``mode``, renamed into place,
    and the folder is fsync'd so that the rename lasts too."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=scratch or path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
