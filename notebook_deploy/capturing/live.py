"""Capture a live model object into a versioned bundle in the store."""

from __future__ import annotations

import inspect
import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import cloudpickle
import nbformat
import numpy as np

from .. import audit, drift, pretrained, repeats
from ..bundle import (
    ENVIRONMENT_FILE,
    LOCK_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    RECIPE_LOCK_FILE,
    REFERENCE_FILE,
    SAMPLE_FILE,
    Bundle,
    seal_manifest,
    write_file,
)
from ..errors import CaptureError, InputError
from ..methods import available_methods, default_method, resolve_methods
from ..pickle_scan import PickleScan, scan_pickle
from ..provenance import sign_own_capture
from ..schema import Schema, as_rows, differences, dumps, head, infer_schema, take_rows, to_jsonable
from ..store import Store, check_name, name_from
from ..weights import WEIGHTS_FILE, TensorCollector
from . import fits
from .columns import probe_unused_columns
from .domains import probe_domains
from .fetched import keep_fetched as keep_fetched_bytes
from .packages import PackageState, environment_snapshot, package_state, replay_requirements
from .pickling import PROTOCOL, PickledModel, dump_model
from .recipe import History, Recipe, build_recipe
from .recipe import include_data as include_data_files
from .secrets import check_no_secrets, find_secrets_in_cells, find_secrets_in_texts, find_secrets_in_values

SAMPLE_ROWS = 5
DATA_LIMIT = 10 * 1024 * 1024


@repeats.collapsed
def capture(
    model: Any,
    name: str | None = None,
    sample: Any = None,
    *,
    methods: list[str] | None = None,
    labels: dict[str, str] | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    sample_rows: int = SAMPLE_ROWS,
    history: History | None = None,
    variable: str | None = None,
    include_data: bool | int = False,
    reference_data: bool = False,
    keep_fetched: bool = False,
    allow_secrets: bool = False,
    reference: Any = None,
    sample_source: str | None = None,
) -> Bundle:
    """Capture ``model`` into a new bundle version and return it.

    ``sample`` is a few rows of the model's input (a NumPy array, a DataFrame or a list of rows): the
    request schema is inferred from it, the model is tested on it, and the packages the model needs are
    found by running the model on it in a fresh Python. ``name`` defaults to the variable the model is
    bound to in the caller. ``methods`` defaults to every inference method the model has.

    With ``history`` (what ran in the session, see ``notebook_deploy.capturing.recipe``), the executions
    that rebuild ``variable`` (the model's variable name) are kept in the bundle as a runnable recipe;
    ``include_data`` stores copies of the data files it reads (``True``: those up to 10 MiB; a number:
    up to that many bytes); a file above that cap refuses the capture, unless ``reference_data`` is true:
    then only its path and sha256 are recorded, and verify refuses any other file. ``keep_fetched``
    fetches the URLs the recipe fetched once more and keeps their bytes (up to the same cap), which then
    answer those URLs in verify's replay (``notebook_deploy.capturing.fetched``). The recipe and the globals that notebook code in the model reads are
    scanned for credentials first; a finding refuses the capture unless ``allow_secrets`` is true.

    Without ``sample``, the rows are the first rows of the data the model was fitted on, when the IPython
    extension observed that call (``notebook_deploy.capturing.fits``). ``sample_source`` says where a given
    sample came from ("given by --sample X[:5]"); it is kept in the manifest and named in errors.

    ``reference`` (the training inputs, e.g. ``X_train``) gives the statistics that served inputs and
    predictions are compared with to watch for drift (``notebook_deploy.drift``); without it the sample's
    rows are the reference, and a sample of fewer than 100 rows is noted in the warnings as too small.
    """
    store = store if isinstance(store, Store) else Store(store)
    variable = variable or _variable_name(model)
    name = name if name is not None else name_from(variable or type(model).__name__)
    check_name(name)
    warnings: list[str] = []
    trial = _try_model(model, sample, sample_source, methods, sample_rows, warnings)
    reference_statistics = _drift_reference(trial, reference, sample, warnings)
    pickled = dump_model(model)
    pickle_scan = scan_pickle(pickled.data)  # kept in the manifest; checked again wherever the bundle is imported
    recipe = _recipe(history, variable) if history is not None else None
    limit = DATA_LIMIT if include_data is True else int(include_data)
    data_files: list[tuple[str, Path]] = []
    if recipe is not None and history is not None and include_data:
        _check_data_sizes(recipe, limit, reference_data, warnings)
        data_files = include_data_files(recipe, history, limit)
    if not allow_secrets:
        _refuse_secrets(pickled, pickle_scan, recipe, data_files)
    warnings += _pickle_warnings(pickled, pickle_scan)
    with store.staging() as staged:
        write_file(staged / SAMPLE_FILE, dumps({"instances": trial.instances, "outputs": trial.outputs}))
        if reference_statistics is not None:
            write_file(staged / REFERENCE_FILE, dumps(reference_statistics))
        serialization, state = _store_model(model, pickled, trial, staged, warnings)
        write_file(staged / LOCK_FILE, state.lock_text().encode())
        write_file(staged / ENVIRONMENT_FILE, dumps(environment_snapshot()))
        if recipe is not None:
            _write_recipe(staged, recipe, state.lock, data_files, limit if keep_fetched else None)
        manifest = seal_manifest(
            staged,
            {
                "name": name,
                "created": datetime.now(timezone.utc).isoformat(),
                "parent": store.latest_version(name),
                "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
                "model": {
                    "type": f"{type(model).__module__}.{type(model).__qualname__}",
                    "methods": trial.methods,
                    "batchable": _batch_consistent(trial),
                    **_torch_build(pickled.weights),
                },
                "serialization": serialization,
                **({"pickle_scan": pickle_scan.to_manifest()} if serialization["format"] == "cloudpickle" else {}),
                "schema": {"input": trial.schema.to_dict(), "outputs": trial.output_schemas},
                "sample": {"source": trial.source, "rows": len(trial.instances)},
                "requirements": state.direct,
                "provenance": _provenance(history),
                "recipe": recipe.to_dict() if recipe is not None else None,
                "labels": dict(labels or {}),
                "reference": drift.summary(reference_statistics) if reference_statistics is not None else None,
                "warnings": warnings + state.warnings,
                "runtime": {"notebook-deploy": _own_version()},
            },
        )
        bundle = store.commit(staged, manifest)  # an identical earlier capture is kept as it is
        audit.record("capture", root=store, name=bundle.name, version=bundle.version)
        sign_own_capture(bundle, audit_log=audit.default_path(store))
        return bundle


