"""Every shell command in the docs' fenced ```bash (```sh, ```console) blocks is run, as written, in
document order per file, in a sandbox: a scratch HOME whose store holds the bundles the docs name.

What a command shows it prints is checked: a whole comment line after a command (in console blocks,
the lines after a ``$ `` command) is its expected output, compared as JSON or with whitespace
normalised; for curl, ``# 422 {...}`` also names the HTTP status (200 when none). ``CHECKS`` adds checks
of what some commands do. ``notebook-deploy serve`` runs in the background until ``/healthz`` answers
and is stopped at the end of its block. Placeholders of the docs become real values through the one
table ``SUBSTITUTIONS`` (and the sandbox's files and environment, ``Sandbox``); a command that cannot
run here is in ``NOT_RUN`` with the reason. Any other command fails the test until it runs or is listed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import requests
import yaml
from images import push_test_base
from registries import Registry as RealRegistry
from registries import free_port
from sklearn.base import clone
from test_auth import self_signed_certificate

import notebook_deploy as nd
from notebook_deploy.image.registry import Registry
from notebook_deploy.signing import SIGNING_KEY_VARIABLE, TRUST_DIR_VARIABLE, SigningKey

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
RUNNABLE = ("notebook-deploy ", "curl ")  # programs the sandbox has; anything else goes in NOT_RUN

# the docs' placeholders -> what the harness runs (regular expression, replacement, why); the
# replacement's {fields} are Sandbox.values
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"churn:3f2a\b", "churn:{old}", "the older of the store's two churn versions (its first 4 digits)"),
    (r"churn:9b1c\b", "churn:{new}", "the newer churn version, latest until rolled back"),
    (r"registry\.example\.com", "{registry}", "a docker-registry on loopback, no auth (tests/registries.py)"),
    (
        r"^(notebook-deploy push (?:(?!--base ).)*)$",
        r"\1 --base {base}",
        "the default base, python:3.X-slim, is on Docker Hub, out of reach: tests/images.py's base, pushed to "
        "that registry, is appended",
    ),
    (r"--port 8000\b", "--port {port}", "a free port (8000 may be taken, e.g. by Ray Serve's proxy)"),
    (r"localhost:8000\b", "localhost:{port}", "the same free port"),
    (r"--grpc-port 8001\b", "--grpc-port {grpc_port}", "a free port"),
    (r"-o /tmp$", "-o {tmp}", "a scratch folder rather than the machine's /tmp"),
]

# doc commands not run here, with the reason
NOT_RUN: dict[str, str] = {
    "bash scripts/test.sh": "CI itself: it runs this test, so running it here would recurse",
    "bash scripts/quickstart.sh": "its install step is the .venv CI has just made (scripts/test.sh); the rest, "
    "examples/quickstart.py, is run by tests/test_examples.py::"
    "test_quickstart_runs_the_notebook_serves_and_shows_a_prediction",
    "openssl pkeyutl -verify -pubin -inkey me.pem -rawin -in pae.bin -sigfile sig.bin": "its input files come from the Python block above it, which this harness does not run; "
    "tests/test_trust.py::test_the_bundle_signature_verifies_with_openssl_and_names_the_manifest_digest "
    "runs the same openssl command on the same files",
    "notebook-deploy verify-image registry.example.com/models/churn:1 --key signer.pub.pem": "needs an image pushed with a signing key and that key's public half; tests/test_image_trust.py runs "
    "verify-image on a signed, an unsigned and a re-tagged image",
    "cosign verify --key signer.pub.pem --insecure-ignore-tlog=true registry.example.com/models/churn:1": "cosign is not installable here (tests/test_image_trust.py checks the signature with openssl)",
    "cosign verify-attestation --key signer.pub.pem --insecure-ignore-tlog=true --type slsaprovenance1 "
    "registry.example.com/models/churn:1": "cosign is not installable here (tests/test_image_trust.py checks the DSSE signature with openssl)",
    "curl -s localhost:8000/predict -H 'content-type: application/octet-stream' --data-binary @cat.png": "needs an "
    "image model (torch and transformers, not in the docs' store) and image files; tests/test_rich_inputs.py::"
    "test_an_image_classifier_takes_png_and_jpeg_bytes_as_json_files_and_tensors sends the same bodies to a served "
    "image pipeline",
    "curl -s localhost:8000/predict -F file=@cat.png -F file=@dog.jpg": "as the octet-stream curl above it: "
    "tests/test_rich_inputs.py sends the same multipart body",
}


@dataclass
class Command:
    doc: str  # path relative to the repository
    line: int
    text: str  # continuation lines joined, trailing comment removed
    expected: list[str] = field(default_factory=list)


def doc_blocks(path: Path) -> list[list[Command]]:
    """The commands of each shell block of a Markdown file, with the expected output shown after them."""
    blocks: list[list[Command]] = []
    lines = path.read_text().splitlines()
    doc = str(path.relative_to(ROOT))
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            if fence in SHELLS:
                blocks.append([])
            continue
        if fence not in SHELLS or not line.strip():
            continue
        commands = blocks[-1]
        if fence == "console" and not line.startswith("$ "):
            if commands:
                commands[-1].expected.append(line.strip())
            continue
        if fence != "console" and line.startswith("#"):
            if commands:  # a comment line after a command shows its output
                commands[-1].expected.append(line[1:].strip())
            continue
        start, text = i, line.removeprefix("$ ").strip()
        while text.endswith("\\"):
            text = text[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        commands.append(Command(doc, start, re.sub(r"\s+#\s.*$", "", text)))
    return [block for block in blocks if block]


def all_commands() -> list[Command]:
    return [command for path in DOCS for block in doc_blocks(path) for command in block]


def problem(command: Command) -> str | None:
    """Why the harness cannot run this command, or None."""
    if command.text in NOT_RUN:
        return None
    where = f"{command.doc}:{command.line}: `{command.text}`"
    if re.search(r"\s\[-", command.text):
        return (
            f"{where} is a synopsis ([--option]), not a command: show a runnable command and name the "
            "options in the prose"
        )
    if not all(part.startswith(RUNNABLE) for part in re.split(r"\s*(?:\|\|?|&&|;)\s*", command.text)):
        return (
            f"{where}: tests/test_docs.py cannot run it; make it runnable in the sandbox or add it to "
            "NOT_RUN with the reason"
        )
    return None


# --- checks of what commands did, beyond the output the docs show --------------------------------------


def _yaml_kinds(out: str) -> list[str]:
    return [document["kind"] for document in yaml.safe_load_all(out)]


CHECKS: dict[str, Callable[[Sandbox, str], object]] = {
    "notebook-deploy keys create --role predict": lambda sb, out: re.fullmatch(r"ndk_[0-9a-f]{8}_\S+\n", out),
    "notebook-deploy list": lambda sb, out: out.split()[:6] == ["NAME", "VERSION", "TAGS", "CREATED", "MODEL", "SIZE"],
    "notebook-deploy show churn --lock": lambda sb, out: "scikit-learn==" in out and "pandas==" in out,
    "notebook-deploy tag churn:3f2a prod": lambda sb, out: sb.store().tags("churn")["prod"] == sb.versions["old"],
    "notebook-deploy tag churn:3f2a latest": lambda sb, out: sb.store().get("churn").version == sb.versions["old"],
    "notebook-deploy export churn -o /tmp": lambda sb, out: (
        Path(out.strip()) == sb.tmp / f"churn-{sb.versions['old']}.tar.gz" and Path(out.strip()).is_file()
    ),
    "notebook-deploy rm churn:9b1c": lambda sb, out: (
        [b.version for b in sb.store().list("churn")] == [sb.versions["old"]]
    ),
    "notebook-deploy deploy train.ipynb --model clf --name churn": lambda sb, out: (
        sb.store().get("churn").manifest["recipe"]["target"] == "clf"
    ),
    "notebook-deploy push churn registry.example.com/models/churn:1": lambda sb, out: (
        f"Pushed {sb.values['registry']}/models/churn:1@sha256:" in out
    ),
    "notebook-deploy k8s churn --image registry.example.com/models/churn:1": lambda sb, out: (
        _yaml_kinds(out) == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    ),
    "notebook-deploy k8s churn --image registry.example.com/models/churn:1 --kserve": lambda sb, out: (
        _yaml_kinds(out) == ["InferenceService"]
    ),
    "notebook-deploy k8s churn:9b1c --image registry.example.com/models/churn:1 --canary churn:3f2a=10 "
    "--version-image churn:3f2a=registry.example.com/models/churn:3f2a --sticky-header X-User": lambda sb, out: (
        [
            c["args"]
            for d in yaml.safe_load_all(out)
            if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]
        ]
        == [["--canary", f"/opt/versions/{sb.versions['old']}=10", "--sticky-header", "X-User"]]
    ),
    "notebook-deploy k8s churn --image registry.example.com/models/churn:1 -o k8s": lambda sb, out: (
        len(list((sb.work / "k8s").glob("churn-*.yaml"))) == 3
    ),
    'notebook-deploy ray forest --address "$RAY_ADDRESS" --name forest-cli --delete': lambda sb, out: (
        "Deleted the Ray Serve application forest-cli" in out
    ),
}


def test_every_doc_command_is_run_or_listed_with_a_reason():
    commands = all_commands()
    texts = {command.text for command in commands}
    assert any(text.startswith("notebook-deploy serve") for text in texts)  # the parser finds the blocks
    assert [p for p in map(problem, commands) if p] == []
    stale = [text for text in [*NOT_RUN, *CHECKS] if text not in texts]
    assert stale == [], "NOT_RUN and CHECKS name only commands that are still in the docs"
    test_examples = (ROOT / "tests" / "test_examples.py").read_text()
    assert "def test_quickstart_runs_the_notebook_serves_and_shows_a_prediction(" in test_examples


def test_a_new_command_or_a_synopsis_fails_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "doc.md").write_text(
        "```bash\nkubectl apply -f k8s\n# deployment created\n"
        "notebook-deploy verify churn [--fresh-env]\n"
        "notebook-deploy k8s churn --image host/churn:1 | \\\n  kubectl apply -f -\n"
        "```\n```python\nx = 1\n```\n```console\n$ notebook-deploy list\nNAME\n```\n"
    )
    [[kubectl, synopsis, pipe], [listing]] = doc_blocks(tmp_path / "doc.md")
    assert kubectl.expected == ["deployment created"] and listing.expected == ["NAME"]
    assert pipe.text == "notebook-deploy k8s churn --image host/churn:1 | kubectl apply -f -"
    assert "add it to NOT_RUN with the reason" in problem(kubectl) and "NOT_RUN" in problem(pipe)
    assert "is a synopsis" in problem(synopsis) and problem(listing) is None


# --- the sandbox ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_store(tmp_path_factory, pipeline, customers, forest, iris):
    """The bundles the docs name: churn (the README's pandas pipeline), in two versions, and forest."""
    frame, target = customers
    store = nd.Store(tmp_path_factory.mktemp("docs-store"))
    older = clone(pipeline).set_params(logisticregression__C=0.05).fit(frame, target)
    versions = {
        "old": nd.capture(older, name="churn", sample=frame.head(), store=store).version,
        "new": nd.capture(pipeline, name="churn", sample=frame.head(), store=store).version,
    }
    assert versions["old"][:4] != versions["new"][:4]
    nd.capture(forest, name="forest", sample=iris[0][:5], store=store)
    return store.root, versions


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry on loopback holding a base image: (host, base reference)."""
    workdir = tmp_path_factory.mktemp("docs-registry")
    with RealRegistry("none", workdir / "registry") as real:
        yield real.host, push_test_base(Registry(real.host, scheme="http", credentials=None), workdir)


def _write_train_notebook(path: Path) -> None:
    cells = [
        "from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression",
        "X, y = load_iris(return_X_y=True)",
        "clf = LogisticRegression(max_iter=1000).fit(X, y)",
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)


class Sandbox:
    """A scratch HOME (store in ~/.notebook_deploy, trusting the keys that signed its bundles), a working
    folder with the files the docs name (cert.pem and key.pem, self-signed for 127.0.0.1; train.ipynb,
    which fits `clf` on iris; alice.pem, a colleague's public signing key), and the
    environment: PORT (for `serve` without --port) a free port, RAY_ADDRESS conftest's local Ray
    instance (started for the first `notebook-deploy ray`) with its token, pip's cache the user's own."""

    def __init__(
        self,
        root: Path,
        template: Path,
        versions: dict[str, str],
        registry: tuple[str, str],
        request: pytest.FixtureRequest,
    ) -> None:
        self.home, self.work, self.tmp = root / "home", root / "work", root / "tmp"
        self.work.mkdir(parents=True)
        self.tmp.mkdir()
        shutil.copytree(template, self.home / ".notebook_deploy")
        self_signed_certificate(self.work)
        _write_train_notebook(self.work / "train.ipynb")
        # the user's trusted keys: those of the session that signed the template's bundles, in the default
        # place (the sandbox has no signing key of its own until a doc makes one), and a colleague's alice.pem
        shutil.copytree(os.environ[TRUST_DIR_VARIABLE], self.home / ".notebook_deploy" / "trusted-keys")
        (self.work / "alice.pem").write_bytes(SigningKey.create(root / "alice" / "key.pem").public_pem())
        self.versions = versions
        self.request = request
        self.values = {
            "old": versions["old"][:4],
            "new": versions["new"][:4],
            "registry": registry[0],
            "base": registry[1],
            "port": free_port(),
            "grpc_port": free_port(),
            "tmp": self.tmp,
        }
        pip_cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True)
        inherited = {k: v for k, v in os.environ.items() if k not in (SIGNING_KEY_VARIABLE, TRUST_DIR_VARIABLE)}
        self.env = {
            **inherited,
            "HOME": str(self.home),
            "NOTEBOOK_DEPLOY_HOME": str(self.home / ".notebook_deploy"),
            "PORT": str(self.values["port"]),
            "PIP_CACHE_DIR": pip_cache.stdout.strip(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        self.servers: list[tuple[Command, subprocess.Popen]] = []

    def store(self) -> nd.Store:
        return nd.Store(self.home / ".notebook_deploy")

    def substitute(self, text: str) -> str:
        for pattern, replacement, _ in SUBSTITUTIONS:
            text = re.sub(pattern, replacement.format(**self.values), text)
        return text

    def run(self, command: Command) -> None:
        text = self.substitute(command.text)
        if text.startswith("notebook-deploy ray") and "RAY_ADDRESS" not in self.env:
            self.env["RAY_ADDRESS"] = self.request.getfixturevalue("cluster")
            # the token auth ray.init turned on, with the token it wrote under the real HOME
            self.env.update(
                RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"),
                RAY_AUTH_TOKEN_PATH=str(Path.home() / ".ray" / "auth_token"),
            )
        if text.startswith("notebook-deploy serve"):
            return self.start(command, text)
        if text.startswith("curl "):
            text += " -sS --max-time 30 -w '\\n%{http_code}'"
        done = subprocess.run(
            ["bash", "-c", text], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=300
        )
        where = f"{command.doc}:{command.line}: `{command.text}` (run as `{text}`)"
        assert done.returncode == 0, (
            f"{where} exited with {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
        out = done.stdout
        if text.startswith("curl "):
            out, _, status = out.rpartition("\n")
            expected_status, expected = "200", " ".join(command.expected)
            if re.match(r"\d{3} ", expected):
                expected_status, expected = expected.split(" ", 1)
            assert status == expected_status, f"{where} answered {status} {out}"
            assert not expected or _same(out, expected), f"{where} printed\n{out}\nnot what the doc shows:\n{expected}"
        elif command.expected:
            assert _same(out, "\n".join(command.expected)), f"{where} printed\n{out}\nnot\n{command.expected}"
        check = CHECKS.get(command.text)
        assert check is None or check(self, out), f"{where}: the check in CHECKS failed; it printed\n{out}"

    def start(self, command: Command, text: str) -> None:
        """Start a server in the background and wait until /healthz answers."""
        log = open(self.tmp / f"server-{command.line}.log", "w+")
        process = subprocess.Popen(
            ["bash", "-c", f"exec {text}"], cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.servers.append((command, process))
        port = re.search(r"--port (\d+)", text)
        scheme = "https" if "--tls-cert" in text else "http"
        url = f"{scheme}://127.0.0.1:{port.group(1) if port else self.values['port']}/healthz"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(url, timeout=2, verify=str(self.work / "cert.pem")).json() == {"status": "ok"}:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        log.seek(0)
        pytest.fail(
            f"{command.doc}:{command.line}: `{command.text}` (run as `{text}`) did not answer {url}:\n"
            f"{log.read()[-3000:]}"
        )

    def stop_servers(self) -> None:
        for command, process in self.servers:
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=30)  # uvicorn ends by re-raising the signal
            assert status in (0, -signal.SIGTERM), (
                f"{command.doc}:{command.line}: `{command.text}` exited with {status}"
            )
        self.servers.clear()


def _same(printed: str, expected: str) -> bool:
    """As JSON when both parse, else with whitespace normalised."""
    try:
        return json.loads(printed) == json.loads(expected)
    except ValueError:
        return printed.split() == expected.split()


@pytest.mark.integration
@pytest.mark.parametrize("doc", [p.relative_to(ROOT).as_posix() for p in DOCS if doc_blocks(p)])
def test_the_doc_commands_run_as_shown(doc, template_store, registry, tmp_path, request):
    sandbox = Sandbox(tmp_path, *template_store, registry, request)
    ran, not_run = [], []
    try:
        for block in doc_blocks(ROOT / doc):
            for command in block:
                if command.text in NOT_RUN:
                    not_run.append(command)
                    continue
                assert problem(command) is None, problem(command)
                sandbox.run(command)
                ran.append(command)
            sandbox.stop_servers()
    finally:
        for _, process in sandbox.servers:
            process.kill()
    assert sorted(ran + not_run, key=lambda c: c.line) == [c for block in doc_blocks(ROOT / doc) for c in block]
