"""Foundation models captured like any model: sentence-transformers, a torch module behind the
notebook's own pre- and post-processing, and what their locks record."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
from fastapi.testclient import TestClient

import notebook_deploy as nd

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import tiny_models  # noqa: E402


def _lock(bundle: nd.Bundle) -> dict[str, str]:
    return dict(line.split("==", 1) for line in bundle.lock())


def test_a_sentence_transformer_is_served_as_encode(store, tmp_path):
    pytest.importorskip("sentence_transformers")
    embedder = tiny_models.sentence_embedder(tmp_path / "bert")
    texts = ["hello world", "the lazy dog", "bad awful"]
    bundle = nd.capture(embedder, name="embed", sample=texts, store=store)
    assert bundle.methods == ["encode"]
    assert bundle.manifest["serialization"]["format"] == "sentence-transformers"  # its own format, no pickle
    lock = _lock(bundle)
    assert lock["sentence-transformers"] == metadata.version("sentence-transformers")
    with TestClient(nd.create_app(bundle)) as client:
        answer = client.post("/encode", json={"instances": ["bad awful", "hello world"]})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], embedder.encode(["bad awful", "hello world"]), rtol=1e-5)


def test_a_torch_module_behind_notebook_functions_keeps_its_weights_out_of_the_pickle(store):
    classifier = tiny_models.text_classifier()
    tokenizer, network = classifier.tokenizer, classifier.model

    def score(texts):  # the notebook's own pre- and post-processing around the network
        batch = tokenizer(list(texts), return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = network(**batch).logits
        return logits.softmax(-1)[:, 1].numpy()

    texts = ["good great fine", "awful poor terrible"]
    bundle = nd.capture(score, name="score", sample=texts, store=store)
    weights = bundle.manifest["serialization"]["weights"]
    assert weights["tensors"] >= len(network.state_dict()) - 1  # position ids are a buffer too
    assert (bundle.path / "model.pkl").stat().st_size < weights["bytes"]
    assert {"torch", "transformers", "tokenizers", "safetensors"} <= set(_lock(bundle))
    with TestClient(nd.create_app(bundle)) as client:
        answer = client.post("/predict", json={"instances": texts})
    np.testing.assert_allclose(answer.json()["predictions"], score(texts), rtol=1e-5)


def test_the_lock_records_the_torch_build(store):
    net = torch.nn.Linear(2, 1)
    bundle = nd.capture(net, name="lin", sample=np.zeros((2, 2), dtype=np.float32), store=store)
    assert _lock(bundle)["torch"] == torch.__version__  # the local label too: 2.13.0+cpu is a CPU build
    assert bundle.manifest["model"]["torch"] == {"version": torch.__version__, "cuda": torch.version.cuda}