def _store_model(
    model: Any, pickled: PickledModel, trial: Trial, staged: Path, warnings: list[str]
) -> tuple[dict[str, Any], PackageState]:
    """Write the model into ``staged``: in its library's format where it has one and the probe, loading it
    in a fresh interpreter, gets the sample's outputs back; as the pickle and its weights otherwise.
    Return the manifest's ``serialization`` and what the probe found."""
    kind = pretrained.library_format(model)
    stored = pretrained.save(model, kind, staged) if kind is not None else None
    if stored is not None:
        try:
            state = _package_state(staged / pretrained.DESCRIPTOR, pickled, trial)
            failure = "did not answer the sample as it does here (an attribute its save does not keep was changed?)"
        except CaptureError as error:
            state, failure = None, f"failed: {error}"
        if state is not None and state.reproduced:
            return {"format": kind, "pretrained": stored}, state
        pretrained.remove(staged)
        warnings.append(
            f"stored as a pickle: the model saved in its library's format ({kind}) and loaded again {failure}"
        )
    write_file(staged / MODEL_FILE, pickled.data)
    if pickled.weights.tensors:
        pickled.weights.write(staged / WEIGHTS_FILE)
    serialization = {
        "format": "cloudpickle",
        "cloudpickle": cloudpickle.__version__,
        "protocol": PROTOCOL,
        "by_value_modules": list(pickled.by_value_modules),
        "weights": _weights_summary(pickled.weights),
    }
    return serialization, _package_state(staged / MODEL_FILE, pickled, trial)


def _package_state(model_file: Path, pickled: PickledModel, trial: Trial) -> PackageState:
    return package_state(
        model_file,
        trial.model_input,
        trial.methods,
        referenced_modules=set(pickled.referenced_modules) | {type(trial.model_input).__module__},
        expected_outputs=trial.outputs,
    )


