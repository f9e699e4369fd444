"""What one execution was seen to do while it ran: files it read and wrote, URLs it fetched, the
namespace objects it changed in place, the global random states it drew from or seeded.

The session recorder (``jupyter/recorder.py``) fills one ``Observation`` per execution; the slicer
uses them to refine what a static reading of the text can tell (``slicing.slice_history``). Nothing
here imports IPython: the recorder hands in the namespace and the events.

Changes are found by fingerprinting the namespace's objects before and after the execution: identity
plus a cheap content digest. The digest is bounded: large arrays and frames are sampled (a change
that touches no sampled element can be missed; a column added or dropped, a reshape or a fitted
estimator always show), and modules, functions and classes are skipped.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

_FULL_BYTES = 1 << 20  # arrays up to this size are hashed whole; larger ones are sampled
_SAMPLE = 4096  # elements (or rows) taken from a larger array or frame
_DEPTH = 8  # how deep containers and object attributes are followed
_ITEMS = 64  # how many items of a container are followed
_BUDGET = 4000  # objects digested for one namespace value; more and it is not compared
_SKIPPED = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)


@dataclass
class FileAccess:
    """A file an execution opened: the path as the code gave it, where it resolved, and who opened it."""

    given: str
    resolved: str
    opener: str  # the top-level package whose code called open (pandas, numpy, joblib ...) or "open()"
    size: int | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Observation:
    """What one execution did, as the recorder saw it."""

    cwd_before: str
    cwd_after: str = ""
    reads: list[FileAccess] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)  # resolved paths opened for writing
    urls: list[str] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # names whose object changed in place
    unchanged: set[str] = field(default_factory=set)  # names whose object was fingerprinted and did not
    rng_drawn: set[str] = field(default_factory=set)  # libraries whose global random state moved
    seeded: set[str] = field(default_factory=set)  # libraries seeded during the execution
    unseeded_estimators: list[str] = field(default_factory=list)  # "name (Type)" fitted with random_state=None
    # top-level modules the execution loaded, or whose objects it bound or changed: what a replay needs
    modules: set[str] = field(default_factory=set)


# -- fingerprints -------------------------------------------------------------------------------------------
def fingerprint(value: Any, depth: int = _DEPTH) -> str | None:
    """A digest of ``value``'s content, or None when it cannot be told cheaply (then it is not compared)."""
    digest = _Digest()
    if not _feed(digest, value, depth):
        return None
    return digest.hexdigest()


class _Digest:
    """A blake2b digest that counts the objects fed to it, so that one value's cost is bounded."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.left = _BUDGET

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _feed(digest: _Digest, value: Any, depth: int) -> bool:
    """Feed ``value``'s content to ``digest``; False when it holds something that cannot be digested
    within the depth and budget (then a change could go unseen, so it is not compared at all)."""
    digest.left -= 1
    if digest.left < 0:
        return False
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        digest.update(repr(value)[:4096].encode("utf-8", "replace"))
        return True
    if isinstance(value, _SKIPPED):
        digest.update(f"<{type(value).__name__} {getattr(value, '__qualname__', '')}>".encode())
        return True
    if depth <= 0:
        return False
    module = type(value).__module__.partition(".")[0]
    if module == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
        return _feed_array(digest, value)
    if module == "pandas":
        return _feed_pandas(digest, value)
    if module == "torch" and hasattr(value, "detach"):
        return _feed_array(digest, value.detach().cpu().numpy())
    if isinstance(value, (set, frozenset)) and len(value) > _ITEMS:
        return False  # a set has no order to sample by; sorting a large one costs too much
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value) if not isinstance(value, (set, frozenset)) else sorted(value, key=repr)
        digest.update(f"{type(value).__name__}{len(items)}".encode())
        return all(_feed(digest, item, depth - 1) for item in _spread(items))
    if isinstance(value, dict):
        digest.update(f"dict{len(value)}".encode())
        keys = list(value)
        return all(_feed(digest, k, 1) and _feed(digest, value[k], depth - 1) for k in _spread(keys))
    try:  # an object's pickled state: its __dict__, or what an extension type (a tree) says it is
        state = value.__getstate__() if hasattr(value, "__getstate__") else None
        state = state if isinstance(state, dict) else getattr(value, "__dict__", None)
    except Exception:  # noqa: BLE001 - a state that cannot be read is not compared
        return False
    if isinstance(state, dict):
        digest.update(type(value).__qualname__.encode())
        return _feed(digest, state, depth - 1)
    return False


def _spread(items: list[Any]) -> list[Any]:
    """At most ``_ITEMS`` items, spread over the whole sequence."""
    if len(items) <= _ITEMS:
        return items
    step = len(items) / _ITEMS
    return [items[int(i * step)] for i in range(_ITEMS)] + [items[-1]]


def _feed_array(digest: _Digest, array: Any) -> bool:
    import numpy as np

    digest.update(f"{array.dtype}{array.shape}".encode())
    flat = array.reshape(-1)
    if array.dtype == object:
        return all(_feed(digest, item, 1) for item in _spread(list(flat[:: max(1, flat.size // _ITEMS)])))
    if array.nbytes > _FULL_BYTES:
        flat = flat[:: max(1, flat.size // _SAMPLE)]
    digest.update(np.ascontiguousarray(flat).tobytes())
    return True


def _feed_pandas(digest: _Digest, value: Any) -> bool:
    import pandas as pd

    if not isinstance(value, (pd.DataFrame, pd.Series, pd.Index)):
        return False
    digest.update(f"{type(value).__name__}{value.shape}".encode())
    if isinstance(value, pd.DataFrame):
        digest.update(repr(list(value.columns)).encode() + repr(list(value.dtypes)).encode())
    elif isinstance(value, pd.Series):
        digest.update(f"{value.name!r}{value.dtype}".encode())
    step = max(1, len(value) // _SAMPLE)
    rows = value if len(value) <= _SAMPLE else value[::step] if isinstance(value, pd.Index) else value.iloc[::step]
    try:
        digest.update(pd.util.hash_pandas_object(rows, index=True).to_numpy().tobytes())
    except TypeError:  # unhashable cells (lists, dicts): their text stands in
        # an Index has no .iloc (sliced above) nor .to_string (shown as a Series)
        digest.update((rows.to_series() if isinstance(rows, pd.Index) else rows).to_string().encode())
    return True


def snapshot(namespace: Mapping[str, Any]) -> dict[str, tuple[int, str | None]]:
    """name -> (identity, digest) of the user's objects in ``namespace`` (private and IPython names skipped)."""
    found = {}
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in ("In", "Out", "exit", "quit", "get_ipython") or isinstance(value, _SKIPPED):
            continue
        try:
            found[name] = (id(value), fingerprint(value))
        except Exception:  # noqa: BLE001 - an object whose attributes raise is not compared
            found[name] = (id(value), None)
    return found


