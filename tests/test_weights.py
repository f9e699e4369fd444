"""A model's torch tensors go to weights.safetensors beside a small pickle, and come back as they were."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from fastapi.testclient import TestClient

import notebook_deploy as nd
from notebook_deploy.capturing.pickling import dump_model
from notebook_deploy.errors import BundleIntegrityError
from notebook_deploy.weights import TAG, WEIGHTS_FILE, load_model

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


class Odd(torch.nn.Module):
    """Tensors of every sort the collector meets: tied, transposed views, bfloat16, empty, a plain buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = torch.nn.Linear(4, 6)
        self.decode = torch.nn.Linear(6, 4)
        self.decode.weight = torch.nn.Parameter(self.encode.weight.T)  # a transposed view of the same memory
        self.tied = self.encode  # the same module twice
        self.register_buffer("brain", torch.arange(6, dtype=torch.bfloat16))
        self.register_buffer("empty", torch.zeros(0))
        self.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)

    def forward(self, x):
        return self.decode(torch.relu(self.tied(x)) + self.brain.float()) + self.frozen.sum()


def test_tensors_leave_the_pickle_and_come_back_equal(tmp_path):
    torch.manual_seed(0)
    model = Odd().eval()
    pickled = dump_model(model)
    tensors = pickled.weights.tensors
    (tmp_path / "model.pkl").write_bytes(pickled.data)
    pickled.weights.write(tmp_path / WEIGHTS_FILE)

    # the weights are a real safetensors file, read by the library itself
    on_disk = safetensors_torch.load_file(tmp_path / WEIGHTS_FILE)
    assert set(on_disk) == set(tensors)
    for key, tensor in tensors.items():
        assert torch.equal(on_disk[key], tensor.detach().contiguous())
    assert model.encode.bias.detach().numpy().tobytes() not in pickled.data  # the data left the pickle
    assert all(t.numel() > 0 for t in tensors.values())  # the empty buffer stayed in the pickle

    loaded = load_model(tmp_path / "model.pkl")
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), model(x))  # the transposed view comes back contiguous: rounding may differ
    assert loaded.brain.dtype == torch.bfloat16 and loaded.empty.shape == (0,)
    assert loaded.tied is loaded.encode
    assert loaded.encode.weight.requires_grad and not loaded.frozen.requires_grad


def test_the_same_memory_is_written_once_and_stays_shared(tmp_path):
    shared = torch.nn.Linear(8, 8)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(8, 8), "b": torch.nn.Linear(8, 8)})
    model["b"].weight = model["a"].weight  # tied, as a language model's input and output embeddings
    model["c"] = shared
    pickled = dump_model(model)
    assert len(pickled.weights.tensors) == 5  # a.weight once, a.bias, b.bias, c.weight, c.bias
    (tmp_path / "model.pkl").write_bytes(pickled.data)
    pickled.weights.write(tmp_path / WEIGHTS_FILE)
    loaded = load_model(tmp_path / "model.pkl")
    assert loaded["b"].weight is loaded["a"].weight


def test_a_pickle_without_tensors_writes_no_weights_file(iris, store):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    bundle = nd.capture(LogisticRegression(max_iter=300).fit(X, y), name="plain", sample=X[:5], store=store)
    assert not (bundle.path / WEIGHTS_FILE).exists()
    assert bundle.manifest["serialization"]["weights"] is None


def test_a_captured_torch_module_keeps_its_weights_in_safetensors(store):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.ReLU(), torch.nn.Linear(256, 3)).eval()
    rows = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    bundle = nd.capture(net, name="net", sample=rows, store=store)
    weights = bundle.path / WEIGHTS_FILE
    state = {k: v for k, v in net.state_dict().items()}
    expected_bytes = sum(v.numel() * v.element_size() for v in state.values())
    assert bundle.manifest["serialization"]["weights"] == {
        "file": WEIGHTS_FILE,
        "format": "safetensors",
        "tensors": len(state),
        "bytes": expected_bytes,
    }
    assert (bundle.path / "model.pkl").stat().st_size < expected_bytes / 4
    assert "safetensors" in {line.split("==")[0] for line in bundle.lock()}  # loading the weights needs it
    with TestClient(nd.create_app(bundle)) as client:
        answer = client.post("/predict", json={"instances": rows.tolist()})
    np.testing.assert_allclose(answer.json()["predictions"], net(torch.from_numpy(rows)).detach().numpy(), rtol=1e-6)

    # a changed weights file is refused before anything is unpickled
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=WEIGHTS_FILE):
        nd.Bundle.open(bundle.path)


def test_a_foreign_persistent_id_is_refused(tmp_path):
    class Foreign(pickle.Pickler):
        def persistent_id(self, obj):
            return ("elsewhere", "x") if obj == "marker" else None

    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        Foreign(f).dump(["marker"])
    with pytest.raises(pickle.UnpicklingError, match="unknown persistent id"):
        load_model(path)

    class Tensorless(pickle.Pickler):
        def persistent_id(self, obj):
            return (TAG, "t0", False) if obj == "marker" else None

    with open(path, "wb") as f:  # names a tensor, with no weights file beside it
        Tensorless(f).dump(["marker"])
    with pytest.raises(pickle.UnpicklingError, match=f"there is no {WEIGHTS_FILE}"):
        load_model(path)


@pytest.mark.parametrize("subclassed", [False, True], ids=["pretrained", "pickled"])
def test_a_transformers_pipeline_is_captured_with_safetensors_and_answers_as_in_process(store, subclassed):
    """A standard pipeline goes in its library's format (notebook_deploy.pretrained); a subclass of one is
    pickled, its tensors in the weights file. Either way the weights are safetensors and stay tied."""
    pytest.importorskip("transformers")
    import tiny_models
    from transformers import TextGenerationPipeline

    class Generator(TextGenerationPipeline):
        pass

    generator = tiny_models.text_generator()
    if subclassed:
        generator = Generator(model=generator.model, tokenizer=generator.tokenizer, device="cpu")
    prompts = ["hello world", "the quick brown"]
    expected = generator(prompts)
    bundle = nd.capture(generator, name="gen", sample=prompts, store=store)
    serialization = bundle.manifest["serialization"]
    if subclassed:
        assert serialization["format"] == "cloudpickle"
        assert serialization["weights"]["tensors"] > 10
    else:
        assert serialization["format"] == "transformers-pipeline"
        assert "pretrained.model.safetensors" in bundle.manifest["files"]
    lock = {line.split("==")[0].lower() for line in bundle.lock()}
    assert {"torch", "transformers", "tokenizers", "safetensors"} <= lock
    loaded = nd.Bundle.open(bundle.path).model
    assert type(loaded) is type(generator)
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight  # still tied
    with TestClient(nd.create_app(bundle)) as client:
        answer = client.post("/predict", json={"instances": prompts})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected
