"""Which data each model was fitted on, observed when the fitting call runs.

The rows a model was trained on are the best default sample: their columns, dtypes and width are what
the model takes. Reading them from a cell's text (``model.fit(X, y)`` → ``X``) fails when the model is
built in the same expression (``LinearRegression().fit(X, y)``), when the data is not a plain name
(``digits.data``, ``lgb.Dataset(X, y)``, a statsmodels formula's frame), and silently when ``X`` was
rebound after the fit. So the IPython extension rewrites each cell (``FitCalls``, an AST transformer)
to route fitting calls through ``observe``, which keeps the first rows of the data next to the fitted
object, found again later by identity (a weak reference), never by name.

Calls rewritten: ``<expr>.fit/.fit_transform/.partial_fit/.fit_predict(...)`` and ``<module>.train(params,
data, ...)`` (LightGBM, XGBoost). A statsmodels ``.fit()`` takes no data: the rows come from the model
object it is called on (the frame a formula read, else the exog it was given).
"""

from __future__ import annotations

import ast
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..schema import as_rows, head

FIT_METHODS = ("fit", "fit_transform", "partial_fit", "fit_predict")
OBSERVER = "__notebook_deploy_fit__"  # the name the rewritten cells call; bound in the kernel's hidden namespace
_ROWS = 5
_KEPT = 2000  # records of the newest fitting calls kept; a loop of cross-validation fits must not grow without end


@dataclass(frozen=True)
class Fit:
    """One observed fitting call: the rows it got (None, with ``problem`` saying why), and where it ran."""

    call: str
    data: str
    execution: int | None
    rows: Any
    problem: str | None

    def describe(self) -> str:
        where = f" in cell [{self.execution}]" if self.execution is not None else ""
        return f"the first rows of {self.data}, passed to {self.call}{where}"


class FitLog:
    """The observed fitting calls of this process, by the identity of the object each one fitted."""

    def __init__(self) -> None:
        self._fits: dict[int, tuple[Any, Fit]] = {}
        self.execution: Callable[[], int | None] = lambda: None
        self.active = False

    def record(self, fitted: Any, fit: Fit) -> None:
        try:
            reference: Any = weakref.ref(fitted)
        except TypeError:  # not weak-referable: kept alive, which the size cap bounds
            reference = lambda fitted=fitted: fitted  # noqa: E731
        self._fits.pop(id(fitted), None)
        self._fits[id(fitted)] = (reference, fit)
        while len(self._fits) > _KEPT:
            del self._fits[next(iter(self._fits))]

    def find(self, model: Any) -> Fit | None:
        """The last fitting call of ``model`` itself, or of the search (``best_estimator_``) that fitted it."""
        entry = self._fits.get(id(model))
        if entry is not None and entry[0]() is model:
            return entry[1]
        for reference, fit in reversed(list(self._fits.values())):
            owner = reference()
            if owner is not None and getattr(owner, "best_estimator_", None) is model:
                return fit
        return None


LOG = FitLog()


