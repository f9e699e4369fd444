"""The capture of a kernel variable, with the session's recipe: what ``%deploy``, the panel and
``deploy_notebook`` call, with a sample guessed from the rows the model was fitted on when none is given,
and the summary shown to the user after it."""

from __future__ import annotations

import ast
import os
from typing import Any

from .. import display, repeats
from ..bundle import Bundle
from ..capturing import fits
from ..capturing.live import call_methods, capture, feature_count, no_sample_message
from ..capturing.recipe import History
from ..errors import NotebookDeployError
from ..schema import as_rows, head
from ..store import Store
from .recorder import recorder_for


def deploy_from_kernel(shell: Any, variable: str, **options: Any) -> tuple[Bundle, list[str]]:
    """Capture ``variable`` from the kernel with its recipe; return the bundle and notes for the user.
    ``options`` are those of ``capture_variable``."""
    return capture_variable(shell.user_ns, variable, history=recorder_for(shell).history(), **options)


@repeats.collapsed
def capture_variable(
    namespace: dict[str, Any],
    variable: str,
    *,
    name: str | None = None,
    sample: str | None = None,
    history: History | None = None,
    include_data: bool | int = True,
    reference_data: bool = False,
    keep_fetched: bool = False,
    allow_secrets: bool = False,
    store: str | os.PathLike[str] | Store | None = None,
) -> tuple[Bundle, list[str]]:
    """Capture ``namespace[variable]`` (with its recipe when ``history`` is given); return the bundle and
    notes for the user. What ``%deploy`` and the notebook panel both call.

    ``sample`` is an expression evaluated in ``namespace`` (its first 5 rows are used); without it, the rows
    the model was fitted on as observed by the extension; failing that (the model was fitted before
    ``%load_ext notebook_deploy``), the first argument of the last ``VARIABLE.fit(...)`` in the history
    when it is a plain variable and the model takes it. The recipe's data files are copied into the bundle
    up to 10 MiB each (``include_data``); larger ones refuse the capture unless ``reference_data`` records
    them by path and sha256; ``keep_fetched`` keeps the bytes of the URLs the recipe fetched."""
    if variable not in namespace:
        raise NotebookDeployError(f"there is no variable {variable!r} in this kernel")
    model = namespace[variable]
    data: Any = None
    source: str | None = None
    looked: tuple[str, ...] = ()
    if sample is not None:
        try:
            data = eval(sample, namespace)  # noqa: S307 - an expression the user typed, in their own kernel
        except Exception as error:  # noqa: BLE001 - any error of the user's expression is theirs to see
            raise NotebookDeployError(f"--sample {sample}: {type(error).__name__}: {error}") from None
        source = f"given by --sample {sample}"
    elif history is not None and getattr(observed := fits.LOG.find(model), "rows", None) is None:
        data, source, looked = _guess_sample(history.sources, variable, namespace, model)
        if data is None and feature_count(model) is None:
            raise NotebookDeployError(no_sample_message(model, observed, looked))
    bundle = capture(
        model,
        name=name,
        sample=head(as_rows(data), 5) if data is not None else None,
        sample_source=source,
        history=history,
        variable=variable,
        include_data=include_data,
        reference_data=reference_data,
        keep_fetched=keep_fetched,
        allow_secrets=allow_secrets,
        store=store,
    )
    return bundle, [f"not the sample: {reason}" for reason in looked]


def _guess_sample(
    sources: list[str], variable: str, namespace: dict[str, Any], model: Any
) -> tuple[Any, str | None, tuple[str, ...]]:
    """The training input of ``variable`` read from the cells' text: the first argument of its last ``fit``
    call, if a plain name that the model takes now (it may have been rebound since the fit). Also what was
    looked at, for the error when nothing fits."""
    from ..capturing.slicing import cell_nodes

    found = None
    for node in cell_nodes(sources):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("fit", "partial_fit", "fit_transform")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == variable
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            found = node.args[0].id
    if found is None or found not in namespace:
        return None, None, (f"the cells have no {variable}.fit(NAME, ...) call with a name still defined",)
    problem = _refused(model, namespace[found])
    if problem:
        return (
            None,
            None,
            (
                f"{found}, the first argument of {variable}.fit in the cells' text, is not what the "
                f"model takes now ({problem}): it was probably rebound after the fit",
            ),
        )
    return namespace[found], f"the first rows of {found}, the first argument of {variable}.fit in the cells' text", ()


def _refused(model: Any, data: Any) -> str | None:
    """Why ``model`` does not take the first rows of ``data``, or None when one of its methods does."""
    from ..methods import available_methods, resolve_methods

    problems: list[str] = []
    try:
        rows = head(as_rows(data), 5)
    except NotebookDeployError as error:
        return str(error)
    for method, _, failure in call_methods(resolve_methods(model, available_methods(model)), rows):
        if failure is None:
            return None
        problems.append(f"{method}: {type(failure).__name__}: {failure}")
    return "; ".join(problems) or "it has no inference method"


def summary(bundle: Bundle, notes: list[str]) -> str:
    """The few lines %deploy prints."""
    recipe = bundle.recipe_summary or {}
    lines = [f"Captured {bundle.ref} ({display.human_size(bundle.size)})"]
    if recipe:
        kept, data = recipe["executions"], recipe["files"]
        lines.append(f"  recipe    {len(kept)} cell(s) kept: {', '.join(f'[{c}]' for c in kept)}")
        for count, why in zip(kept, recipe.get("reasons") or []):
            trimmed = " (only its imports)" if count in recipe.get("trimmed", []) else ""
            lines.append(f"            [{count}]{trimmed} {'; '.join(why)}")
        if data:
            lines.append("  data      " + ", ".join(f["path"] + (" (included)" if f["included"] else "") for f in data))
    source = bundle.sample_info["source"] if bundle.sample_info else None
    if source:
        lines.append(f"  sample    {source}" + ("" if source.startswith("given") else " (--sample EXPR to choose)"))
    lines.append(f"  packages  {', '.join(bundle.requirements) or 'none'}")
    lines += [f"  note      {n}" for n in notes]
    lines += [f"  warning   {w}" for w in bundle.warnings + (recipe.get("warnings") or [])]
    return "\n".join(lines)
