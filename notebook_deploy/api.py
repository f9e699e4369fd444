"""Functions that take a reference, a path or a Bundle alike, shared by the Python API and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

from .bundle import Bundle
from .store import Store


def load(ref: str | os.PathLike[str] | Bundle, store: Store | str | os.PathLike[str] | None = None) -> Bundle:
    """The bundle ``ref`` names: ``name``, ``name:latest``, ``name:TAG``, ``name:VERSION``, or a bundle
    directory's path. Every file is checked against the manifest; a changed file raises
    ``BundleIntegrityError`` naming it."""
    if isinstance(ref, Bundle):
        return ref
    if isinstance(ref, os.PathLike) or os.sep in ref or Path(ref).is_dir():  # names cannot hold a separator
        return Bundle.open(Path(ref))
    store = store if isinstance(store, Store) else Store(store)
    return store.get(str(ref))