@dataclass
class Trial:
    """The model tried on its sample: the rows as given, what the server will hand the model, and what
    each method that took them answered. Each method is resolved once, here, and every later step (the
    schema probes, the drift reference, the batching check) calls the same callables."""

    rows: Any
    source: str
    schema: Schema
    instances: list[Any]
    model_input: Any
    calls: dict[str, Callable[[Any], Any]]
    outputs: dict[str, Any]
    output_schemas: dict[str, Any]

    @property
    def methods(self) -> list[str]:
        """The methods served: those that took the sample."""
        return list(self.outputs)


def _try_model(
    model: Any,
    sample: Any,
    sample_source: str | None,
    requested: list[str] | None,
    sample_rows: int,
    warnings: list[str],
) -> Trial:
    """Find the sample, infer the request schema from it, and call the model's methods on exactly what the
    server will hand them; then narrow the schema with what the model accepts (domains, unused columns)."""
    rows, source = _sample_rows(model, sample, sample_source, warnings)
    schema = infer_schema(rows)
    instances = schema.encode(head(rows, sample_rows))
    model_input = schema.decode(instances)  # exactly what the server will hand the model
    calls, outputs, output_schemas = _run_methods(model, requested, model_input, warnings, source)
    served = list(calls.values())
    schema = probe_unused_columns(probe_domains(schema, model_input, served), model, model_input, served)
    return Trial(rows, source, schema, instances, model_input, calls, outputs, output_schemas)


def _refuse_secrets(
    pickled: PickledModel, pickle_scan: PickleScan, recipe: Recipe | None, data_files: list[tuple[str, Path]]
) -> None:
    """Refuse the capture when the model's plain globals, the pickle's strings, the recipe's cells or the
    data files kept hold what looks like a credential."""
    findings = find_secrets_in_values(_scannable(pickled.captured_globals))
    if recipe is not None:
        findings = find_secrets_in_cells(recipe.cells, [f"cell [{c}]" for c in recipe.counts]) + findings
    findings += find_secrets_in_texts([("a string in the pickled model", text) for text in pickle_scan.strings])
    findings += find_secrets_in_texts(
        [(f"data file {path}", path.read_bytes().decode("utf-8", errors="replace")) for _, path in data_files]
    )
    check_no_secrets(findings)


def _torch_build(weights: TensorCollector) -> dict[str, Any]:
    """``{"torch": {"version", "cuda"}}`` for a model with tensors: whether its torch is a CPU or a CUDA
    build (PyPI's Linux wheels are CUDA builds without a local label), else nothing."""
    torch = sys.modules.get("torch")
    if not weights.tensors or torch is None:
        return {}
    return {"torch": {"version": torch.__version__, "cuda": torch.version.cuda}}


def _weights_summary(weights: TensorCollector) -> dict[str, Any] | None:
    """What bundle.json says of the weights file: its name, how many tensors and bytes it holds."""
    if not weights.tensors:
        return None
    return {"file": WEIGHTS_FILE, "format": "safetensors", "tensors": len(weights.tensors), "bytes": weights.nbytes}


def _pickle_warnings(pickled: PickledModel, pickle_scan: PickleScan) -> list[str]:
    """What the user should know about the pickle: it would be refused on import, or it carries code."""
    warnings = []
    if not pickle_scan.safe:
        warnings.append("the pickle would be refused where this bundle is imported: " + "; ".join(pickle_scan.findings))
    if pickled.by_value_modules:
        warnings.append(
            "local modules shipped inside the pickle (not installed packages): " + ", ".join(pickled.by_value_modules)
        )
    return warnings


def _write_recipe(
    staged: Path, recipe: Recipe, lock: Any, data_files: list[tuple[str, Path]], fetched_limit: int | None
) -> None:
    """Write the recipe notebook, its lock, the data files it reads and (with a limit) the bytes it fetched."""
    if fetched_limit is not None:
        keep_fetched_bytes(recipe, staged, fetched_limit)
    recipe.requirements = replay_requirements(set(recipe.modules), lock)
    write_file(staged / RECIPE_FILE, nbformat.writes(recipe.to_notebook()).encode())
    write_file(staged / RECIPE_LOCK_FILE, recipe.lock_text().encode())
    for bundle_name, data_path in data_files:
        shutil.copyfile(data_path, staged / bundle_name)


