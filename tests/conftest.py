"""Shared fixtures: small fitted models and their data, and a store in a temporary folder."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import notebook_deploy as nd


@pytest.fixture(scope="session", autouse=True)
def _session_signing_key(tmp_path_factory):
    """One signing key and trust store for the session, outside the user's own: the session-scoped
    bundles are captured (and signed) once and served by many tests, each with its own store home.
    The first capture makes the key and trusts it, as for a user."""
    from notebook_deploy.signing import SIGNING_KEY_VARIABLE, TRUST_DIR_VARIABLE

    folder = tmp_path_factory.mktemp("signing")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SIGNING_KEY_VARIABLE, str(folder / "signing-key.pem"))
        patch.setenv(TRUST_DIR_VARIABLE, str(folder / "trusted-keys"))
        yield folder


@pytest.fixture(scope="session", autouse=True)
def _session_layer_cache(tmp_path_factory):
    """One layer cache for every store of the session (as a CI job would keep one): the first push builds
    the dependency and runtime layers, later ones take them from here. A test of the cache itself, or of
    a first build, gives its store its own cache with ``own_layer_cache``."""
    from notebook_deploy.image.cache import LAYER_CACHE_VARIABLE

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LAYER_CACHE_VARIABLE, str(tmp_path_factory.mktemp("layer-cache")))
        yield


@pytest.fixture
def own_layer_cache(monkeypatch):
    """Each store builds into its own ``cache/layers`` in this test, as without ``$NOTEBOOK_DEPLOY_LAYER_CACHE``."""
    from notebook_deploy.image.cache import LAYER_CACHE_VARIABLE

    monkeypatch.delenv(LAYER_CACHE_VARIABLE)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test touches the user's own store. Probes run cold unless a test turns the warm server on
    (tests/test_warm_probe.py): each test has its own environment (this variable), so a server started
    after one test's capture would never serve another's, only load the machine."""
    monkeypatch.setenv("NOTEBOOK_DEPLOY_HOME", str(tmp_path / "default-store"))
    monkeypatch.setenv("NOTEBOOK_DEPLOY_COLD_PROBE", "1")


@pytest.fixture
def store(tmp_path) -> nd.Store:
    return nd.Store(tmp_path / "store")


@pytest.fixture(scope="session")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="session")
def forest(iris):
    X, y = iris
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)


@pytest.fixture(scope="session")
def customers() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 300),
            "income": rng.normal(50.0, 12.0, 300),
            "city": rng.choice(["paris", "rome", "oslo"], 300),
        }
    )
    return frame, (frame["age"] + rng.normal(0, 10, 300) > 45).astype(int)


@pytest.fixture(scope="session")
def pipeline(customers):
    frame, target = customers
    preprocess = ColumnTransformer(
        [("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    return make_pipeline(preprocess, LogisticRegression()).fit(frame, target)


@pytest.fixture(scope="session")
def session_store(tmp_path_factory) -> nd.Store:
    """A store shared by tests that only read the bundles captured into it."""
    return nd.Store(tmp_path_factory.mktemp("session-store"))


@pytest.fixture(scope="session")
def forest_bundle(forest, iris, session_store) -> nd.Bundle:
    return nd.capture(forest, name="forest", sample=iris[0][:5], store=session_store)


@pytest.fixture(scope="session")
def pipeline_bundle(pipeline, customers, session_store) -> nd.Bundle:
    return nd.capture(pipeline, name="customers", sample=customers[0].head(), store=session_store)


@pytest.fixture(scope="session")
def wav_bundle(session_store) -> nd.Bundle:
    """A function of audio bytes (WAV files), captured on two of them: a model of ``bytes`` rows."""
    from models import wav, wav_headers

    return nd.capture(wav_headers, name="wav", sample=[wav(0.1), wav(0.25, 16000)], store=session_store)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """For tests that run images: a registry holding a Debian Python 3.11 base, and a Docker daemon of
    the test module's own. Yields ``(registry, docker, base reference)``."""
    from containers import DockerDaemon, push_python_base
    from registries import Registry

    workdir = tmp_path_factory.mktemp("engine")
    with Registry("none", workdir / "registry") as registry, DockerDaemon() as docker:
        yield registry, docker, push_python_base(registry.host)


class _Ray:
    """One local Ray instance with Ray Serve's proxy on a free port, shared by consecutive tests that
    deploy to it (tests/test_ray.py and tests/test_ray_versions.py run one after the other): starting one
    takes a quarter of a minute here. Its CPUs are logical slots (four, for the replicas of three
    applications), not the machine's cores."""

    address: str | None = None
    temp_dir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def start(cls) -> str:
        if cls.address is None:
            import ray
            from ray import serve
            from registries import free_port

            # Ray's socket paths must stay short: a folder of its own directly under /tmp
            cls.temp_dir = tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp")
            ray.init(num_cpus=4, include_dashboard=False, _temp_dir=cls.temp_dir.name, log_to_driver=False)
            serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
            cls.address = ray.get_runtime_context().gcs_address
        return cls.address

    @classmethod
    def stop(cls) -> None:
        if cls.address is not None:
            import ray
            from ray import serve

            try:
                serve.shutdown()
                ray.shutdown()
            finally:
                cls.address = None
                if cls.temp_dir is not None:
                    cls.temp_dir.cleanup()


@pytest.fixture(scope="module")
def cluster():
    """For tests that deploy to Ray Serve: the address of the local Ray instance (``_Ray``), started if
    need be; it stops with the last module in a row that uses it."""
    return _Ray.start()


@pytest.hookimpl(trylast=True)  # after the teardown of the module's fixtures, which delete their deployments
def pytest_runtest_teardown(item, nextitem):
    """Stop Ray at the end of a module when the next module's tests do not deploy to it (a module may
    ask for ``cluster`` from inside a test, as tests/test_docs.py does: its address stays valid there)."""
    if nextitem is None or (nextitem.module is not item.module and "cluster" not in nextitem.fixturenames):
        _Ray.stop()


@pytest.fixture(scope="module")
def forest_client(forest_bundle):
    """The forest's app with default settings, in-process."""
    with TestClient(nd.create_app(forest_bundle)) as client:
        yield client


@pytest.fixture(scope="module")
def pipeline_client(pipeline_bundle):
    """The pandas pipeline's app with default settings, in-process."""
    with TestClient(nd.create_app(pipeline_bundle)) as client:
        yield client
