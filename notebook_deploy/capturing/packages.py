"""The package state of a model: which installed distributions it needs, pinned, and an audit snapshot.

What a model needs is measured, not guessed: ``probe.py`` unpickles it in a fresh interpreter and calls
it on the sample, and every module that loads is mapped to the distribution that owns it. The lock is
those distributions plus what they require (as installed), each pinned to the version installed here.
Imports the session made for other reasons (plotting, cloud clients) never load in the probe, so they
stay out of the lock.

The fresh interpreter is kept warm between captures (``warm.py``): after a probe, a server with the
modules it found imported waits for the next probe of the same kind; the owners of modules
(``packages_distributions``, slow to build) are kept as long as the environment's fingerprint is the same.
"""

from __future__ import annotations

import copy
import json
import pickle
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..errors import CaptureError
from ..schema import differences, to_jsonable
from . import warm

PROBE = "notebook_deploy.capturing.probe"
# The runtime that serves a bundle is installed on its own; it is not one of the model's needs.
_RUNTIME = {"notebook-deploy"}


@dataclass
class PackageState:
    """What a capture found: the pinned lock, the directly used distributions, and warnings."""

    lock: dict[str, str] = field(default_factory=dict)  # display name → version, every needed distribution
    direct: list[str] = field(default_factory=list)  # "name==version" for the distributions the model imports
    warnings: list[str] = field(default_factory=list)
    reproduced: bool = True  # the model, loaded in a fresh interpreter, gave the outputs it gave here

    def lock_text(self) -> str:
        lines = [
            f"{name}=={version}" for name, version in sorted(self.lock.items(), key=lambda kv: canonicalize_name(kv[0]))
        ]
        header = (
            "# Every distribution the model needs, pinned to the version it was captured with.\n"
            f"# Python {platform.python_version()}. Written by notebook-deploy.\n"
        )
        return header + "".join(line + "\n" for line in lines)


def package_state(
    model_file: Path,
    model_input: Any,
    methods: list[str],
    referenced_modules: set[str],
    expected_outputs: dict[str, Any],
    timeout: float = 300,
) -> PackageState:
    """Find and pin the distributions the pickled model needs to load and run on ``model_input``.

    First the probe runs with only the distributions that the pickle and the input refer to (and what
    those require) importable; if the model still gives ``expected_outputs``, whatever else a library
    would import when present is not needed. Otherwise the probe runs again with everything importable.
    """
    environment = warm.fingerprint()
    owners = module_owners(environment)
    allowed = _with_requirements(_owners_of(referenced_modules, owners) | {"cloudpickle"})
    blocked = sorted(top for top, names in owners.items() if not any(canonicalize_name(n) in allowed for n in names))
    key = warm.Key(environment, tuple(blocked), tuple(sorted(referenced_modules)), tuple(methods))
    try:
        modules, outputs = probe(model_file, model_input, methods, blocked, timeout, key)
        same = _same(outputs, expected_outputs)
    except CaptureError:
        same = False
    if not same:
        key = warm.Key(environment, (), key.referenced, key.methods)
        modules, outputs = probe(model_file, model_input, methods, [], timeout, key)
        same = _same(outputs, expected_outputs)
    warm.keep_warm(key, sorted(modules))
    state = state_from_modules(modules, owners)
    state.reproduced = same
    return state


def _same(outputs: Any, expected: Any) -> bool:
    """Whether the probe's outputs are the model's here: labels exactly, numbers within ``PROBE_RTOL`` and
    ``PROBE_ATOL`` (float32 sums come out in another order with another thread count: a classifier's
    scores then differ in their seventh digit)."""
    return not differences(expected, to_jsonable(outputs), "outputs", PROBE_RTOL, PROBE_ATOL)


PROBE_RTOL, PROBE_ATOL = 1e-5, 1e-7

_owners_cache: tuple[str, Mapping[str, list[str]]] | None = None


def module_owners(environment: str | None = None) -> Mapping[str, list[str]]:
    """``metadata.packages_distributions()`` (top-level module → distributions), kept while the
    environment's fingerprint (``warm.fingerprint``) stays the same: building it reads every installed
    distribution's file list, a good part of a capture."""
    global _owners_cache
    environment = environment or warm.fingerprint()
    if _owners_cache is None or _owners_cache[0] != environment:
        _owners_cache = (environment, metadata.packages_distributions())
    return _owners_cache[1]


