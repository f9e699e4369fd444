"""The warm probe server (notebook_deploy/capturing/warm.py): the same lock and the same errors as the
cold probe, used when it may be, never when it may not, and replaced or bypassed when it cannot be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.capturing import packages, warm
from notebook_deploy.capturing.pickling import dump_model
from notebook_deploy.errors import CaptureError


@pytest.fixture
def warm_on(monkeypatch):
    """The warm server enabled (conftest turns it off for every other test), and stopped afterwards."""
    monkeypatch.delenv(warm.COLD_ENV, raising=False)
    warm.stop()
    yield
    server = warm.current()
    warm.stop()
    if server is not None:
        assert server.process.returncode is not None  # reaped, no zombie


@pytest.fixture(scope="module")
def logistic(iris):
    X, y = iris
    return LogisticRegression(max_iter=500).fit(X, y)


def _lock(bundle: nd.Bundle) -> list[str]:
    return sorted(bundle.lock())


def test_the_fingerprint_changes_with_what_imports_can_find_and_only_with_that(tmp_path, monkeypatch):
    folder = tmp_path / "on-path"
    folder.mkdir()
    before = warm.fingerprint()
    monkeypatch.syspath_prepend(str(folder))
    on_path = warm.fingerprint()
    assert on_path != before  # a new folder on sys.path
    (folder / "results.csv").write_text("a,b\n")
    assert warm.fingerprint() == on_path  # a data file written there changes nothing importable
    (folder / "newly_installed").mkdir()  # what pip does: a package folder (and its dist-info) appear
    installed = warm.fingerprint()
    assert installed != on_path
    metadata_folder = folder / "newly_installed-1.0.dist-info"
    metadata_folder.mkdir()
    os.utime(folder, ns=(1, 1))
    first = warm.fingerprint()
    os.utime(metadata_folder, ns=(2, 2))  # reinstalled under the same name (explicit mtimes: coarse clocks)
    os.utime(folder, ns=(3, 3))
    assert warm.fingerprint() != first


def test_the_cold_probe_can_be_forced(monkeypatch):
    monkeypatch.setenv(warm.COLD_ENV, "1")
    assert not warm.enabled()
    monkeypatch.delenv(warm.COLD_ENV)
    assert warm.enabled() == sys.platform.startswith("linux")


def test_a_server_never_runs_a_job_that_blocks_one_of_its_preloaded_modules(warm_on, tmp_path):
    key = warm.Key(warm.fingerprint(), (), ("colorsys",), ("predict",))
    server = warm.WarmServer(key, ["colorsys"])
    try:
        job = warm.Key(key.fingerprint, ("colorsys",), key.referenced, key.methods)
        finished = server.run(job, tmp_path / "m.pkl", tmp_path / "i.pkl", ["predict"], str(tmp_path), 60)
        assert finished is None  # the caller probes cold
        assert server.alive() and server.jobs == 0
    finally:
        server.stop()


def test_a_server_that_answers_garbage_is_stopped_and_the_probe_runs_cold(warm_on, tmp_path):
    key = warm.Key(warm.fingerprint(), (), (), ("predict",))
    server = warm.WarmServer(key, [])
    server.stop()
    server.process = subprocess.Popen(  # in the server's place, a process that answers no JSON
        [sys.executable, "-c", "print('not json', flush=True); import time; time.sleep(60)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert server.run(key, tmp_path / "m.pkl", tmp_path / "i.pkl", ["predict"], str(tmp_path), 60) is None
    assert server.process.returncode is not None and server.jobs == 0  # stopped and reaped


def test_a_server_with_nothing_preloaded_serves_any_probe_of_its_environment(warm_on):
    warm.start()  # what %load_ext does
    server = warm.current()
    assert server is not None and server.preload == []
    fingerprint = warm.fingerprint()
    assert server.serves(warm.Key(fingerprint, ("pandas",), ("sklearn.linear_model._logistic",), ("predict",)))
    assert not server.serves(warm.Key("another environment", (), (), ("predict",)))


@pytest.mark.integration
def test_later_captures_use_the_warm_server_with_the_cold_lock_and_survive_its_death(
    warm_on, logistic, iris, store, monkeypatch
):
    X, _ = iris
    monkeypatch.setenv(warm.COLD_ENV, "1")
    cold = nd.capture(logistic, name="lr", sample=X[:3], store=store)
    monkeypatch.delenv(warm.COLD_ENV)

    nd.capture(logistic, name="lr", sample=X[:3], store=store)  # probes cold, then starts the server
    server = warm.current()
    assert server is not None and server.jobs == 0 and server.preload
    second = nd.capture(logistic, name="lr", sample=X[:3], store=store)
    assert warm.current() is server and server.jobs == 1  # the probe ran on the warm server
    assert _lock(second) == _lock(cold)
    assert second.version == cold.version  # the whole bundle is the same, not only the lock

    os.kill(server.pid, signal.SIGKILL)
    server.process.wait()
    after = nd.capture(logistic, name="lr", sample=X[:3], store=store)  # falls back to the cold probe
    assert _lock(after) == _lock(cold) and server.jobs == 1
    replacement = warm.current()
    assert replacement is not None and replacement.pid != server.pid and replacement.alive()


@pytest.mark.integration
def test_a_changed_environment_probes_cold_and_replaces_the_server(
    warm_on, logistic, iris, store, tmp_path, monkeypatch
):
    X, _ = iris
    nd.capture(logistic, name="lr", sample=X[:3], store=store)
    nd.capture(logistic, name="lr", sample=X[:3], store=store)
    server = warm.current()
    assert server is not None and server.jobs == 1

    (tmp_path / "new-folder").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "new-folder"))
    changed = nd.capture(logistic, name="lr", sample=X[:3], store=store)
    assert server.jobs == 1 and not server.alive()  # not used, and stopped
    replacement = warm.current()
    assert replacement is not None and replacement.pid != server.pid and replacement.jobs == 0
    assert replacement.key.fingerprint != server.key.fingerprint
    assert "scikit-learn" in dict(line.split("==") for line in changed.lock())


class _FailsElsewhere:
    """Works in the capturing process; in any other process (the probe) it fails when told to."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.pid = os.getpid()

    def predict(self, rows):
        if self.fail and os.getpid() != self.pid:
            raise RuntimeError("this model refuses to run outside its notebook")
        return np.zeros(len(rows))


