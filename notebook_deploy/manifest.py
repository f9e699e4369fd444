"""The fields of bundle.json, typed: what a reader of a manifest may count on, written once.

A ``TypedDict`` family rather than dataclasses: the manifest is JSON whose canonical text is hashed into
the version id and the digest, so it stays the plain dict it is on disk, and a type checker holds every
reader to these names and types. ``Bundle`` (bundle.py) reads it through properties; other modules ask
the bundle (``bundle.model_type``, ``bundle.digest``...), not the dict. Keys a bundle may lack (made by an
older release, or not captured from a notebook) are ``NotRequired``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:  # only read by type checkers: the annotations are never evaluated (Python 3.10 lacks it)
    from typing_extensions import NotRequired


class PythonInfo(TypedDict):
    version: str  # "3.11.9"
    implementation: str  # "CPython"


class TorchBuild(TypedDict):
    version: str  # torch.__version__, with the build's local label (2.13.0+cpu)
    cuda: str | None  # the CUDA version it was built for; None for a CPU build


class ModelInfo(TypedDict):
    type: str  # "module.Class" of the model
    methods: list[str]  # the inference methods captured, in order
    batchable: NotRequired[bool]  # a batch call gives what row-by-row calls give (checked on the sample)
    torch: NotRequired[TorchBuild]  # the torch build of a model with tensors


class Weights(TypedDict):
    file: str  # "weights.safetensors", beside model.pkl
    format: str  # "safetensors"
    tensors: int
    bytes: int


class Pretrained(TypedDict):
    file: str  # "pretrained.json", which maps each pretrained.* file to its path in the library's folder
    library: str  # "transformers" or "sentence-transformers"
    version: str  # the library's version that saved it
    task: NotRequired[str]  # a pipeline's task ("text-classification")
    dtype: NotRequired[str]  # a pipeline's model's dtype ("float32")
    files: int
    bytes: int


class Serialization(TypedDict):
    # "cloudpickle"; "transformers-pipeline" or "sentence-transformers" for a model stored in its
    # library's format and loaded without unpickling (notebook_deploy.pretrained)
    format: str
    cloudpickle: NotRequired[str]  # the pickle's fields: cloudpickle, protocol, by_value_modules, weights
    protocol: NotRequired[int]
    by_value_modules: NotRequired[list[str]]  # local modules pickled by value
    weights: NotRequired[Weights | None]  # the tensors the pickle refers to by persistent id; older bundles lack it
    pretrained: NotRequired[Pretrained]  # the library's files, for the formats other than cloudpickle


class SchemaDocument(TypedDict):
    input: dict[str, Any]  # schema.Schema.to_dict()
    outputs: dict[str, dict[str, Any]]  # method -> its output schema


class SampleInfo(TypedDict):
    source: str  # where the sample came from ("given by --sample X[:5]", "the rows fitted on")
    rows: int


class Source(TypedDict, total=False):
    kind: str  # "kernel" (a live session), "notebook" (a saved one), "script", "interactive"
    path: str | None  # a saved notebook or a script
    notebook: str | None  # a live kernel's notebook, as Jupyter names its session


class DataFileInfo(TypedDict):
    path: str
    sha256: str
    size: int | None
    included: bool


class RecipeSummary(TypedDict, total=False):
    target: str
    executions: list[int]
    failed: list[int]
    files: list[DataFileInfo]
    environment_actions: list[str]
    warnings: list[str]
    source: dict[str, Any]
    workdir: str
    reasons: list[list[str]]
    trimmed: list[int]
    modules: list[str]
    requirements: list[str]
    urls: list[tuple[int, str]]
    fetched: list[dict[str, Any]]


class ReferenceSummary(TypedDict):
    source: str  # "reference" (given data) or "sample"
    rows: int
    features: dict[str, str]  # feature -> kind
    predictions: str | None  # the method whose predictions are summarised


class Manifest(TypedDict):
    format: int
    name: str
    version: str  # 12 hex digits of the content hash
    created: str  # ISO 8601, UTC
    parent: str | None  # the version that was latest when this one was captured
    digest: str  # "sha256:..." of the canonical manifest
    files: dict[str, str]  # file name -> "sha256:..." of every sealed file
    python: PythonInfo
    model: ModelInfo
    schema: SchemaDocument
    requirements: list[str]  # the distributions the model uses, pinned
    serialization: NotRequired[Serialization]
    pickle_scan: NotRequired[dict[str, Any]]  # pickle_scan.PickleScan.to_manifest(); none without a pickle
    sample: NotRequired[SampleInfo]
    provenance: NotRequired[Source | None]
    recipe: NotRequired[RecipeSummary | None]
    labels: NotRequired[dict[str, str]]
    reference: NotRequired[ReferenceSummary | None]
    warnings: NotRequired[list[str]]
    runtime: NotRequired[dict[str, str]]
