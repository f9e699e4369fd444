"""Which inference methods a model object offers, and how each is called.

A model is anything with a ``predict`` method (scikit-learn style) or any callable, which is then served
as ``predict``. Other public inference methods of the scikit-learn family each get an endpoint of their own.
A PyTorch module is served as ``predict`` too: rows go in as a tensor (floats in the dtype of the module's
parameters), the call runs without gradients, and a tensor output comes back as a NumPy array. A Hugging
Face ``transformers`` pipeline is served as ``predict`` alone (its scikit-learn ``predict``/``transform``
are the same call and take no arrays): rows go in as a list (texts, chat messages, images), one answer
comes back per row. A ``sentence-transformers`` model (a torch module too) is served as ``encode``: a
list of texts in, one vector per text out. A generator function
(``def model(prompt): yield piece``) is served as ``predict`` too, one joined text per row.

Imports nothing at module level: the capture probe loads it before it watches what the model imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

INFERENCE_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
    "score_samples",
)


def default_method(methods: Sequence[str]) -> str:
    """The method a protocol calls when the request names none (MLflow, TF Serving's default signature,
    the OIP output tensors, the drift reference, the panel's test form): ``predict`` where the model has
    it, else its first inference method."""
    return "predict" if "predict" in methods else methods[0]


def _is_instance(value: Any, module: str, name: str) -> bool:
    """Whether ``value``'s class or a base is ``module.name`` (``module`` ending in "." for a package),
    told without importing the library that defines it."""
    return any(
        c.__name__ == name and (c.__module__.startswith(module) if module.endswith(".") else c.__module__ == module)
        for c in type(value).__mro__
    )


def is_torch_module(value: Any) -> bool:
    """A ``torch.nn.Module``."""
    return _is_instance(value, "torch.nn.modules.module", "Module")


def is_transformers_pipeline(value: Any) -> bool:
    """A ``transformers.Pipeline``."""
    return _is_instance(value, "transformers.pipelines.base", "Pipeline")


def is_generator_function(value: Any) -> bool:
    """A function that yields its answer piece by piece (``def model(prompt): yield piece``): served as
    ``predict`` on whole texts, and streamed by the generation routes."""
    import inspect

    return inspect.isgeneratorfunction(value)


def is_sentence_transformer(value: Any) -> bool:
    """A ``sentence_transformers.SentenceTransformer``."""
    return _is_instance(value, "sentence_transformers.", "SentenceTransformer")


def available_methods(model: Any) -> list[str]:
    """The inference methods ``model`` has, in a stable order; a plain callable offers ``predict``."""
    if is_transformers_pipeline(model):
        return ["predict"]
    if is_sentence_transformer(model):
        return ["encode"]
    # hasattr is enough: scikit-learn hides methods that do not apply (SVC.predict_proba without
    # probability=True) behind `available_if`, which makes hasattr False.
    found = [name for name in INFERENCE_METHODS if callable(getattr(model, name, None))]
    if not found and callable(model):
        found = ["predict"]
    return found


def resolve_method(model: Any, name: str) -> Callable[[Any], Any]:
    """The callable behind method ``name`` of ``model``."""
    if name == "predict" and is_transformers_pipeline(model):
        return _listed(model)
    if name == "encode" and is_sentence_transformer(model):
        return _listed(model.encode)
    if name == "predict" and is_generator_function(model):
        return _listed(lambda rows: ["".join(model(row)) for row in rows])
    method = getattr(model, name, None)
    if callable(method):
        return method
    if name == "predict" and is_torch_module(model):
        return _torch_call(model)
    if name == "predict" and callable(model):
        return model
    raise AttributeError(f"{type(model).__name__} has no inference method {name!r}")


def resolve_methods(model: Any, names: Sequence[str]) -> dict[str, Callable[[Any], Any]]:
    """The callables behind ``names``, resolved once so that every later call reaches the same ones."""
    return {name: resolve_method(model, name) for name in names}


def _torch_call(module: Any) -> Callable[[Any], Any]:
    import numpy as np
    import torch

    parameter = next((p for p in module.parameters() if p.is_floating_point()), None)

    def predict(data: Any) -> Any:
        tensor = torch.as_tensor(np.asarray(data))
        if parameter is not None:
            tensor = tensor.to(parameter.device, parameter.dtype if tensor.is_floating_point() else None)
        with torch.no_grad():
            output = module(tensor)
        return output.cpu().numpy() if isinstance(output, torch.Tensor) else output

    return predict


def _listed(call: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``call`` on the rows as a Python list: pipelines and ``encode`` take lists of inputs, not arrays."""

    def on_rows(data: Any) -> Any:
        rows = data.tolist() if hasattr(data, "tolist") else list(data)
        # a pipeline answers one input with one answer, and a list of inputs with a list of answers
        return call(rows) if rows else []

    return on_rows
