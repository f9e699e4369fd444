"""Standard transformers pipelines and sentence transformers stored in their library's own format and
loaded without unpickling; anything else keeps the pickle; the library's files are sealed like any other."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

import notebook_deploy as nd
from notebook_deploy import pretrained, weights
from notebook_deploy.bundle import MODEL_FILE
from notebook_deploy.errors import BundleIntegrityError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import tiny_models  # noqa: E402

TEXTS = ["good great fine", "awful poor terrible", "hello world"]


def _no_unpickling(monkeypatch) -> None:
    """Make every way of unpickling in this process raise, so that a load that unpickles fails."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(weights._WeightsUnpickler, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def _picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _pipelines():
    return [
        pytest.param(tiny_models.text_classifier, TEXTS, "text-classification", id="classifier"),
        pytest.param(tiny_models.text_generator, ["hello world", "the quick"], "text-generation", id="generator"),
        pytest.param(tiny_models.image_classifier, [_picture(0), _picture(1)], "image-classification", id="vit"),
    ]


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Callable[[Callable[[], Any], list[Any]], tuple[Any, nd.Bundle]]:
    """Each pipeline built and captured once in this module, for the tests that read or damage a copy of
    its bundle: ``captured(build, sample)`` is the live model and its bundle."""
    store = nd.Store(tmp_path_factory.mktemp("store"))
    made: dict[Callable[[], Any], tuple[Any, nd.Bundle]] = {}

    def capture(build: Callable[[], Any], sample: list[Any]) -> tuple[Any, nd.Bundle]:
        if build not in made:
            model = build()
            made[build] = (model, nd.capture(model, name="m", sample=sample, store=store))
        return made[build]

    return capture


@pytest.mark.parametrize("build, sample, task", _pipelines())
def test_a_standard_pipeline_is_stored_in_its_library_format_and_loads_without_unpickling(
    captured, monkeypatch, build, sample, task
):
    model, bundle = captured(build, sample)
    serialization = bundle.manifest["serialization"]
    assert serialization["format"] == "transformers-pipeline"
    assert serialization["pretrained"]["task"] == task
    assert "pickle_scan" not in bundle.manifest
    assert not (bundle.path / MODEL_FILE).exists() and not (bundle.path / weights.WEIGHTS_FILE).exists()
    assert "pretrained.model.safetensors" in bundle.manifest["files"]  # sealed like every file
    assert {"transformers", "torch", "safetensors"} <= {line.split("==")[0] for line in bundle.lock()}

    _no_unpickling(monkeypatch)
    loaded = nd.Bundle.open(bundle.path)
    assert loaded.check_pickle().safe  # nothing to scan: there is no pickle
    assert type(loaded.model) is type(model)
    assert loaded.predict(sample) == model(sample)


def test_a_sentence_transformer_is_stored_in_its_library_format_and_loads_without_unpickling(
    store, tmp_path, monkeypatch
):
    pytest.importorskip("sentence_transformers")
    model = tiny_models.sentence_embedder(tmp_path / "bert")
    bundle = nd.capture(model, name="embed", sample=TEXTS, store=store)
    assert bundle.manifest["serialization"]["format"] == "sentence-transformers"
    assert not (bundle.path / MODEL_FILE).exists()
    descriptor = json.loads((bundle.path / pretrained.DESCRIPTOR).read_text())
    assert descriptor["files"]["1_Pooling/config.json"] == "pretrained.1_Pooling.config.json"  # its folders, flat

    _no_unpickling(monkeypatch)
    loaded = nd.Bundle.open(bundle.path)
    np.testing.assert_array_equal(loaded.predict(TEXTS, "encode"), model.encode(TEXTS))


def test_a_pipeline_subclass_or_a_replaced_method_keeps_the_pickle(store):
    from transformers import TextClassificationPipeline

    class Shouting(TextClassificationPipeline):  # the notebook's own post-processing
        def postprocess(self, *args, **kwargs):
            answer = super().postprocess(*args, **kwargs)
            return {**answer, "label": answer["label"].upper() + "!"}

    base = tiny_models.text_classifier()
    shouting = Shouting(model=base.model, tokenizer=base.tokenizer)
    assert pretrained.library_format(shouting) is None
    bundle = nd.capture(shouting, name="shout", sample=TEXTS, store=store)
    assert bundle.manifest["serialization"]["format"] == "cloudpickle"
    assert (bundle.path / MODEL_FILE).exists() and not (bundle.path / pretrained.DESCRIPTOR).exists()
    assert nd.Bundle.open(bundle.path).predict(TEXTS) == shouting(TEXTS)

    patched = tiny_models.text_classifier()
    patched.preprocess = lambda inputs, **kw: TextClassificationPipeline.preprocess(patched, inputs.lower(), **kw)
    assert pretrained.library_format(patched) is None