def probe(
    model_file: Path,
    model_input: Any,
    methods: list[str],
    blocked: list[str],
    timeout: float,
    key: warm.Key | None = None,
) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Unpickle and call the model in a fresh interpreter with this one's ``sys.path`` and ``blocked``
    top-level modules hidden; return the modules that loaded (name → file) and the outputs.

    With ``key`` (whose ``blocked`` is this ``blocked``), the warm server runs it when it serves that key;
    otherwise (or when the server cannot) a new interpreter does. Both end the same way: the same files, the same errors."""
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-probe-") as scratch:
        input_file = Path(scratch) / "input.pkl"
        input_file.write_bytes(pickle.dumps(model_input, protocol=5))
        finished = warm.run(key, model_file, input_file, methods, scratch, timeout) if key else None
        if finished is None:
            finished = _cold_probe(model_file, input_file, methods, blocked, scratch, timeout)
        if finished.timed_out:
            raise CaptureError(f"loading and calling the model in a fresh Python took over {timeout:.0f} s")
        if finished.returncode != 0:
            raise CaptureError(
                "the model could not be loaded and called in a fresh Python process, so it would not load "
                "where it is served either. The error was:\n" + finished.stderr.strip()[-3000:]
            )
        modules = json.loads((Path(scratch) / "modules.json").read_text())
        outputs = pickle.loads((Path(scratch) / "outputs.pkl").read_bytes())
        return modules, outputs


def _cold_probe(
    model_file: Path, input_file: Path, methods: list[str], blocked: list[str], report_dir: str, timeout: float
) -> warm.Finished:
    """The probe in a new interpreter."""
    command = [
        sys.executable,
        "-m",
        PROBE,
        str(model_file),
        str(input_file),
        json.dumps(methods),
        json.dumps(blocked),
        report_dir,
    ]
    try:
        result = subprocess.run(command, env=warm.probe_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return warm.Finished(-1, "", timed_out=True)
    return warm.Finished(result.returncode, result.stderr)


def _owners_of(modules: set[str], owners: Mapping[str, list[str]]) -> set[str]:
    """The distributions that own the top-level packages of ``modules``."""
    return {name for module in modules for name in owners.get(module.partition(".")[0], ())}


def state_from_modules(modules: dict[str, str | None], owners: Mapping[str, list[str]]) -> PackageState:
    """Map loaded modules to their distributions, add what those require, pin everything."""
    state = PackageState()
    used: set[str] = set()
    tops: dict[str, list[str]] = {}
    for module in modules:
        tops.setdefault(module.partition(".")[0], []).append(module)
    for top, members in sorted(tops.items()):
        if top in sys.stdlib_module_names or top.startswith("__") or top.lstrip("_") in sys.stdlib_module_names:
            continue  # the standard library, and aliases such as multiprocessing's __mp_main__
        candidates = owners.get(top, [])
        if len(candidates) > 1:  # several distributions share a top-level name (namespace packages)
            candidates = _owning(candidates, [modules[m] for m in members])
        if candidates:
            used.update(candidates)
        elif any(file and not _in_stdlib(file) for file in (modules[m] for m in members)):
            state.warnings.append(
                f"module '{top}' is used by the model but belongs to no installed distribution, so it will be "
                "missing where the bundle is served: install it as a package, or import it at the top of a "
                "module that the model's code lives in"
            )
    used = {d for d in used if canonicalize_name(d) not in _RUNTIME}
    closure = _with_requirements(used)
    for dist in closure.values():
        name = dist.metadata["Name"]
        state.lock[name] = dist.version
        state.warnings.extend(_origin_warnings(dist))
    required_by_others = {req for key, dist in closure.items() for req in _requirement_keys(dist)}
    state.direct = sorted(
        f"{closure[k].metadata['Name']}=={closure[k].version}"
        for k in {canonicalize_name(u) for u in used} - required_by_others
        if k in closure
    )
    state.warnings.extend(_skew_warnings(closure, owners))
    return state


def replay_requirements(modules: set[str], lock: dict[str, str]) -> list[str]:
    """The distributions that own ``modules`` (a recipe's imports) and what they require, pinned to the
    versions installed here, less those the lock pins already: what a fresh environment needs beside
    the model's lock to run the recipe's cells (plotting, the libraries that prepared the data).
    Modules of no installed distribution (the notebook's own files) are left out."""
    owners = module_owners()
    names = {name for module in modules if module not in sys.stdlib_module_names for name in owners.get(module, ())}
    locked = {canonicalize_name(name) for name in lock}
    closure = _with_requirements(names)
    return sorted(
        (f"{dist.metadata['Name']}=={dist.version}" for key, dist in closure.items() if key not in locked),
        key=str.lower,
    )


_snapshot_cache: tuple[str, dict[str, Any]] | None = None


def environment_snapshot() -> dict[str, Any]:
    """Every installed distribution with version and installer, plus Python and platform: for audit.
    Kept, like ``module_owners``, while the environment's fingerprint stays the same: reading every
    distribution's metadata is a good part of a warm capture."""
    global _snapshot_cache
    environment = warm.fingerprint()
    if _snapshot_cache is None or _snapshot_cache[0] != environment:
        _snapshot_cache = (environment, _snapshot())
    return copy.deepcopy(_snapshot_cache[1])


def _snapshot() -> dict[str, Any]:
    distributions = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or canonicalize_name(name) in distributions:
            continue
        entry = {"name": name, "version": dist.version, "installer": (dist.read_text("INSTALLER") or "").strip()}
        direct_url = dist.read_text("direct_url.json")
        if direct_url:
            entry["direct_url"] = json.loads(direct_url)
        distributions[canonicalize_name(name)] = entry
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "platform": {"system": platform.system(), "machine": platform.machine(), "libc": "-".join(platform.libc_ver())},
        "distributions": [distributions[k] for k in sorted(distributions)],
    }


def _owning(candidates: list[str], files: list[str | None]) -> list[str]:
    """The candidates whose RECORD lists one of ``files``."""
    wanted = {str(Path(f).resolve()) for f in files if f}
    found = []
    for name in candidates:
        dist = metadata.distribution(name)
        owned = {str(Path(str(dist.locate_file(f))).resolve()) for f in dist.files or ()}  # a path, typed SimplePath
        if owned & wanted:
            found.append(name)
    return found or candidates


def _with_requirements(names: set[str]) -> dict[str, metadata.Distribution]:
    """The distributions ``names`` and, recursively, the installed ones they require (markers and extras honoured)."""
    closure: dict[str, metadata.Distribution] = {}
    queue: list[tuple[str, frozenset[str]]] = [(n, frozenset()) for n in sorted(names)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, extras = queue.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen or key in _RUNTIME:
            continue
        seen.add((key, extras))
        try:
            dist = closure.get(key) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        closure[key] = dist
        for requirement in _requirements(dist):
            environments = [{"extra": e} for e in ("", *extras)]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                queue.append((requirement.name, frozenset(requirement.extras)))
    return closure


def _requirements(dist: metadata.Distribution) -> list[Requirement]:
    parsed = []
    for text in dist.requires or ():
        try:
            parsed.append(Requirement(text))
        except InvalidRequirement:
            continue
    return parsed


def _requirement_keys(dist: metadata.Distribution) -> set[str]:
    return {
        canonicalize_name(r.name) for r in _requirements(dist) if r.marker is None or r.marker.evaluate({"extra": ""})
    }


def _origin_warnings(dist: metadata.Distribution) -> list[str]:
    text = dist.read_text("direct_url.json")
    if not text:
        return []
    origin = json.loads(text)
    name = dist.metadata["Name"]
    if origin.get("dir_info", {}).get("editable"):
        return [
            f"{name} is an editable install: the pin {name}=={dist.version} names code on this machine only; "
            "its modules are shipped in the pickle where the model refers to them"
        ]
    if origin.get("url", "").startswith("file:"):
        return [
            f"{name} was installed from a local file ({origin['url']}): {name}=={dist.version} may not be "
            "installable elsewhere; publish it to a package index"
        ]
    return []


def _skew_warnings(closure: dict[str, metadata.Distribution], owners: Mapping[str, list[str]]) -> list[str]:
    """Packages upgraded on disk after this session imported them: the bundle pins what is on disk."""
    warnings = []
    for top, names in sorted(owners.items()):
        key = canonicalize_name(names[0])
        module = sys.modules.get(top)
        if len(names) != 1 or key not in closure or module is None:
            continue
        loaded, installed = getattr(module, "__version__", None), closure[key].version
        try:
            differs = isinstance(loaded, str) and Version(loaded) != Version(installed)
        except InvalidVersion:
            continue
        if differs:
            warnings.append(
                f"{top} {loaded} is loaded in this session but {installed} is installed: restart the kernel "
                "and capture again so that the bundle pins the version the model was built with"
            )
    return warnings


def _in_stdlib(file: str) -> bool:
    import sysconfig

    path = Path(file).resolve()
    return any(path.is_relative_to(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "platstdlib"))
