"""A model's torch tensors kept beside its pickle, in one safetensors file.

The pickle of a model holds its structure; its tensors, which are nearly all of its bytes, are written to
``weights.safetensors`` and the pickle refers to each by a persistent id. So a 500 MB transformer is a
pickle of a few hundred KiB and a weights file in a format any tool reads without running code (a JSON
header and raw little-endian data), and the pickle scan reads the small part only.

Written here, tensor by tensor, straight to the file: ``safetensors.torch.save_file`` first turns every
tensor into a ``bytes`` copy, which would double a large model in memory at capture. Read with the
safetensors library, each tensor copied once out of the memory-mapped file.

Tensors are found by exact type (``torch.Tensor``; a ``Parameter`` pickles its ``.data``, which is one),
dense and strided, of a dtype safetensors has; anything else stays in the pickle as before. Views of the
same memory with the same shape are written once and come back as one tensor (tied weights stay tied).

Imports nothing at module level but the standard library: the capture probe loads models through it
before it watches what the model imports.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

WEIGHTS_FILE = "weights.safetensors"
TAG = "notebook-deploy/tensor"  # the first item of every persistent id this module writes

# torch dtype name → safetensors dtype
_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


class TensorCollector:
    """The tensors met while pickling, each under a key; ``persistent_id`` is the pickler's hook."""

    def __init__(self) -> None:
        torch = sys.modules.get("torch")
        self._tensor_type = torch.Tensor if torch is not None else None
        self._strided = torch.strided if torch is not None else None
        self._keys: dict[tuple[Any, ...], str] = {}
        self.tensors: dict[str, Any] = {}

    def persistent_id(self, obj: Any) -> tuple[str, str, bool] | None:
        """``(TAG, key, requires_grad)`` for a tensor that goes to the weights file, else None (pickled)."""
        if self._tensor_type is None or type(obj) is not self._tensor_type:
            return None
        if obj.layout != self._strided or obj.is_quantized or obj.device.type == "meta" or obj.numel() == 0:
            return None
        if str(obj.dtype).removeprefix("torch.") not in _DTYPES:
            return None
        identity = (
            obj.untyped_storage().data_ptr(),
            obj.storage_offset(),
            tuple(obj.shape),
            obj.stride(),
            obj.dtype,
            obj.device,
        )
        key = self._keys.get(identity)
        if key is None:
            key = self._keys[identity] = f"t{len(self._keys)}"
            self.tensors[key] = obj
        return (TAG, key, bool(obj.requires_grad))

    @property
    def active(self) -> bool:
        """Whether torch is loaded, so that there can be tensors to collect."""
        return self._tensor_type is not None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def write(self, path: Path) -> None:
        """Write the collected tensors as one safetensors file, one tensor in memory at a time."""
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for key, tensor in self.tensors.items():
            size = tensor.numel() * tensor.element_size()
            dtype = _DTYPES[str(tensor.dtype).removeprefix("torch.")]
            header[key] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the format pads the header with spaces to align the data
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for tensor in self.tensors.values():
                f.write(_raw_bytes(tensor))
            f.flush()
            os.fsync(f.fileno())


def _raw_bytes(tensor: Any) -> Any:
    """The tensor's bytes as a NumPy view (no copy for a contiguous CPU tensor)."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()


class _WeightsUnpickler(pickle.Unpickler):
    """An unpickler that answers this module's persistent ids from the weights file, and refuses others."""

    def __init__(self, file: BinaryIO, weights: Path | None) -> None:
        super().__init__(file)
        self._weights_path = weights
        self._file: Any = None
        self._loaded: dict[str, Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 3 and pid[0] == TAG and isinstance(pid[1], str)):
            raise pickle.UnpicklingError(f"unknown persistent id in the model's pickle: {pid!r}")
        if self._weights_path is None:
            raise pickle.UnpicklingError(f"the model's pickle refers to tensors, but there is no {WEIGHTS_FILE}")
        key, requires_grad = pid[1], bool(pid[2])
        tensor = self._loaded.get(key)
        if tensor is None:
            if self._file is None:
                from safetensors import safe_open

                self._file = safe_open(str(self._weights_path), framework="pt")
            tensor = self._loaded[key] = self._file.get_tensor(key)
            if requires_grad:
                tensor.requires_grad_(True)
        return tensor


def load_model(model_file: str | Path) -> Any:
    """Unpickle the model in ``model_file``, its tensors read from the weights file beside it if any."""
    path = Path(model_file)
    weights = path.with_name(WEIGHTS_FILE)
    with open(path, "rb") as f:
        return _WeightsUnpickler(f, weights if weights.exists() else None).load()
