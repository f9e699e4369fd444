"""Where a served model runs: the CPU or a CUDA GPU, chosen when it is served (``--device cpu|cuda|auto``).

Only torch models have a device: a ``torch.nn.Module``, a transformers pipeline, or any object holding
either. A bundle's tensors are always written from and read onto the CPU (``weights.py``), so a model
captured on a GPU loads where there is none; the server then places it. torch is looked up in
``sys.modules`` (the model's unpickling loaded it) and never imported here: a scikit-learn server must
not pay for it.
"""

from __future__ import annotations

import sys
from typing import Any

from .errors import SettingError
from .methods import is_torch_module, is_transformers_pipeline

DEVICES = ("auto", "cpu", "cuda")


def choose(requested: str, model: Any) -> str:
    """The device to serve ``model`` on: ``cuda`` where asked (or ``auto``) and a GPU is there, else ``cpu``.
    Asking for ``cuda`` where torch sees no GPU, or for a model that is not a torch model, is an error."""
    torch = sys.modules.get("torch")
    has_gpu = torch is not None and torch.cuda.is_available()
    if requested == "cuda":
        if not (is_torch_module(model) or is_transformers_pipeline(model)):
            raise SettingError("device", f"cuda places torch models only, and this model is a {type(model).__name__}")
        if not has_gpu:
            raise SettingError(
                "device", "cuda was asked for, but torch sees no CUDA GPU here: serve with --device cpu (or auto)"
            )
        return "cuda"
    if requested == "auto" and has_gpu and (is_torch_module(model) or is_transformers_pipeline(model)):
        return "cuda"
    return "cpu"


def place(model: Any, device: str) -> None:
    """Move ``model``'s tensors to ``device`` (a pipeline's inputs follow its ``device``)."""
    if is_transformers_pipeline(model):
        import torch

        model.model.to(device)
        model.device = torch.device(device)
    elif is_torch_module(model):
        model.to(device)


def describe(device: str) -> dict[str, Any]:
    """What /metadata says of the device: ``{"device": "cpu"}``, or the GPUs with their memory."""
    if device != "cuda":
        return {"device": device}
    import torch

    gpus = [torch.cuda.get_device_properties(index) for index in range(torch.cuda.device_count())]
    return {
        "device": device,
        "gpus": [{"index": i, "name": gpu.name, "memory_bytes": gpu.total_memory} for i, gpu in enumerate(gpus)],
    }


def memory_allocated() -> dict[str, int]:
    """Bytes of GPU memory held by tensors, by GPU index (for the metrics of a server on ``cuda``)."""
    import torch

    return {str(index): torch.cuda.memory_allocated(index) for index in range(torch.cuda.device_count())}
