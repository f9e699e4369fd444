"""A static scan of a pickle's opcodes: what loading it would import and call, found without loading it.

Loading a pickle runs code: every ``GLOBAL``/``STACK_GLOBAL`` imports a callable and every ``REDUCE``
calls one. The scan walks the opcodes with ``pickletools`` and a small symbolic stack (constants, tuples,
globals and calls; everything else is opaque) and reports:

- imports of dangerous callables (``os``, ``subprocess``, ``builtins.exec``/``eval``, ...), also when
  reached through an attribute path (``GLOBAL sklearn.base os``), through ``getattr`` chains, or through
  cloudpickle's own ``subimport("os")``, which is how a function pickled by value refers to a module;
- code objects that cloudpickle rebuilds (functions and classes defined in a notebook, pickled by value)
  that import those modules or call ``exec``, ``eval``, ``__import__``: loading does not run that code,
  calling the model does;
- something built inside the pickle that loading itself would call (a ``_make_function`` result, a method
  of an object built while loading), which no model needs and which is how a payload hides from a list of
  dangerous globals;
- a global whose name is computed, which cannot be checked.

Why our own scanner (checked on fickling 0.1.12 and modelscan 0.8.8 from PyPI, with cloudpickle 3.1
pickles of a scikit-learn pipeline, of a pipeline holding a notebook function, of a notebook class and of
two payloads): fickling fails on the scikit-learn pipeline (``NotImplementedError: BYTEARRAY8``, the
opcode protocol 5 gives NumPy arrays) and calls every by-value function or class "LIKELY_OVERTLY_MALICIOUS"
because it imports ``cloudpickle.cloudpickle._make_function``, so every notebook model would be refused.
modelscan passes the three models and names ``posix.system`` in the classic payload, but lets through a
payload written as a notebook function that the pickle calls while loading (``__reduce__`` returning
``(payload, ())``): loading that pickle created the marker file. Both look at globals only; cloudpickle's
by-value code needs the stack followed. This is a tripwire for known shapes, not a sandbox: code pickled
by value can do harm without naming anything listed here, which is why bundles from elsewhere are also
checked against trusted signatures.
"""

from __future__ import annotations

import dis
import os
import pickletools
import types
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .errors import UnsafePickleError

SCANNER = "notebook-deploy-pickle-scan"
SCANNER_VERSION = 1

# Modules whose callables start processes, open sockets or files, load code or other pickles.
DENIED_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "pty",
        "subprocess",
        "_posixsubprocess",
        "socket",
        "shutil",
        "importlib",
        "sys",
        "runpy",
        "ctypes",
        "multiprocessing",
        "signal",
        "code",
        "codeop",
        "pdb",
        "bdb",
        "webbrowser",
        "http",
        "urllib",
        "urllib3",
        "requests",
        "httpx",
        "ftplib",
        "smtplib",
        "telnetlib",
        "asyncio",
        "pickle",
        "_pickle",
        "marshal",
        "dill",
        "joblib",
        "zipimport",
        "pkgutil",
        "site",
        "io",
        "_io",
        "fcntl",
        "mmap",
    }
)
# Callables of harmless modules that run code, read attributes by name or open files.
DENIED_GLOBALS = frozenset(
    {
        "builtins.exec",
        "builtins.eval",
        "builtins.compile",
        "builtins.__import__",
        "builtins.open",
        "builtins.breakpoint",
        "builtins.input",
        "builtins.globals",
        "builtins.locals",
        "builtins.vars",
        "builtins.setattr",
        "builtins.delattr",
        "builtins.__build_class__",
        "builtins.help",
        "builtins.exit",
        "builtins.quit",
        "operator.attrgetter",
        "operator.methodcaller",
        "numpy.load",
        "numpy.fromfile",
        "numpy.memmap",
        "numpy.lib.npyio.load",
    }
)
# Attribute names that reach those callables, or code and globals, from anything.
DENIED_ATTRIBUTES = DENIED_MODULES | frozenset(
    {
        "system",
        "popen",
        "spawnv",
        "spawnve",
        "execv",
        "execve",
        "fork",
        "kill",
        "remove",
        "unlink",
        "rmtree",
        "Popen",
        "check_output",
        "check_call",
        "getoutput",
        "run",
        "call",
        "exec",
        "eval",
        "compile",
        "__import__",
        "open",
        "load",
        "loads",
        "__builtins__",
        "__globals__",
        "__subclasses__",
        "__code__",
        "__getattribute__",
        "__dict__",
        "__class__",
        "__base__",
        "__bases__",
        "__mro__",
        "__loader__",
        "__spec__",
        "modules",
    }
)
# Builtins that run text as code, as code pickled by value may name them.
CODE_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "breakpoint", "__builtins__", "globals"})

