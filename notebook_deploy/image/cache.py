"""Built image layers, kept and found again by what determines them.

Building the dependency layer (pip download, install, tar, gzip) is most of a push; yet it depends only on
the resolved requirements, the platform and the Python version, and the runtime layer only on this
package's files. So each built layer is kept under a key that hashes those facts, with the digests it
produced and the packages it holds (which the SBOM lists): a second push of a bundle whose lock did not
change takes the layer from here, and builds only the bundle layer. The same entries serve push, export
and the Docker back end, since all of them build through ``build.image_spec``.

Layout, under ``<store root>/cache/layers`` (or ``$NOTEBOOK_DEPLOY_LAYER_CACHE``, shared by every store)::

    KEY/layer.tar.gz   the layer's bytes
    KEY/entry.json     digest, diff_id, size, media type, packages, the facts hashed, when made and last used

An entry is written in a scratch folder and renamed into place, so a crash leaves either no entry or a
whole one; an entry whose file no longer matches its size is treated as absent and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import canonical_json
from ..files import replace_file
from .layers import Layer

# Part of every key: a change to how layers are built (paths, modes, compression) bumps it, so that no
# layer built the old way is reused.
FORMAT = 1
LAYER_FILE = "layer.tar.gz"
# A folder that holds the layers of every store instead of each store's own ``cache/layers``.
LAYER_CACHE_VARIABLE = "NOTEBOOK_DEPLOY_LAYER_CACHE"
ENTRY_FILE = "entry.json"


@dataclass(frozen=True)
class CachedLayer:
    """One kept layer: its key, the layer, the packages in it (name, version) and its bookkeeping."""

    key: str
    layer: Layer
    packages: list[tuple[str, str]]
    facts: dict[str, Any]
    created: float
    used: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.facts.get("kind"),
            "digest": self.layer.digest,
            "size": self.layer.size,
            "packages": len(self.packages),
            "created": self.created,
            "used": self.used,
        }


def layer_key(facts: dict[str, Any]) -> str:
    """The key of a layer determined by ``facts`` (JSON values): the sha256 of their canonical form."""
    return hashlib.sha256(canonical_json({"format": FORMAT, **facts})).hexdigest()


class LayerCache:
    """The layers kept under ``root`` (see the module's docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, key: str, use: bool = True) -> CachedLayer | None:
        """The entry of ``key`` if it is whole (its file there, of the recorded size), marked as used now
        unless ``use`` is False (a look that builds nothing, such as ``compare``'s)."""
        folder = self.root / key
        entry = _read(folder)
        if entry is None:
            return None
        if use:
            os.utime(folder / ENTRY_FILE)  # the last use, for prune --older-than
        return entry

    def put(self, key: str, layer: Layer, packages: Iterable[tuple[str, str]], facts: dict[str, Any]) -> CachedLayer:
        """Keep ``layer`` (its file is copied) under ``key``; return the entry, whose layer is the kept copy."""
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".entry-", dir=self.root))
        try:
            shutil.copyfile(layer.path, scratch / LAYER_FILE)
            now = time.time()
            record = {
                "digest": layer.digest,
                "diff_id": layer.diff_id,
                "size": layer.size,
                "media_type": layer.media_type,
                "packages": sorted([name, version] for name, version in packages),
                "facts": facts,
                "created": now,
            }
            replace_file(scratch / ENTRY_FILE, canonical_json(record))
            try:
                os.rename(scratch, self.root / key)
            except OSError:  # another build kept the same layer first: theirs is as good
                shutil.rmtree(scratch, ignore_errors=True)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        found = _read(self.root / key)
        if found is None:
            raise OSError(f"the layer cache entry {self.root / key} could not be read back")
        return found

    def entries(self) -> list[CachedLayer]:
        """Every whole entry, most recently used first."""
        if not self.root.is_dir():
            return []
        found = [e for e in (_read(p) for p in self.root.iterdir() if not p.name.startswith(".")) if e is not None]
        return sorted(found, key=lambda e: e.used, reverse=True)

    def prune(self, older_than: float | None = None) -> tuple[int, int]:
        """Remove the entries not used for ``older_than`` seconds (all, without it), and any partial or
        damaged ones; return how many entries and bytes were removed."""
        if not self.root.is_dir():
            return 0, 0
        cutoff = time.time() - older_than if older_than is not None else None
        removed = freed = 0
        for folder in self.root.iterdir():
            entry = _read(folder) if not folder.name.startswith(".") else None
            if entry is not None and cutoff is not None and entry.used >= cutoff:
                continue
            freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed, freed


def _read(folder: Path) -> CachedLayer | None:
    """The entry in ``folder``, or None if it is missing, partial or its layer file is not the recorded size."""
    try:
        record = json.loads((folder / ENTRY_FILE).read_text())
        used = (folder / ENTRY_FILE).stat().st_mtime
        path = folder / LAYER_FILE
        if path.stat().st_size != record["size"]:
            return None
        layer = Layer(path, record["digest"], record["diff_id"], record["size"], record["media_type"])
        packages = [(name, version) for name, version in record["packages"]]
        return CachedLayer(folder.name, layer, packages, record["facts"], record["created"], used)
    except (OSError, ValueError, KeyError, TypeError):
        return None
