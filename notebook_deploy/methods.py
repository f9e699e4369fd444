"""Which inference methods a model object offers, and how each is called.

A model is anything with a ``predict`` method (scikit-learn style) or any callable, which is then served
as ``predict``. Other public inference methods of the scikit-learn family each get an endpoint of their own.
"""

from __future__ import annotations

from typing import Any, Callable

INFERENCE_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
    "score_samples",
)


def available_methods(model: Any) -> list[str]:
    """The inference methods ``model`` has, in a stable order; a plain callable offers ``predict``."""
    # hasattr is enough: scikit-learn hides methods that do not apply (SVC.predict_proba without
    # probability=True) behind `available_if`, which makes hasattr False.
    found = [name for name in INFERENCE_METHODS if callable(getattr(model, name, None))]
    if not found and callable(model):
        found = ["predict"]
    return found


def resolve_method(model: Any, name: str) -> Callable[[Any], Any]:
    """The callable behind method ``name`` of ``model``."""
    method = getattr(model, name, None)
    if callable(method):
        return method
    if name == "predict" and callable(model):
        return model
    raise AttributeError(f"{type(model).__name__} has no inference method {name!r}")