_FUNCTION_TYPES = ("FunctionType", "LambdaType")


@dataclass(frozen=True)
class Global:
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True, eq=False)
class Call:
    callable: Any
    args: Any


class _Mark:
    pass


class _Opaque:
    """A value the scan does not follow (a list, a dict, an instance ...)."""


class _Instance(_Opaque):
    """An object made while loading by calling a class (NEWOBJ, OBJ)."""


@dataclass
class PickleScan:
    """What a pickle would import, and the findings that make it unsafe to load."""

    globals: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)  # every text constant, for the secret scan

    @property
    def safe(self) -> bool:
        return not self.findings

    def to_manifest(self) -> dict[str, Any]:
        """The record capture keeps in the manifest (``pickle_scan``)."""
        return {
            "scanner": SCANNER,
            "version": SCANNER_VERSION,
            "globals": sorted(set(self.globals)),
            "findings": list(self.findings),
        }


def scan_pickle(data: bytes | BinaryIO) -> PickleScan:
    """Walk the opcodes of ``data`` (bytes, or a file read as it goes) without loading it; a pickle that
    cannot be parsed is a finding."""
    scan = PickleScan()
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            _step(opcode, arg, stack, memo, scan)
    except (ValueError, IndexError, KeyError, TypeError) as error:  # malformed, or a stack our model lost
        scan.findings.append(f"the pickle cannot be scanned ({type(error).__name__}: {error})")
    scan.findings = list(dict.fromkeys(scan.findings))
    return scan


def check_pickle(path: str | os.PathLike[str], recorded: dict[str, Any] | None = None) -> PickleScan:
    """Scan the pickle at ``path`` and raise ``UnsafePickleError`` naming what it would import or call
    (and what capture recorded, ``recorded``, when that differs): the one check before a pickle that came
    from elsewhere is loaded."""
    with open(path, "rb") as file:  # read as the opcodes go: a model of gigabytes is not held twice
        scan = scan_pickle(file)
    if not scan.safe:
        noted = ""
        if recorded is not None and list(recorded.get("findings", [])) != scan.findings:
            noted = f" (the manifest records {len(recorded.get('findings', []))} findings: it was made elsewhere)"
        raise UnsafePickleError(
            str(path),
            "loading it would run code that is not a model's: "
            + "; ".join(scan.findings)
            + noted
            + ". It was not loaded. Load only bundles from people you trust; rebuild this model from its "
            "recipe (`notebook-deploy verify`) or inspect it with `python -m pickletools FILE`",
        )
    return scan


