"""Serialise a live model with cloudpickle so that it loads where only its packages are installed.

cloudpickle already pickles ``__main__`` classes and functions by value. A module that is neither the
standard library nor installed (a ``helpers.py`` next to the notebook, a ``sys.path.append("../src")``
package, an editable install) would be pickled by reference and be missing where the bundle is served,
so every such module the model reaches is registered for pickling by value and the model dumped again.

Torch tensors are not written into the pickle: they are collected for the weights file beside it
(``notebook_deploy.weights``), so the pickle of a large model stays small.
"""

from __future__ import annotations

import io
import site
import sys
import sysconfig
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from ..weights import TensorCollector

PROTOCOL = 5


@dataclass(frozen=True)
class PickledModel:
    data: bytes
    by_value_modules: tuple[str, ...]
    referenced_modules: frozenset[str]  # the module of every class, function and instance in the pickle
    captured_globals: dict[str, Any]  # globals that functions pickled by value carry, by name
    weights: TensorCollector  # the tensors the pickle refers to by persistent id


class _ModuleRecordingPickler(cloudpickle.Pickler):
    """A cloudpickle Pickler that notes the module of every class, function and instance it writes."""

    def __init__(self, file: io.BytesIO, modules: set[str], captured: dict[str, Any], weights: TensorCollector) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._modules = modules
        self._captured = captured
        if weights.active:  # the hook is called for every object pickled: only set where it can find tensors
            self.persistent_id = weights.persistent_id

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            self._modules.add(obj.__name__)
        elif isinstance(obj, (type, types.FunctionType)):
            self._modules.add(getattr(obj, "__module__", None) or "")
            if isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
                names = obj.__code__.co_names
                self._captured.update((n, obj.__globals__[n]) for n in names if n in obj.__globals__)
        else:
            self._modules.add(type(obj).__module__)
        return super().reducer_override(obj)


def dump_model(model: Any) -> PickledModel:
    """Pickle ``model``, shipping by value every local (non-installed, non-stdlib) module it refers to."""
    registered: list[types.ModuleType] = []
    try:
        for _ in range(10):  # each round may reach further local modules through the ones just added
            buffer, modules, captured, weights = io.BytesIO(), set[str](), dict[str, Any](), TensorCollector()
            _ModuleRecordingPickler(buffer, modules, captured, weights).dump(model)
            local = [m for m in _top_level_modules(modules) if is_local_module(m) and m not in registered]
            if not local:
                by_value = tuple(sorted(m.__name__ for m in registered))
                return PickledModel(buffer.getvalue(), by_value, frozenset(modules), captured, weights)
            for module in local:
                cloudpickle.register_pickle_by_value(module)
                registered.append(module)
        raise RuntimeError("local modules kept appearing while pickling the model")
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)


def _top_level_modules(names: set[str]) -> list[types.ModuleType]:
    tops = {name.partition(".")[0] for name in names if name}
    return [sys.modules[t] for t in sorted(tops) if t in sys.modules and t != "__main__"]


def is_local_module(module: types.ModuleType) -> bool:
    """True for a module loaded from a file outside the standard library and every site-packages."""
    file = getattr(module, "__file__", None)
    if not file or module.__name__ in sys.builtin_module_names or module.__name__ in sys.stdlib_module_names:
        return False
    path = Path(file).resolve()
    return not any(path.is_relative_to(root) for root in _installed_roots())


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    roots.update(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        roots.add(site.getusersitepackages())
    roots.update(p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")))
    return [Path(r).resolve() for r in roots if r]