def test_a_pipeline_whose_round_trip_answers_otherwise_falls_back_to_the_pickle(store):
    model = tiny_models.text_classifier()
    # a hook doubling the logits: save_pretrained keeps the weights, not the hook, so a reloaded
    # pipeline would answer other scores; the probe sees it and the pickle (which keeps the hook) is stored
    model.model.register_forward_hook(lambda module, inputs, output: output.__class__(logits=output.logits * 2))
    assert pretrained.library_format(model) == pretrained.PIPELINE
    bundle = nd.capture(model, name="hooked", sample=TEXTS, store=store)
    assert bundle.manifest["serialization"]["format"] == "cloudpickle"
    assert not any(name.startswith(pretrained.PREFIX) for name in bundle.manifest["files"])
    assert any("stored as a pickle" in warning for warning in bundle.warnings)
    assert nd.Bundle.open(bundle.path).predict(TEXTS) == model(TEXTS)


@pytest.fixture(scope="module")
def classifier_bundle(captured) -> nd.Bundle:
    """The classifier's bundle, for the tests that damage a copy of it."""
    return captured(tiny_models.text_classifier, TEXTS)[1]


def _copy(bundle: nd.Bundle, tmp_path) -> nd.Bundle:
    nd.Bundle.open(bundle.path)  # intact before it is damaged
    shutil.copytree(bundle.path, tmp_path / "copy")
    return nd.Bundle(tmp_path / "copy", bundle.manifest)


@pytest.mark.parametrize("damaged", ["pretrained.model.safetensors", "pretrained.json", "pretrained.tokenizer.json"])
def test_a_changed_library_file_is_found_like_a_changed_pickle(classifier_bundle, tmp_path, damaged):
    bundle = _copy(classifier_bundle, tmp_path)
    with open(bundle.path / damaged, "r+b") as file:
        file.seek(-2, 2)
        last = file.read(1)
        file.seek(-2, 2)
        file.write(bytes([last[0] ^ 1]))
    with pytest.raises(BundleIntegrityError, match="does not match the hash"):
        nd.Bundle.open(bundle.path)


def test_a_file_added_beside_the_library_files_is_found(classifier_bundle, tmp_path):
    bundle = _copy(classifier_bundle, tmp_path)
    (bundle.path / "pretrained.pytorch_model.bin").write_bytes(b"not a model")
    with pytest.raises(BundleIntegrityError, match="not listed in bundle.json"):
        nd.Bundle.open(bundle.path)


@pytest.mark.parametrize(
    "relative, name",
    [
        ("pytorch_model.bin", "pretrained.pytorch_model.bin"),  # a format that can hold a pickle
        ("../config.json", "pretrained.config.json"),  # outside the library's folder
        ("config.json", "../outside.json"),  # a file outside the bundle
        ("config.json", "pretrained.missing.json"),
    ],
)
def test_a_descriptor_naming_a_file_that_could_run_code_is_refused_before_loading(tmp_path, relative, name):
    (tmp_path / "pretrained.pytorch_model.bin").write_bytes(b"\x80\x04N.")
    (tmp_path / "pretrained.config.json").write_text("{}")
    (tmp_path / pretrained.DESCRIPTOR).write_text(
        json.dumps({"format": pretrained.PIPELINE, "task": "text-classification", "files": {relative: name}})
    )
    with pytest.raises(BundleIntegrityError, match="loads without running code"):
        pretrained.load_model(tmp_path / pretrained.DESCRIPTOR)


def test_a_sentence_transformer_naming_a_module_outside_the_library_is_refused(tmp_path):
    pytest.importorskip("sentence_transformers")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "os.system"}]
    (tmp_path / "pretrained.modules.json").write_text(json.dumps(modules))
    (tmp_path / pretrained.DESCRIPTOR).write_text(
        json.dumps({"format": pretrained.SENTENCE_TRANSFORMERS, "files": {"modules.json": "pretrained.modules.json"}})
    )
    with pytest.raises(BundleIntegrityError, match="os.system"):
        pretrained.load_model(tmp_path / pretrained.DESCRIPTOR)