def _step(opcode: pickletools.OpcodeInfo, arg: Any, stack: list[Any], memo: dict[int, Any], scan: PickleScan) -> None:
    name = opcode.name
    if name in ("GLOBAL", "INST"):
        module, _, attribute = arg.partition(" ")
        target = Global(module, attribute)
        _check_global(target, scan)
        if name == "INST":
            args = _pop_to_mark(stack)
            stack.append(_call(target, tuple(args), scan))
        else:
            stack.append(target)
    elif name == "STACK_GLOBAL":
        attribute, module = stack.pop(), stack.pop()
        if not (isinstance(module, str) and isinstance(attribute, str)):
            scan.findings.append("imports a global whose name is computed while loading, which cannot be checked")
            stack.append(_Opaque())
        else:
            target = Global(module, attribute)
            _check_global(target, scan)
            stack.append(target)
    elif name == "REDUCE":
        args, target = stack.pop(), stack.pop()
        stack.append(_call(target, args, scan))
    elif name == "OBJ":
        items = _pop_to_mark(stack)
        stack.append(_call(items[0], tuple(items[1:]), scan) if items else _Opaque())
    elif name in ("NEWOBJ", "NEWOBJ_EX"):
        del stack[-(3 if name == "NEWOBJ_EX" else 2) :]
        stack.append(_Instance())
    elif name == "MARK":
        stack.append(_Mark())
    elif name == "TUPLE":
        stack.append(tuple(_pop_to_mark(stack)))
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        count = int(name[-1])
        members = tuple(stack[-count:])
        del stack[-count:]
        stack.append(members)
    elif name == "EMPTY_TUPLE":
        stack.append(())
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[int(arg)] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[int(arg)])
    elif name == "DUP":
        stack.append(stack[-1])
    elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
        stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
    elif (
        opcode.arg is not None
        and not opcode.stack_before
        and len(opcode.stack_after) == 1
        and name not in ("PERSID", "EXT1", "EXT2", "EXT4")
    ):  # a constant: strings, bytes, numbers
        if isinstance(arg, str):
            scan.strings.append(arg)
        stack.append(arg)
    else:
        _generic(opcode, stack)


def _generic(opcode: pickletools.OpcodeInfo, stack: list[Any]) -> None:
    """Apply an opcode's stack effect with opaque results; containers filled in place stay the same value."""
    before = list(opcode.stack_before)
    if pickletools.markobject in before:
        _pop_to_mark(stack)
        before = before[: before.index(pickletools.markobject)]
    kept = stack[-len(before)] if before else None
    if before:
        del stack[-len(before) :]
    if opcode.name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD", "READONLY_BUFFER"):
        stack.append(kept)
    else:
        stack.extend(_Opaque() for _ in opcode.stack_after)


def _pop_to_mark(stack: list[Any]) -> list[Any]:
    for index in range(len(stack) - 1, -1, -1):
        if isinstance(stack[index], _Mark):
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise IndexError("no MARK on the stack")


def _check_global(target: Global, scan: PickleScan) -> None:
    scan.globals.append(str(target))
    parts = target.name.split(".")
    if (
        target.module.split(".")[0] in DENIED_MODULES
        or str(target) in DENIED_GLOBALS
        or any(part in DENIED_ATTRIBUTES for part in parts[1:])
        or parts[0] in DENIED_MODULES
    ):
        scan.findings.append(f"imports {target}")


def _call(target: Any, args: Any, scan: PickleScan) -> Any:
    """The value of ``target(*args)``, after checking that loading may make that call."""
    args = args if isinstance(args, tuple) else ()
    result = Call(target, args)
    if isinstance(target, Global):
        if target.module.startswith("cloudpickle") and target.name in ("subimport", "dynamic_subimport"):
            module = args[0] if args else None
            if not isinstance(module, str) or module.split(".")[0] in DENIED_MODULES:
                scan.findings.append(f"imports module {module} (cloudpickle.{target.name})")
        elif str(target) == "builtins.getattr":
            attribute = args[1] if len(args) > 1 else None
            if not isinstance(attribute, str) or attribute in DENIED_ATTRIBUTES or _is_module(args[0]):
                scan.findings.append(f"reads attribute {attribute!r} with builtins.getattr")
    elif _makes_function(target):
        scan.findings.append(f"calls {_function_name(target)}, a function defined inside the pickle, while loading")
    elif isinstance(target, _Instance) or (
        isinstance(target, Call)
        and str(target.callable) == "builtins.getattr"
        and target.args
        and not isinstance(target.args[0], Global)
    ):
        scan.findings.append("calls a method of an object built while loading")
    if _makes_code(target):
        _check_code(args, scan)
    return result


