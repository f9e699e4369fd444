"""A standard transformers pipeline or sentence-transformers model stored in its own library's format,
loaded without unpickling anything.

A pickle runs code when it loads. A model that its library can save and load by itself (a pipeline
exactly as ``transformers.pipeline(task)`` makes it, a ``SentenceTransformer`` of the library's own
modules) is stored with ``save_pretrained`` / ``save`` instead: safetensors weights, JSON configs and
tokenizer files, loaded back with ``trust_remote_code=False`` and safetensors only. Anything else (a
subclass, a function, a pipeline with a method replaced) stays a pickle (``notebook_deploy.weights``).
Capture checks the reloaded model answers the sample exactly as the live one did, and keeps the pickle
where it does not (``capturing/live.py``).

A bundle is a folder of plain files (``bundle.py`` refuses folders inside it, its archives and image
layers hold top-level files), so the library's files are kept flat as ``pretrained.<path>``, with
``pretrained.json`` mapping each back to its path in the library's folder. Loading links them into a
temporary folder of that shape: nothing is copied, however large the weights.

Imports nothing at module level but the standard library and ``weights``: the capture probe loads models
through ``load_model`` before it watches what the model imports.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
import types
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import BundleIntegrityError
from .weights import load_model as load_pickled_model

DESCRIPTOR = "pretrained.json"  # what the library's files are and how to load them
PREFIX = "pretrained."  # the bundle file name of each of the library's files
PIPELINE = "transformers-pipeline"
SENTENCE_TRANSFORMERS = "sentence-transformers"
# What the libraries write that loads without running code: JSON, safetensors, vocabularies, sentencepiece
# protobufs, chat templates, a model card. A format that can hold a pickle (.bin, .pt, .pkl) is not kept.
_SAFE_SUFFIXES = (".json", ".safetensors", ".txt", ".jinja", ".model", ".md", ".tiktoken")


def library_format(model: Any) -> str | None:
    """``PIPELINE`` or ``SENTENCE_TRANSFORMERS`` for a model its library saves and loads unchanged, else None.

    A pipeline must be of the class its task makes, over transformers' own model, tokenizer and
    processors; a sentence transformer of the library's own class and modules; neither with a method
    replaced on the instance. What the library's save does not keep is caught later by the round trip."""
    module = type(model).__module__
    if module.startswith("transformers.") and _is_standard_pipeline(model):
        return PIPELINE
    if module.startswith("sentence_transformers.") and _is_standard_sentence_transformer(model):
        return SENTENCE_TRANSFORMERS
    return None


def _is_standard_pipeline(model: Any) -> bool:
    transformers = sys.modules["transformers"]
    from transformers.pipelines import check_task

    if not isinstance(model, transformers.Pipeline) or _has_replaced_methods(model):
        return False
    try:
        _, targeted, _ = check_task(getattr(model, "task", "") or "")
    except (KeyError, ValueError):
        return False
    impl = targeted.get("impl")  # the class, or its dotted name (transformers 5)
    if impl is None:
        return False
    if f"{type(model).__module__}.{type(model).__qualname__}" != (
        impl if isinstance(impl, str) else f"{impl.__module__}.{impl.__qualname__}"
    ):
        return False
    parts = ("model", "tokenizer", "image_processor", "feature_extractor", "processor")
    for part in (getattr(model, name, None) for name in parts):
        if part is not None and (not type(part).__module__.startswith("transformers.") or _has_replaced_methods(part)):
            return False
    return _pipeline_arguments(model) is not None


def _is_standard_sentence_transformer(model: Any) -> bool:
    from sentence_transformers import SentenceTransformer

    if type(model) is not SentenceTransformer or _has_replaced_methods(model):
        return False
    return all(type(m).__module__.startswith("sentence_transformers.") and not _has_replaced_methods(m) for m in model)


def _has_replaced_methods(obj: Any) -> bool:
    """Whether the instance holds a function of its own or shadows a method of its class (``pipe.postprocess = f``)."""
    for name, value in vars(obj).items():
        if isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
            return True
        if inspect.isfunction(inspect.getattr_static(type(obj), name, None)):
            return True
    return False


def _pipeline_arguments(model: Any) -> dict[str, Any] | None:
    """The call parameters given when the pipeline was made (``top_k``, ``max_new_tokens``...), which
    ``save_pretrained`` does not keep and ``pipeline()`` takes back; None when they are not plain JSON."""
    arguments: dict[str, Any] = {}
    for name in ("_preprocess_params", "_forward_params", "_postprocess_params"):
        arguments.update(getattr(model, name, None) or {})
    try:
        return json.loads(json.dumps(arguments, allow_nan=False))
    except (TypeError, ValueError):
        return None


