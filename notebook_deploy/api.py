"""Functions that take a reference, a path or a Bundle alike, shared by the Python API and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

from .bundle import Bundle
from .store import Store


def load(ref: str | os.PathLike[str] | Bundle, store: Store | str | os.PathLike[str] | None = None) -> Bundle:
    """The bundle ``ref`` names: ``name``, ``name:latest``, ``name:TAG``, ``name:VERSION``, or a bundle
    directory's path. Every file is checked against the manifest; a changed file raises
    ``BundleIntegrityError`` naming it, and a folder from outside the store whose pickle would import
    something dangerous raises ``UnsafePickleError``."""
    if isinstance(ref, Bundle):
        return ref
    store = store if isinstance(store, Store) else Store(store)
    if isinstance(ref, os.PathLike) or os.sep in ref or Path(ref).is_dir():  # names cannot hold a separator
        return _open_path(Path(ref), store)
    return store.get(str(ref))


def _open_path(path: Path, store: Store) -> Bundle:
    """The bundle folder at ``path``, its pickle scanned first unless it is a version of ``store`` (whose
    versions were captured here or scanned on import): a folder given by path may come from anywhere."""
    bundle = Bundle.open(path)
    holder = Store.holding(path)
    if holder is None or holder.root.resolve() != store.root.resolve():
        bundle.check_pickle()
    return bundle
