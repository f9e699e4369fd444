"""The audit log: JSON lines, appended whole by concurrent processes, never a secret."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

import notebook_deploy as nd
from notebook_deploy import audit
from notebook_deploy.image import publish


def test_a_record_is_one_json_line_with_who_when_and_where(tmp_path):
    audit.record("push", root=tmp_path, reference="r/x:1", digest="sha256:ab", result="ok")
    path = tmp_path / "audit.log"
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "push" and entry["reference"] == "r/x:1" and entry["result"] == "ok"
    assert entry["pid"] == os.getpid() and entry["user"] and entry["host"] and entry["time"].endswith("+00:00")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    audit.record("push", root=tmp_path, reference="r/x:2")
    assert [e["reference"] for e in audit.read(root=tmp_path)] == ["r/x:1", "r/x:2"]  # appended


def test_where_the_log_goes(tmp_path, monkeypatch, store):
    audit.record("a")  # the default store ($NOTEBOOK_DEPLOY_HOME, set by conftest)
    assert audit.read(root=nd.Store().root)[0]["event"] == "a"
    audit.record("b", root=store)  # a Store
    assert audit.read(store.root / "audit.log")[0]["event"] == "b"
    monkeypatch.setenv("NOTEBOOK_DEPLOY_AUDIT_LOG", str(tmp_path / "env.log"))
    audit.record("c", root=store)
    audit.record("d", audit_log=tmp_path / "given.log")  # an explicit path wins over the environment
    assert [e["event"] for e in audit.read(tmp_path / "env.log")] == ["c"]
    assert [e["event"] for e in audit.read(tmp_path / "given.log")] == ["d"]


def test_keys_are_cut_to_their_id(tmp_path):
    key = "ndk_0123abcd_" + "s3cr3t-_" * 5 + "xyz"
    audit.record("auth_failure", root=tmp_path, path=f"/predict?key={key}")
    text = (tmp_path / "audit.log").read_text()
    assert "s3cr3t" not in text and "ndk_0123abcd_" in text


def test_an_unwritable_log_warns_once_and_does_not_raise(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    audit.record("x", audit_log=tmp_path / "file" / "audit.log")
    audit.record("x", audit_log=tmp_path / "file" / "audit.log")
    assert caplog.text.count("cannot write the audit log") == 1


def test_concurrent_processes_never_interleave_lines(tmp_path):
    path = tmp_path / "audit.log"
    script = (
        "import sys\nfrom notebook_deploy import audit\n"
        "for i in range(200):\n"
        f"    audit.record('stress', audit_log={str(path)!r}, writer=sys.argv[1], i=i, padding='x' * 5000)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    assert all(writer.wait(60) == 0 for writer in writers)
    entries = audit.read(path)  # every line parses
    assert len(entries) == 800
    for n in range(4):
        assert [e["i"] for e in entries if e["writer"] == str(n)] == list(range(200))


def test_a_capture_is_recorded(store, iris):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    bundle = nd.capture(LogisticRegression(max_iter=300).fit(X, y), name="audited", sample=X[:3], store=store)
    (entry,) = [e for e in audit.read(root=store) if e["event"] == "capture"]
    assert (entry["name"], entry["version"]) == ("audited", bundle.version)


def test_pushes_are_recorded_with_their_result(monkeypatch, store):
    def pushed(ref, image, *args):
        return publish.PushResult(image, "sha256:" + "1" * 64)

    monkeypatch.setattr(publish, "_push", pushed)
    publish.push("m", "registry.example/models/m:1", store=store)

    def failing(ref, image, *args):
        raise nd.NotebookDeployError("the registry refused: denied")

    monkeypatch.setattr(publish, "_push", failing)
    with pytest.raises(nd.NotebookDeployError):
        publish.push("m", "registry.example/models/m:2", store=store)
    ok, failed = audit.read(root=store)
    assert (ok["event"], ok["reference"], ok["digest"], ok["result"]) == (
        "push",
        "registry.example/models/m:1",
        "sha256:" + "1" * 64,
        "ok",
    )
    assert (failed["reference"], failed["result"]) == ("registry.example/models/m:2", "failed")
    assert "denied" in failed["error"]


def test_refusals_are_one_line_a_second_per_client_with_a_count(tmp_path):
    log = tmp_path / "audit.log"
    written = [
        audit.record_limited("auth_failure", "10.0.0.1", audit_log=log, status=401, path="/predict") for _ in range(50)
    ]
    audit.record_limited("auth_failure", "10.0.0.2", audit_log=log, status=401, path="/predict")  # another client
    audit.record_limited("auth_failure", "10.0.0.1", audit_log=log, status=403, path="/metadata")  # another status
    for port in (50001, 50002):  # gRPC peers: one client, a port per connection
        audit.record_limited("auth_failure", f"ipv4:10.0.0.3:{port}", audit_log=log, status=401, path="/infer")
    assert written.count(True) == 1
    time.sleep(audit.LIMIT_SECONDS + 0.05)
    audit.record_limited("auth_failure", "10.0.0.1", audit_log=log, status=401, path="/predict")
    entries = [(e["client"], e["status"], e["suppressed"]) for e in audit.read(log)]
    assert entries == [
        ("10.0.0.1", 401, 0),
        ("10.0.0.2", 401, 0),
        ("10.0.0.1", 403, 0),
        ("ipv4:10.0.0.3:50001", 401, 0),
        ("10.0.0.1", 401, 49),
    ]


def test_the_log_rotates_by_size_and_keeps_a_few_files(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "MAX_BYTES", 1000)
    log = tmp_path / "audit.log"
    for number in range(200):
        audit.record("tag", audit_log=log, number=number, padding="x" * 100)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit.log"))
    assert files == ["audit.log"] + [f"audit.log.{n}" for n in range(1, audit.KEEP + 1)]
    assert all(p.stat().st_size <= 1000 + 400 for p in tmp_path.glob("audit.log*"))
    numbers = [e["number"] for e in audit.read(log)]
    assert numbers == list(range(numbers[0], 200)) and numbers[0] > 0  # the oldest went, the rest in order
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.glob("audit.log*"))