def observe(function: Any, call: str, data: str) -> Callable[..., Any]:
    """``function`` wrapped so that calling it records what it fitted and the first rows of the data."""

    def fitting(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # noqa: F841 - IPython leaves this frame out of tracebacks
        owner = getattr(function, "__self__", None)
        name = getattr(function, "__name__", "")
        source = _data_of(owner, name, args, kwargs)  # before the call: LightGBM frees a Dataset's data
        result = function(*args, **kwargs)
        rows, problem = _first_rows(source)
        fit = Fit(call, _model_data_text(owner) if isinstance(source, _Rows) else data, LOG.execution(), rows, problem)
        for fitted in {id(o): o for o in (owner, result) if _is_fitted_object(o)}.values():
            LOG.record(fitted, fit)
        return result

    return fitting


def _data_of(owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The data a fitting call is given: the X of ``fit(X, y)``, a Dataset's data, a statsmodels model's."""
    if name == "train":  # lgb.train(params, train_set) / xgb.train(params, dtrain)
        dataset = args[1] if len(args) > 1 else kwargs.get("train_set", kwargs.get("dtrain"))
        return _dataset_rows(dataset)
    if args:
        return _dataset_rows(args[0])
    for key in ("X", "x", "data", "train_set"):
        if key in kwargs:
            return _dataset_rows(kwargs[key])
    if _is_statsmodels(owner):
        data = getattr(owner, "data", None)
        frame = getattr(data, "frame", None)
        if getattr(owner, "formula", None) is not None and frame is not None:
            return _Rows(frame)
        return _Rows(getattr(data, "orig_exog", None))
    return None


@dataclass(frozen=True)
class _Rows:
    """Rows a statsmodels model holds (its ``.fit()`` is given none)."""

    value: Any


def _dataset_rows(value: Any) -> Any:
    """A training container's own rows: a LightGBM Dataset's ``data``, XGBoost's DMatrix has none kept."""
    module = type(value).__module__
    if module.startswith("lightgbm") and type(value).__name__ == "Dataset":
        return value.data
    return value


def _first_rows(source: Any) -> tuple[Any, str | None]:
    if isinstance(source, _Rows):
        source = source.value
    if source is None:
        return None, "the call was given no data the observer can read"
    if type(source).__name__ == "DMatrix":
        return None, (
            "an XGBoost DMatrix keeps no rows, and the Booster xgb.train makes predicts on DMatrix only: "
            "fit xgboost.XGBRegressor/XGBClassifier on the array or frame to serve it"
        )
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return None, f"the data is a file ({source!r}), not rows in memory"
    if isinstance(source, (list, tuple)) or type(source).__module__ == "torch":
        source = source[:_ROWS]  # before as_rows: it would convert all of a long list of texts
    try:
        rows = head(as_rows(source), _ROWS)
    except Exception as error:  # noqa: BLE001 - any container the schema does not know is reported, not raised
        return None, f"a {type(source).__name__} is not rows notebook-deploy can serve ({error})".rstrip()
    return rows.copy(), None  # a copy: later in-place changes to the data must not change the sample


def _model_data_text(owner: Any) -> str:
    if getattr(owner, "formula", None) is not None:
        return f"the DataFrame the formula {owner.formula!r} read"
    return f"the exog given to {type(owner).__name__}"


def _is_statsmodels(value: Any) -> bool:
    return type(value).__module__.startswith("statsmodels")


def _is_fitted_object(value: Any) -> bool:
    """An object a fitting call returned or fitted, not a value it computed (an array, labels, a frame)."""
    if value is None or isinstance(value, (int, float, str, bytes, tuple, list, dict, types.ModuleType)):
        return False  # a module: the owner of lgb.train
    module = type(value).__module__
    return not (module.startswith(("numpy", "pandas", "scipy")) or type(value).__name__ in ("Tensor", "History"))


class FitCalls(ast.NodeTransformer):
    """Rewrites fitting calls in a cell into ``__notebook_deploy_fit__(f, "f", "X")(args)``: the call still
    runs unchanged; ``observe`` notes what it fitted. Registered in ``shell.ast_transformers``.

    Bodies of functions, lambdas and classes are left as written: their code may be pickled with a model
    (a notebook class, a FunctionTransformer's function) and must not call the observer where it is served.
    """

    def visit_FunctionDef(self, node: ast.AST) -> Any:
        return node

    visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        func = node.func
        if not isinstance(func, ast.Attribute):
            return node
        if func.attr in FIT_METHODS:
            data = (
                node.args[0]
                if node.args
                else next((k.value for k in node.keywords if k.arg in ("X", "x", "data")), None)
            )
        elif func.attr == "train" and isinstance(func.value, ast.Name) and len(node.args) + len(node.keywords) >= 2:
            data = (
                node.args[1]
                if len(node.args) > 1
                else next((k.value for k in node.keywords if k.arg in ("train_set", "dtrain")), None)
            )
            if isinstance(data, ast.Call) and data.args:  # lgb.Dataset(X, y): the rows are X
                data = data.args[0]
        else:
            return node
        wrapped = ast.Call(
            func=ast.Name(id=OBSERVER, ctx=ast.Load()),
            args=[func, ast.Constant(_text(func)), ast.Constant(_text(data) if data is not None else "its data")],
            keywords=[],
        )
        return ast.copy_location(ast.Call(func=wrapped, args=node.args, keywords=node.keywords), node)


def _text(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."