def save(model: Any, kind: str, directory: Path) -> dict[str, Any] | None:
    """Save ``model`` (of ``library_format`` ``kind``) into the bundle folder ``directory`` as ``pretrained.*``
    files and ``pretrained.json``; return what the manifest says of it, or None (nothing written) when the
    library wrote a file that could run code when loaded, or names that do not fit flat."""
    descriptor: dict[str, Any] = {"format": kind}
    # the scratch folder is inside the bundle folder, so each file is renamed into place, never copied
    with tempfile.TemporaryDirectory(prefix=".pretrained-", dir=directory) as scratch:
        if kind == PIPELINE:
            model.save_pretrained(scratch)
            descriptor.update(
                library="transformers",
                version=sys.modules["transformers"].__version__,
                task=model.task,
                dtype=str(model.model.dtype).removeprefix("torch."),
                arguments=_pipeline_arguments(model),
            )
        else:
            model.save(scratch)
            descriptor.update(library="sentence-transformers", version=sys.modules["sentence_transformers"].__version__)
        saved = sorted(p for p in Path(scratch).rglob("*") if not p.is_dir())
        files = {
            p.relative_to(scratch).as_posix(): PREFIX + p.relative_to(scratch).as_posix().replace("/", ".")
            for p in saved
        }
        if any(p.is_symlink() or not p.name.endswith(_SAFE_SUFFIXES) for p in saved) or len(set(files.values())) < len(
            files
        ):
            return None
        if any((directory / name).exists() for name in files.values()):
            return None
        for path, name in zip(saved, files.values()):
            os.replace(path, directory / name)
            _sync(directory / name)  # on disk before the store renames the bundle into place, as bundle.write_file
    descriptor["files"] = files
    (directory / DESCRIPTOR).write_text(json.dumps(descriptor, indent=2, sort_keys=True) + "\n")
    _sync(directory / DESCRIPTOR)
    summary = {k: v for k, v in descriptor.items() if k not in ("files", "arguments", "format")}
    return {
        "file": DESCRIPTOR,
        **summary,
        "files": len(files),
        "bytes": sum((directory / name).stat().st_size for name in files.values()),
    }


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove(directory: Path) -> None:
    """Delete the ``pretrained.*`` files ``save`` wrote into ``directory`` (the model goes the pickle way)."""
    descriptor = json.loads((directory / DESCRIPTOR).read_text())
    for name in descriptor["files"].values():
        (directory / name).unlink(missing_ok=True)
    (directory / DESCRIPTOR).unlink()


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a stored model: ``pretrained.json`` with its library, without unpickling; anything else is a
    pickle (``weights.load_model``). The one loader of the capture probe and of a served bundle."""
    path = Path(path)
    if path.name == DESCRIPTOR:
        return load(path)
    return load_pickled_model(path)


def load(descriptor_file: Path) -> Any:
    """Load the model ``descriptor_file`` describes, its files linked into a temporary folder of the library's shape.

    Refused (``BundleIntegrityError``) before anything loads: a file outside the bundle or of a kind that
    could run code, and a sentence-transformers module that is not the library's own."""
    directory = descriptor_file.parent
    try:
        descriptor = json.loads(descriptor_file.read_text())
        kind, files = descriptor["format"], dict(descriptor["files"])
    except (ValueError, KeyError, TypeError) as error:
        raise BundleIntegrityError(str(descriptor_file), f"is not a description of a stored model ({error})") from None
    if kind not in (PIPELINE, SENTENCE_TRANSFORMERS):
        raise BundleIntegrityError(
            str(descriptor_file), f"names the format {kind!r}, which this notebook-deploy does not load"
        )
    for relative, name in files.items():
        _check_file(descriptor_file, directory, relative, name)
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-pretrained-") as view:
        for relative, name in files.items():
            link = Path(view, relative)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((directory / name).resolve())
        if kind == PIPELINE:
            return _load_pipeline(view, descriptor)
        return _load_sentence_transformer(descriptor_file, view)


def _check_file(descriptor_file: Path, directory: Path, relative: Any, name: Any) -> None:
    parts = PurePosixPath(relative).parts if isinstance(relative, str) else ()
    if (
        not parts
        or PurePosixPath(relative).is_absolute()
        or any(part in ("", ".", "..") for part in parts)
        or not relative.endswith(_SAFE_SUFFIXES)
        or not isinstance(name, str)
        or not name.startswith(PREFIX)
        or "/" in name
        or not (directory / name).is_file()
    ):
        raise BundleIntegrityError(
            str(descriptor_file),
            f"names {relative!r} as {name!r}: not a file of the bundle of a kind that loads without running "
            "code (JSON, safetensors, tokenizer files). It was not loaded",
        )


def _load_pipeline(folder: str, descriptor: dict[str, Any]) -> Any:
    from transformers import pipeline

    return pipeline(
        descriptor["task"],
        model=folder,
        trust_remote_code=False,  # the folder exists, so nothing is looked up on the hub
        device="cpu",  # as a pickled model loads; serving places it (devices.py)
        dtype=descriptor.get("dtype", "float32"),
        model_kwargs={"use_safetensors": True},
        **(descriptor.get("arguments") or {}),
    )


def _load_sentence_transformer(descriptor_file: Path, folder: str) -> Any:
    from sentence_transformers import SentenceTransformer

    modules_file = Path(folder, "modules.json")
    modules = json.loads(modules_file.read_text()) if modules_file.exists() else []
    foreign = [m.get("type") for m in modules if not str(m.get("type", "")).startswith("sentence_transformers.")]
    if foreign:
        raise BundleIntegrityError(
            str(descriptor_file),
            f"names modules from outside sentence-transformers ({', '.join(map(str, foreign))}), which loading "
            "would import and run. It was not loaded",
        )
    return SentenceTransformer(folder, device="cpu", trust_remote_code=False, local_files_only=True)