def _probe_error(model, tmp_path: Path, key: warm.Key | None) -> str:
    model_file = tmp_path / "model.pkl"
    model_file.write_bytes(dump_model(model).data)
    blocked = list(key.blocked) if key else []
    with pytest.raises(CaptureError) as raised:
        packages.probe(model_file, np.ones((2, 3)), ["predict"], blocked, 60, key)
    return str(raised.value)


@pytest.mark.integration
def test_a_model_that_fails_in_the_probe_gives_the_cold_error_on_the_warm_path(warm_on, store, tmp_path):
    nd.capture(_FailsElsewhere(fail=False), name="fails", sample=np.ones((2, 3)), store=store)
    server = warm.current()
    assert server is not None
    warm_error = _probe_error(_FailsElsewhere(fail=True), tmp_path, server.key)
    assert server.jobs == 1  # the failing probe ran warm
    cold_error = _probe_error(_FailsElsewhere(fail=True), tmp_path, None)
    assert server.jobs == 1
    for error in (warm_error, cold_error):
        assert error.startswith("the model could not be loaded and called in a fresh Python process")
    # The same message and the same exception; the tracebacks differ only in how the probe was started.
    assert warm_error.splitlines()[-1] == cold_error.splitlines()[-1]
    assert warm_error.splitlines()[-1] == "RuntimeError: this model refuses to run outside its notebook"


@pytest.mark.parametrize("warmed", [False, True])
def test_notebook_deploy_itself_blocked_does_not_break_the_probe(logistic, iris, tmp_path, monkeypatch, warmed):
    """Where notebook-deploy is an installed distribution (a fresh venv, not PYTHONPATH), the blocked list
    names it: the probe's own import of it comes before the blocker, cold and warm."""
    model_file = tmp_path / "model.pkl"
    model_file.write_bytes(dump_model(logistic).data)
    X, _ = iris
    if warmed:
        monkeypatch.delenv(warm.COLD_ENV, raising=False)
        warm.stop()
        key = warm.Key(warm.fingerprint(), ("notebook_deploy",), ("sklearn",), ("predict",))
        warm.keep_warm(key, [])
    else:
        key = None
    try:
        modules, outputs = packages.probe(model_file, X[:3], ["predict"], ["notebook_deploy"], 120, key)
        server = warm.current()
        assert not warmed or (server is not None and server.jobs == 1)  # the warm path really ran
    finally:
        warm.stop()
    assert outputs["predict"].tolist() == logistic.predict(X[:3]).tolist()
    assert any(name.startswith("sklearn") for name in modules)
