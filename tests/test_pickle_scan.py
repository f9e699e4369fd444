"""The static pickle scan (notebook_deploy.pickle_scan) on real cloudpickles, and where it runs: capture
records it, import, a bundle folder given by path and `serve PATH` refuse a bundle whose pickle would run a
payload, naming it, and the payload never runs (its marker file is not made)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import cloudpickle
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import notebook_deploy as nd
from notebook_deploy import audit
from notebook_deploy.bundle import MODEL_FILE, seal_manifest
from notebook_deploy.errors import UnsafePickleError
from notebook_deploy.pickle_scan import scan_pickle
from notebook_deploy.provenance import sign
from notebook_deploy.signing import SigningKey


def notebook_namespace(source: str) -> dict:
    """Run ``source`` as a notebook cell does: in ``__main__``, so cloudpickle pickles what it defines by value."""
    namespace = {"__name__": "__main__", "np": np, "os": os}
    exec(textwrap.dedent(source), namespace)  # noqa: S102 - the test's own code
    return namespace


def payload_pickle(marker) -> bytes:
    """The classic payload: an object whose ``__reduce__`` makes loading call ``os.system``."""

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return cloudpickle.dumps(Payload(), protocol=5)


def notebook_payload_pickle(marker) -> bytes:
    """A payload written as a notebook function that loading calls: no dangerous global in the pickle."""
    namespace = notebook_namespace(f"""
        def payload():
            import subprocess
            subprocess.run(["touch", "{marker}"])

        class Payload:
            def __reduce__(self):
                return payload, ()
    """)
    return cloudpickle.dumps(namespace["Payload"](), protocol=5)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.random((40, 3))
    return X, (X[:, 0] > 0.5).astype(int)


# -- the scan on real pickles ---------------------------------------------------------------------------
def test_a_scikit_learn_pipeline_is_safe_and_its_imports_are_listed(fitted):
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(*fitted)
    scan = scan_pickle(cloudpickle.dumps(pipeline, protocol=5))
    assert scan.safe, scan.findings
    assert "sklearn.linear_model._logistic.LogisticRegression" in scan.globals


def test_notebook_functions_and_classes_by_value_are_safe(fitted):
    namespace = notebook_namespace("""
        def double(x):
            return np.asarray(x) * 2

        class Scaled:
            def __init__(self, k):
                self.k = k

            def predict(self, x):
                return double(x).sum(axis=1) * self.k
    """)
    pipeline = make_pipeline(FunctionTransformer(namespace["double"]), LogisticRegression()).fit(*fitted)
    for model in (pipeline, namespace["Scaled"](3)):
        data = cloudpickle.dumps(model, protocol=5)
        assert "_make_function" in str(scan_pickle(data).globals) or "_make_skeleton_class" in str(
            scan_pickle(data).globals
        )  # really by value
        assert scan_pickle(data).safe, scan_pickle(data).findings


def test_the_classic_payload_is_named(tmp_path):
    scan = scan_pickle(payload_pickle(tmp_path / "marker"))
    assert scan.findings == [f"imports {os.system.__module__}.system"]


def test_a_payload_in_a_notebook_function_called_while_loading_is_found(tmp_path):
    data = notebook_payload_pickle(tmp_path / "marker")
    findings = scan_pickle(data).findings
    assert "calls 'payload', a function defined inside the pickle, while loading" in findings
    assert "function payload() pickled by value uses import subprocess" in findings
    pickle.loads(data)  # what the scan stops: loading it runs the payload
    assert (tmp_path / "marker").exists()


def test_a_notebook_function_that_uses_os_is_found_though_loading_does_not_run_it():
    namespace = notebook_namespace("""
        def cleanup(x):
            os.remove("/tmp/x")
            return x
    """)
    assert scan_pickle(cloudpickle.dumps(namespace["cleanup"])).findings == [
        "imports module os (cloudpickle.subimport)"
    ]


def u(text: str) -> bytes:
    """A SHORT_BINUNICODE opcode pushing ``text``."""
    return b"\x8c" + bytes([len(text)]) + text.encode()


@pytest.mark.parametrize(
    ("data", "finding"),
    [
        (b"cbuiltins\nexec\n(S'print(1)'\ntR.", "imports builtins.exec"),  # protocol 0
        (pickle.dumps(shutil.rmtree, protocol=4), "imports shutil.rmtree"),  # STACK_GLOBAL of memoized strings
        (
            b"\x80\x04"
            + u("builtins")
            + u("getattr")
            + b"\x93"
            + u("numpy")
            + u("ndarray")
            + b"\x93"
            + u("os")
            + b"\x86R.",
            "reads attribute 'os' with builtins.getattr",
        ),  # a getattr chain
        (b"csklearn.base\nnp.os.system\n.", "imports sklearn.base.np.os.system"),  # through an attribute path
        (
            b"\x80\x04" + u("builtins") + u("str") + b"\x93" + u("os") + b"\x85R" + u("system") + b"\x93.",
            "whose name is computed",
        ),  # STACK_GLOBAL of a module name made while loading
        (b"not a pickle", "cannot be scanned"),
    ],
)
def test_hand_made_pickles(data, finding):
    assert any(finding in f for f in scan_pickle(data).findings), scan_pickle(data).findings


# -- where it runs ----------------------------------------------------------------------------------------
def test_capture_records_the_scan_in_the_manifest(forest_bundle):
    recorded = forest_bundle.manifest["pickle_scan"]
    assert recorded["findings"] == [] and recorded["scanner"] == "notebook-deploy-pickle-scan"
    assert "sklearn.ensemble._forest.RandomForestClassifier" in recorded["globals"]


def resealed_with(bundle: nd.Bundle, data: bytes, folder) -> nd.Bundle:
    """``bundle`` with its model replaced by ``data`` and sealed again with the project's own function,
    as someone who wants it imported would do; signed by a trusted key (the session's), so that what
    refuses it is the scan, which runs whoever signed (tests/test_trust.py refuses untrusted signers)."""
    shutil.copytree(bundle.path, folder)
    (folder / MODEL_FILE).write_bytes(data)
    manifest = seal_manifest(folder, {**bundle.manifest, "name": "evil"})
    resealed = nd.Bundle(folder, manifest)
    sign(resealed, SigningKey.load())
    return resealed


@pytest.mark.parametrize("make", [payload_pickle, notebook_payload_pickle])
def test_import_refuses_a_resealed_payload_and_it_never_runs(make, forest_bundle, store, tmp_path):
    marker = tmp_path / "marker"
    evil = resealed_with(forest_bundle, make(marker), tmp_path / "evil")
    evil.check_integrity()  # the hash check alone passes it
    archive = evil.export(tmp_path)
    with pytest.raises(UnsafePickleError, match="loading it would run code") as refused:
        store.import_archive(archive)
    assert "It was not loaded" in str(refused.value)
    assert store.names() == [] and not marker.exists()
    (entry,) = [e for e in audit.read(root=store) if e["event"] == "import"]
    assert entry["result"] == "refused" and entry["archive"] == str(archive) and "loading it" in entry["error"]
    with pytest.raises(UnsafePickleError):  # a bundle folder given by path
        nd.load(str(evil.path))
    result = subprocess.run(
        [sys.executable, "-m", "notebook_deploy", "--store", str(store.root), "serve", str(evil.path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "loading it would run code" in result.stderr
    assert not marker.exists()


def test_a_safe_archive_imports_and_is_audited(forest_bundle, store, tmp_path):
    imported = store.import_archive(forest_bundle.export(tmp_path))
    assert imported.ref == forest_bundle.ref
    (entry,) = [e for e in audit.read(root=store) if e["event"] == "import"]
    assert (entry["result"], entry["name"], entry["version"]) == ("ok", "forest", forest_bundle.version)
    assert nd.load(str(imported.path), store).model is not None  # a store's own version, not scanned again


def test_a_capture_whose_own_pickle_has_findings_warns_and_is_refused_where_imported(iris, store, tmp_path):
    namespace = notebook_namespace("""
        class Logged:
            def __init__(self, model):
                self.model = model

            def predict(self, x):
                os.getpid()
                return self.model.predict(x)
    """)
    model = namespace["Logged"](LogisticRegression(max_iter=300).fit(*iris))
    bundle = nd.capture(model, name="logged", sample=iris[0][:3], store=store)
    assert bundle.manifest["pickle_scan"]["findings"] == ["imports module os (cloudpickle.subimport)"]
    assert any("would be refused where this bundle is imported" in w for w in bundle.warnings)
    with pytest.raises(UnsafePickleError, match="imports module os"):
        nd.Store(tmp_path / "elsewhere").import_archive(bundle.export(tmp_path))