def _sample_rows(model: Any, sample: Any, source: str | None, warnings: list[str]) -> tuple[Any, str]:
    """The sample's rows and where they came from: given, observed at the model's fit, or made up."""
    if sample is not None:
        source = source or "given as sample="
        try:
            return as_rows(sample), source
        except InputError as error:
            raise CaptureError(f"the sample ({source}): {error}") from None
    fit = fits.LOG.find(model)
    if fit is not None and fit.rows is not None:
        return fit.rows, fit.describe()
    features = feature_count(model)
    if features is not None:
        warnings.append(f"no sample was given: rows are assumed to be {features} float64 values")
        return np.zeros((1, features)), f"made up: {features} zeros, from the model's n_features_in_"
    raise CaptureError(no_sample_message(model, fit))


def feature_count(model: Any) -> int | None:
    """How many float values a row has, for an estimator fitted on an array (one fitted on a DataFrame
    has column names and types that a count does not give)."""
    features = getattr(model, "n_features_in_", None)
    return features if isinstance(features, int) and not hasattr(model, "feature_names_in_") else None


def no_sample_message(model: Any, fit: fits.Fit | None, looked: tuple[str, ...] = ()) -> str:
    """Why no sample was found for ``model``, where notebook-deploy looked, and how to pass one."""
    kind = type(model).__name__
    if fit is not None:
        seen = f"the call that fitted this {kind} ({fit.call}, given {fit.data}) was observed, but {fit.problem}"
    elif fits.LOG.active:
        seen = (
            f"no fitting call of this {kind} was observed: only .fit/.fit_transform/.partial_fit/.fit_predict "
            "and lgb/xgb .train calls written in a cell after %load_ext notebook_deploy are (not those inside "
            "functions)"
        )
    else:
        seen = (
            f"no fitting call of this {kind} was observed: load the extension (%load_ext notebook_deploy) "
            "before the cell that fits it, and notebook-deploy keeps the rows it was fitted on"
        )
    count = (
        f"the {kind} was fitted on a DataFrame: its n_features_in_ does not give the columns' names and types"
        if hasattr(model, "feature_names_in_")
        else f"the {kind} has no n_features_in_ to make rows from"
    )
    return (
        "no sample: "
        + "; ".join((seen, *looked, count))
        + ". Pass a few rows of the model's input: sample=X_train[:5] (in Python), --sample 'X_train[:5]' "
        "(%deploy, notebook-deploy deploy). notebook-deploy infers the request schema from it, tests the model "
        "on it, and finds the packages the model needs by running it"
    )


def _drift_reference(trial: Trial, reference: Any, sample: Any, warnings: list[str]) -> dict[str, Any] | None:
    """The drift reference statistics of ``reference`` (or of the sample's rows), None without either."""
    if reference is None and sample is None:
        return None  # the rows were made up: they say nothing of the data
    method = default_method(trial.methods)
    try:
        data = as_rows(reference) if reference is not None else trial.rows
        statistics = drift.capture_reference(
            data, trial.schema, trial.calls[method], method, "reference" if reference is not None else "sample"
        )
    except (InputError, ValueError) as error:
        raise CaptureError(f"reference=... does not fit the model's input: {error}") from None
    if reference is None and statistics["rows"] < drift.WEAK_REFERENCE_ROWS:
        warnings.append(
            f"drift statistics come from the {statistics['rows']} sample rows, too few to tell drift from "
            "noise: capture with reference=X_train to monitor drift"
        )
    return statistics


def _run_methods(
    model: Any, requested: list[str] | None, model_input: Any, warnings: list[str], source: str
) -> tuple[dict[str, Callable[[Any], Any]], dict[str, Any], dict[str, Any]]:
    """The methods that take the sample (resolved), their outputs and their outputs' schemas. A method the
    caller asked for must take it; of the ones found, those that fail are left out with a warning."""
    names = requested or available_methods(model)
    if not names:
        raise CaptureError(
            f"a {type(model).__name__} has no predict method and is not callable: capture a fitted model, "
            "or a function that takes the input rows"
        )
    try:
        calls = resolve_methods(model, names)
    except AttributeError as error:
        raise CaptureError(f"{error}: pass methods=[...] the model has") from None
    outputs: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    failures: list[tuple[str, str]] = []
    for method, result, failure in call_methods(calls, model_input):
        if failure is not None:
            if requested:
                raise CaptureError(
                    f"{method} failed on the sample ({source}): {type(failure).__name__}: {failure}. "
                    "Pass rows the model takes: sample=... (--sample EXPR)"
                ) from failure
            failures.append((method, f"{type(failure).__name__}: {failure}"))
            continue
        schemas[method] = infer_schema(result).to_dict()
        outputs[method] = to_jsonable(result)
    if not outputs:
        raise CaptureError(
            f"the model refuses the sample ({source}): {_grouped(failures)}. "
            "Pass rows the model takes: sample=... (--sample EXPR)"
        )
    warnings += [f"{method} is not served: it failed on the sample ({problem})" for method, problem in failures]
    return {method: calls[method] for method in outputs}, outputs, schemas


