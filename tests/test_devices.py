"""Where a served model runs (--device): the CPU here, a clear refusal of cuda without a GPU, the report."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

import notebook_deploy as nd
from notebook_deploy import devices
from notebook_deploy.errors import SettingError
from notebook_deploy.serving.settings import OPTIONS

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def net_bundle(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    store = nd.Store(tmp_path_factory.mktemp("store"))
    return nd.capture(net, name="net", sample=np.zeros((2, 3), dtype=np.float32), store=store)


def test_auto_serves_on_a_gpu_where_there_is_one_else_the_cpu_and_says_so(net_bundle):
    gpu = torch.cuda.is_available()  # False on the machines the tests run on: no GPU there
    with TestClient(nd.create_app(net_bundle)) as client:
        assert client.get("/metadata").json()["device"]["device"] == ("cuda" if gpu else "cpu")
        assert client.post("/predict", json={"instances": [[1, 2, 3]]}).status_code == 200
        assert ("notebook_deploy_gpu_memory_bytes" in client.get("/metrics").text) == gpu


def test_cuda_is_refused_where_torch_sees_no_gpu_naming_the_way_out(net_bundle):
    if torch.cuda.is_available():  # not on the machines the tests run on
        nd.create_app(net_bundle, device="cuda")
        return
    with pytest.raises(SettingError, match=r"device.*no CUDA GPU here: serve with --device cpu"):
        nd.create_app(net_bundle, device="cuda")


def test_cuda_is_refused_for_a_model_without_tensors(forest_bundle):
    with pytest.raises(SettingError, match="cuda places torch models only, and this model is a RandomForestClassifier"):
        nd.create_app(forest_bundle, device="cuda")


def test_an_unknown_device_is_refused_with_the_choices():
    with pytest.raises(SettingError, match="must be one of auto, cpu, cuda"):
        nd.ServeSettings(device="tpu")
    assert OPTIONS["device"].variable == "NOTEBOOK_DEPLOY_DEVICE"


def test_a_pipeline_placed_on_the_cpu_sends_its_inputs_there():
    pytest.importorskip("transformers")
    import tiny_models

    classifier = tiny_models.text_classifier()
    classifier.device = torch.device("meta")  # as if it came from elsewhere: inputs would go there and fail
    devices.place(classifier, "cpu")
    assert classifier.device == torch.device("cpu")
    assert classifier(["hello world"])[0]["label"] in {"NEG", "POS"}


def test_gpu_memory_is_exported_at_each_scrape(net_bundle):
    from notebook_deploy.serving.metrics import Metrics
    from notebook_deploy.serving.predictor import Predictor
    from notebook_deploy.serving.served import ServedModel

    settings = nd.ServeSettings()
    metrics = Metrics(ServedModel(net_bundle, Predictor(net_bundle, settings), settings))
    # torch.cuda cannot run here (no GPU on these machines): a stand-in reader plays
    # devices.memory_allocated, to check that the gauge is made and labelled per GPU
    metrics.add_gpu_memory(lambda: {"0": 1234, "1": 0})
    text = metrics.exposition().decode()
    assert 'notebook_deploy_gpu_memory_bytes{gpu="0",model="net",version="' in text
    assert text.count("notebook_deploy_gpu_memory_bytes{") == 2