def _is_module(value: Any) -> bool:
    return isinstance(value, Call) and isinstance(value.callable, Global) and value.callable.name.endswith("subimport")


def _builtin_type(value: Any) -> str | None:
    """``X`` for ``types.X`` or cloudpickle's ``_builtin_type("X")``."""
    if isinstance(value, Global) and value.module == "types":
        return value.name
    if (
        isinstance(value, Call)
        and isinstance(value.callable, Global)
        and value.callable.name == "_builtin_type"
        and value.args
        and isinstance(value.args[0], str)
    ):
        return value.args[0]
    return None


def _makes_code(target: Any) -> bool:
    return _builtin_type(target) == "CodeType"


def _makes_function(value: Any) -> bool:
    """Whether ``value`` is a function made inside the pickle (cloudpickle's ``_make_function``, ``FunctionType``)."""
    if not isinstance(value, Call):
        return False
    maker = value.callable
    return (
        isinstance(maker, Global) and maker.module.startswith("cloudpickle") and maker.name == "_make_function"
    ) or _builtin_type(maker) in _FUNCTION_TYPES


def _function_name(value: Call) -> str:
    code = next((arg for arg in value.args if isinstance(arg, Call) and _makes_code(arg.callable)), None)
    names = [arg for arg in (code.args if code else ()) if isinstance(arg, str)]
    return repr(names[1]) if len(names) > 1 else "a function"  # co_filename, co_name, co_qualname ...


def _check_code(args: tuple[Any, ...], scan: PickleScan) -> None:
    """Check a code object cloudpickle rebuilds: what it imports and which builtins that run code it calls."""
    code = _rebuild_code(args)
    if code is None:  # made by another Python version: check the names it uses, without telling how
        names = next((args[i + 2] for i, a in enumerate(args) if isinstance(a, bytes) and i + 2 < len(args)), ())
        used = {n for n in names if isinstance(n, str)} if isinstance(names, tuple) else set()
        found = sorted(used & (DENIED_MODULES | CODE_BUILTINS))
        owner = "code pickled by value"
    else:
        found = sorted(_dangerous_names(code))
        owner = f"function {code.co_qualname if hasattr(code, 'co_qualname') else code.co_name}() pickled by value"
    for name in found:
        scan.findings.append(f"{owner} uses {name}")


def _rebuild_code(args: tuple[Any, ...]) -> types.CodeType | None:
    """The code object, built (not run) to read its instructions; nested code objects are left out."""
    try:
        plain: tuple[Any, ...] = tuple(  # the constructor's arguments, as the pickle gave them
            tuple(None if isinstance(c, (Call, _Opaque)) else c for c in a) if isinstance(a, tuple) else a for a in args
        )
        return types.CodeType(*plain)
    except (TypeError, ValueError):
        return None


def _dangerous_names(code: types.CodeType) -> set[str]:
    found = set()
    try:
        for instruction in dis.get_instructions(code):
            value = instruction.argval
            if not isinstance(value, str):
                continue
            if instruction.opname == "IMPORT_NAME" and value.split(".")[0] in DENIED_MODULES:
                found.add(f"import {value}")
            elif instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and value in CODE_BUILTINS:
                found.add(value)
            elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and value in (
                "system",
                "popen",
                "__subclasses__",
                "__globals__",
                "__builtins__",
                "__import__",
                "subprocess",
            ):
                found.add(f".{value}")
    except Exception:  # noqa: BLE001 - instructions made elsewhere that dis cannot read
        return set(code.co_names) & (DENIED_MODULES | CODE_BUILTINS)
    return found