def call_methods(calls: Mapping[str, Callable[[Any], Any]], rows: Any) -> Iterator[tuple[str, Any, Exception | None]]:
    """Call each method of ``calls`` on ``rows``: ``(name, result, None)``, or ``(name, None, error)`` when
    it raised, or gave what no schema describes. Any failure means these rows are not what that method
    takes, so the error is handed back, not raised."""
    for name, call in calls.items():
        try:
            result = call(rows)
            infer_schema(result)
        except Exception as error:  # noqa: BLE001 - see the docstring
            yield name, None, error
            continue
        yield name, result, None


def _grouped(failures: list[tuple[str, str]]) -> str:
    """Methods' errors, each error once with the methods that raised it ("predict, predict_proba: ...")."""
    by_problem: dict[str, list[str]] = {}
    for method, problem in failures:
        by_problem.setdefault(problem.rstrip("."), []).append(method)
    return "; ".join(f"{', '.join(methods)}: {problem}" for problem, methods in by_problem.items())


def _batch_consistent(trial: Trial) -> bool:
    """Whether calling each method row by row gives what one call on all the sample's rows gave: then the
    server may join requests into batches. Floats may differ in the last bits (BLAS takes other paths
    for one row than for many), so they are compared with a relative tolerance of 1e-9."""
    rows = len(trial.model_input)
    if rows < 2:
        return False
    for method, call in trial.calls.items():
        try:
            single = [to_jsonable(call(take_rows(trial.model_input, i, i + 1))) for i in range(rows)]
        except Exception:  # noqa: BLE001 - a model that cannot take one row is not batched
            return False
        if not all(isinstance(s, list) and len(s) == 1 for s in single):
            return False
        if differences(trial.outputs[method], [s[0] for s in single], method, rtol=1e-9, atol=1e-12):
            return False
    return True


def _variable_name(model: Any) -> str | None:
    """The name the caller (the first frame outside notebook_deploy) binds ``model`` to, if any."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__", "").startswith("notebook_deploy"):
        frame = frame.f_back
    if frame is None:
        return None
    for scope in (frame.f_locals, frame.f_globals):
        for key, value in scope.items():
            if value is model and not key.startswith("_"):
                return key
    return None


def _provenance(history: History | None) -> dict[str, Any]:
    if history is not None:
        return dict(history.source)
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    return {"kind": "script" if script else "interactive", "path": Path(script).name if script else None}


def _recipe(history: History, variable: str | None) -> Recipe:
    if variable is None:
        raise CaptureError("pass variable=..., the name the model has in the session, to build its recipe")
    try:
        return build_recipe(history, variable)
    except ValueError as error:
        raise CaptureError(f"no recipe for {variable!r}: {error}") from None


def _check_data_sizes(recipe: Recipe, limit: int, reference_data: bool, warnings: list[str]) -> None:
    """Refuse data files above the cap for copies, or with ``reference_data`` record them by path and hash."""
    large = [(f.path, f.size) for f in recipe.files if f.size is not None and f.size > limit]
    if large and not reference_data:
        shown = ", ".join(f"{path} ({size / 2**20:.1f} MiB)" for path, size in large)
        raise CaptureError(
            f"data files above the {limit / 2**20:.0f} MiB cap for copies in the bundle: {shown}. Pass "
            "--reference-data (reference_data=True) to record their paths and sha256 only (verify then needs "
            "those exact files, or --data-dir), or a higher cap with include_data=BYTES"
        )
    warnings += [
        f"data file {path} is referenced by path and sha256, not copied: verify needs that exact file"
        for path, _ in large
    ]


def _scannable(values: dict[str, Any]) -> dict[str, Any]:
    """The plain data among captured globals (strings and containers), which is what may hold a secret."""
    return {k: v for k, v in values.items() if isinstance(v, (str, bytes, dict, list, tuple))}


def _own_version() -> str:
    try:
        return metadata.version("notebook-deploy")
    except metadata.PackageNotFoundError:
        return "unknown"