def changes(
    before: Mapping[str, tuple[int, str | None]], after: Mapping[str, tuple[int, str | None]]
) -> tuple[set[str], set[str]]:
    """(names changed in place, names fingerprinted and unchanged): same object before and after."""
    changed: set[str] = set()
    unchanged: set[str] = set()
    for name, (identity, digest) in after.items():
        old = before.get(name)
        if old is None or old[0] != identity or digest is None or old[1] is None:
            continue
        (unchanged if old[1] == digest else changed).add(name)
    return changed, unchanged


def unseeded_estimators(namespace: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """Among ``names``, the fitted estimators whose ``random_state`` is None: they drew from NumPy's global state."""
    found = []
    for name in sorted(names):
        value = namespace.get(name)
        get_params = getattr(value, "get_params", None)
        if not callable(get_params) or isinstance(value, type):
            continue
        try:
            params = get_params(deep=False)
        except Exception:  # noqa: BLE001 - not an estimator after all
            continue
        fitted = (
            any(k.endswith("_") and not k.startswith("_") for k in vars(value)) if hasattr(value, "__dict__") else False
        )
        if "random_state" in params and params["random_state"] is None and fitted:
            found.append(f"{name} ({type(value).__name__})")
    return found


# -- global random states -----------------------------------------------------------------------------------
SEED_FUNCTIONS = {
    "random": ("random", ("seed", "setstate")),
    "numpy": ("numpy.random", ("seed", "set_state")),
    "torch": ("torch", ("manual_seed", "seed")),
}


def rng_states() -> dict[str, str]:
    """library -> a digest of its global random state, for the libraries imported now."""
    states = {"random": _digest(random.getstate())}
    if "numpy" in sys.modules:
        kind, keys, position, *_ = sys.modules["numpy"].random.get_state()
        states["numpy"] = _digest((kind, keys.tobytes(), position))
    if "torch" in sys.modules and hasattr(sys.modules["torch"], "get_rng_state"):
        states["torch"] = _digest(sys.modules["torch"].get_rng_state().numpy().tobytes())
    return states


def first_loaded(before: Iterable[str]) -> set[str]:
    """The top-level modules in ``sys.modules`` now that were not in ``before`` (its names then): what an
    execution imported, directly or through a library that imports lazily (pandas' parquet reader)."""
    known = set(before)
    return {name.partition(".")[0] for name in list(sys.modules) if name not in known}


def value_modules(namespace: Mapping[str, Any], names: Iterable[str]) -> set[str]:
    """The top-level modules that define the types of the values of ``names``, and of the items of their
    dicts, lists and tuples (a dataset ``Bunch`` holding frames): the libraries those objects need, even
    when they were imported before the execution (``load_iris(as_frame=True)`` needs pandas)."""
    found = set()
    for name in names:
        value = namespace.get(name)
        items = (
            list(value.values())[:_ITEMS]
            if isinstance(value, dict)
            else (list(value[:_ITEMS]) if isinstance(value, (list, tuple)) else [])
        )
        for item in [value, *items]:
            module = type(item).__module__.partition(".")[0]
            if module != "builtins":
                found.add(module)
    return found


def _digest(value: Any) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=16).hexdigest()


# -- who opened a file ---------------------------------------------------------------------------------------
def opener(frame: Any) -> str:
    """The package whose code opened a file, from the frames above the audit hook: the outermost library
    frame under the first notebook frame (``__main__`` globals), or ``open()`` when notebook code did."""
    library = None
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == "__main__":
            return library or "open()"
        if not name.startswith("notebook_deploy"):
            library = name.partition(".")[0] or library
        frame = frame.f_back
    return library or "open()"


def resolve(path: Any, cwd: str) -> tuple[str, str] | None:
    """(the path as given, absolute and normalised) for an ``open`` audit event's path, None for a descriptor."""
    try:
        given = os.fsdecode(os.fspath(path))
    except TypeError:
        return None
    return given, os.path.normpath(os.path.join(cwd, given))
