"""The warm probe server: a fresh interpreter for the package probe, started ahead of the capture that
needs it, with the libraries of the previous probe imported already.

The probe (``probe.py``) must run in a fresh interpreter: what loads there, and only that, is what the
model needs. Starting that interpreter and importing scikit-learn, NumPy and SciPy is most of a capture,
and is the same every time. So one long-lived child Python (started with this process's ``sys.path``
and environment, like the cold probe) installs the job's blocker, imports the modules the previous probe
found, and then forks once per job: the forked child runs ``probe.run_job`` and exits, so each job still
starts from the same untouched interpreter, and the server itself never runs a model (forking is safe
because it only ever imported). Linux only: macOS has ``os.fork``, but forking after system frameworks
loaded (Accelerate under NumPy, for one) is not safe there; elsewhere every probe is cold.

Exactness. The preloaded modules are in ``sys.modules`` before the job starts, so the job reports them
as loaded whether or not it needed them: a lock can only come out larger, never miss anything. To keep
it exact in practice, a server preloaded for one probe serves only probes with the same key: the same
environment fingerprint, the same blocked list (what was importable when the preload ran decides how
libraries set themselves up), the same modules referenced by the pickle and the input, and the same
methods. The same references mean unpickling imports the same modules; only a method that imports
something lazily, depending on the data, could differ. A server with nothing preloaded (started by
``%load_ext``) serves any probe of its environment exactly.

Fail safe. Whatever goes wrong with the server (dead, busy with another thread's capture, keyed for
another probe, an answer that is not one) ``run`` returns None and the caller runs the cold probe.
Only the model's own failure (non-zero exit, timeout) is an answer, reported like the cold probe's.
``NOTEBOOK_DEPLOY_COLD_PROBE=1`` turns the server off (tests and the benchmark compare both paths).

The module itself imports only the standard library and ``probe.py`` (which imports nothing else before
a job), since the server process runs it: ``python -m notebook_deploy.capturing.warm CONFIG_JSON_FILE``.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .probe import block, run_job

SERVER = "notebook_deploy.capturing.warm"
COLD_ENV = "NOTEBOOK_DEPLOY_COLD_PROBE"
# How long a probe waits for a server still importing its preload before it runs cold instead. The
# preload takes about as long as the cold probe that chose it; an import that hangs only here (modules
# are imported in another order) must not hold captures up for the whole probe timeout.
READY_PATIENCE = 60.0
# Entries of a sys.path folder that can change what imports find; other files (data, plots) do not.
_IMPORTABLE = (".py", ".pyc", ".so", ".pyd", ".pth", ".egg-link", ".zip", ".egg")


@dataclass(frozen=True)
class Key:
    """What a preloaded server is valid for (see the module docstring)."""

    fingerprint: str
    blocked: tuple[str, ...]
    referenced: tuple[str, ...]
    methods: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    """How one probe run ended, warm or cold: the exit code, its stderr, and whether it timed out."""

    returncode: int
    stderr: str
    timed_out: bool = False


def enabled() -> bool:
    """Whether probes may run warm: on Linux, unless ``$NOTEBOOK_DEPLOY_COLD_PROBE`` is set."""
    return sys.platform.startswith("linux") and not os.environ.get(COLD_ENV)


def probe_paths() -> list[str]:
    """This process's ``sys.path`` as the probe's ``PYTHONPATH`` ('' is the working folder)."""
    return [p or os.getcwd() for p in sys.path]


def probe_env() -> dict[str, str]:
    """The environment of a probe process, cold or warm: this one's, with its ``sys.path``."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(probe_paths()))


_listings: dict[str, tuple[int, str]] = {}  # folder → (mtime_ns, digest of its importable entries)


def fingerprint() -> str:
    """A digest of what decides what a fresh probe would import: the interpreter, the working folder,
    the environment variables, ``sys.path``, and the importable entries of each of its folders.

    Installing or removing a package adds or removes entries (its folders, its dist-info named with the
    version, made anew by a reinstall) in site-packages, so the fingerprint changes. Folders are listed again only when their
    mtime changed, and only importable entries count, so a notebook writing a CSV or a plot into its
    working folder (on ``sys.path`` as '') keeps its warm server. A module edited in place is caught by
    the server's check of its preloaded files' mtimes instead."""
    digest = hashlib.sha256()
    for part in (sys.executable, os.getcwd(), repr(sorted(os.environ.items()))):
        digest.update(part.encode(errors="surrogateescape") + b"\0")
    for path in probe_paths():
        digest.update(path.encode(errors="surrogateescape") + b"\0" + _listing(path).encode() + b"\0")
    return digest.hexdigest()


def _listing(path: str) -> str:
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return "missing"
    cached = _listings.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        with os.scandir(path) as entries:
            names = sorted(_entry(e) for e in entries if e.is_dir() or e.name.endswith(_IMPORTABLE))
        listed = hashlib.sha256("\0".join(names).encode(errors="surrogateescape")).hexdigest()
    except NotADirectoryError:  # a zip file on sys.path
        listed = f"file {mtime}"
    except OSError:
        listed = "unreadable"
    _listings[path] = (mtime, listed)
    return listed


def _entry(entry: os.DirEntry[str]) -> str:
    """An entry as the fingerprint sees it: its name, and for a distribution's metadata folder also its
    mtime, since reinstalling the same version (from elsewhere) makes the folder again under that name."""
    if entry.name.endswith((".dist-info", ".egg-info")):
        return f"{entry.name} {entry.stat().st_mtime_ns}"
    return entry.name


class WarmServer:
    """One server process, keyed by ``key``, with ``preload`` imported; ``jobs`` counts the probes it
    answered (observable by tests and the benchmark, as is ``pid``)."""

    def __init__(self, key: Key, preload: list[str]) -> None:
        self.key = key
        self.preload = sorted(preload)
        self.jobs = 0
        self._owner = os.getpid()  # a forked copy of this process must not stop its parent's server
        self._busy = threading.Lock()
        self._files: dict[str, int] | None = None  # preloaded file → mtime_ns, once the server is ready
        self._buffer = b""
        # The configuration goes through a file: a long preload list written to the pipe could block
        # this process until the server reads it, and starting must not wait.
        with tempfile.NamedTemporaryFile("w", prefix="notebook-deploy-warm-", suffix=".json", delete=False) as f:
            json.dump({"blocked": list(key.blocked), "preload": self.preload}, f)
        self._config = f.name
        self.process = subprocess.Popen(
            [sys.executable, "-m", SERVER, self._config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=probe_env(),
            start_new_session=True,  # a Ctrl-C in a terminal is the kernel's, not the server's
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def serves(self, key: Key) -> bool:
        """Whether a probe with ``key`` may run here: same environment, and the same key unless nothing
        is preloaded."""
        return self.alive() and key.fingerprint == self.key.fingerprint and (not self.preload or key == self.key)

    def run(
        self, key: Key, model_file: Path, input_file: Path, methods: list[str], report_dir: str, timeout: float
    ) -> Finished | None:
        """Run one probe job, with ``key``'s modules blocked, here; None when the server cannot take it
        (the caller probes cold)."""
        if not self._busy.acquire(blocking=False):
            return None
        try:
            if self._files is None:
                ready = self._read(min(timeout, READY_PATIENCE))  # a capture right after the start waits
                if not isinstance(ready, dict) or not isinstance(ready.get("files"), dict):
                    self.stop()
                    return None
                self._files = ready["files"]
            if not self._unchanged():
                self.stop()
                return None
            job = {
                "model": str(model_file),
                "input": str(input_file),
                "methods": methods,
                "blocked": list(key.blocked),
                "report": report_dir,
                "timeout": timeout,
            }
            assert self.process.stdin is not None
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
            answer = self._read(timeout + 30)
            if not isinstance(answer, dict) or answer.get("refused"):
                if not isinstance(answer, dict):
                    self.stop()
                return None
            returncode, timed_out = answer.get("exit"), answer.get("timed_out")
            if not isinstance(returncode, int) or not isinstance(timed_out, bool):
                self.stop()
                return None
            self.jobs += 1
            stderr = Path(report_dir, "stderr.txt")
            return Finished(returncode, stderr.read_text(errors="replace") if stderr.exists() else "", timed_out)
        except (OSError, ValueError):
            self.stop()
            return None
        finally:
            self._busy.release()

    def _unchanged(self) -> bool:
        """Whether every preloaded file is as it was imported (a module edited since would be stale)."""
        try:
            return all(os.stat(path).st_mtime_ns == mtime for path, mtime in (self._files or {}).items())
        except OSError:
            return False

    def _read(self, timeout: float) -> Any:
        """One JSON line from the server, or None at EOF, on timeout, or for garbage."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return None

    def stop(self) -> None:
        """Kill the server and any job it runs (its own process group), and reap it: no zombie stays."""
        if os.getpid() != self._owner:
            return
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        Path(self._config).unlink(missing_ok=True)


_registry_lock = threading.Lock()
_server: WarmServer | None = None  # at most one per process


def current() -> WarmServer | None:
    """The warm server of this process, if any (for tests and the benchmark)."""
    return _server


def run(
    key: Key, model_file: Path, input_file: Path, methods: list[str], report_dir: str, timeout: float
) -> Finished | None:
    """The probe run on the warm server when one serves ``key`` (whose ``blocked`` it hides); None
    means: probe cold."""
    server = _server
    if not enabled() or server is None or not server.serves(key):
        return None
    return server.run(key, model_file, input_file, methods, report_dir, timeout)


def keep_warm(key: Key, modules: list[str]) -> None:
    """After a probe with ``key`` found ``modules``: unless the server already serves exactly that key,
    replace it, in the background, by one with those modules preloaded."""
    global _server
    if not enabled():
        return
    with _registry_lock:
        if _server is not None and _server.alive() and _server.key == key:
            return
        old, _server = _server, WarmServer(key, modules)
    if old is not None:
        old.stop()


def start() -> None:
    """Start a server with nothing preloaded, if there is none (``%load_ext``): the first capture then
    skips the interpreter's start, and its probe preloads the next server."""
    global _server
    if not enabled():
        return
    with _registry_lock:
        if _server is None or not _server.alive():
            _server = WarmServer(Key(fingerprint(), (), (), ()), [])


@atexit.register
def stop() -> None:
    """Stop this process's server (at exit; tests too)."""
    global _server
    with _registry_lock:
        old, _server = _server, None
    if old is not None:
        old.stop()


# The server process.


def _serve(config_file: str) -> None:
    """Install the blocker, import the preload, answer ready, then fork one child per job line until
    stdin closes (the capturing process exited)."""
    config = json.loads(Path(config_file).read_text())
    Path(config_file).unlink(missing_ok=True)
    answers = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 1)  # what an import prints must not reach the answers
    block(config["blocked"])
    before = set(sys.modules)
    for name in config["preload"]:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - a module that does not import is simply not preloaded
            continue
    preloaded = {n: getattr(sys.modules[n], "__file__", None) for n in set(sys.modules) - before if n in sys.modules}
    files = {}
    for file in preloaded.values():
        try:
            files[file] = os.stat(file).st_mtime_ns if file else None
        except OSError:
            continue
    _answer(answers, {"files": {f: m for f, m in files.items() if f and m is not None}})
    tops = {name.partition(".")[0] for name in preloaded}
    for line in sys.stdin:
        job = json.loads(line)
        if tops & set(job["blocked"]):  # a preloaded module would escape the job's blocker
            _answer(answers, {"refused": "a preloaded module is blocked"})
            continue
        _answer(answers, _fork_job(job, preloaded, answers))


def _fork_job(job: Mapping[str, Any], preloaded: dict[str, str | None], answers: Any) -> dict[str, Any]:
    """Run ``job`` in a forked child, killed after its timeout; its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            answers.close()
            report = job["report"]
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(f"{report}/stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            os.dup2(os.open(f"{report}/stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            block(job["blocked"])
            run_job(job["model"], job["input"], job["methods"], report, preloaded)
            code = 0
        except BaseException:  # noqa: BLE001 - reported as the cold probe's uncaught exception is
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + float(job["timeout"])
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"exit": os.waitstatus_to_exitcode(status), "timed_out": False}
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"exit": -signal.SIGKILL, "timed_out": True}
        time.sleep(0.002)


def _answer(answers: Any, message: dict[str, Any]) -> None:
    answers.write(json.dumps(message) + "\n")
    answers.flush()


if __name__ == "__main__":
    _serve(sys.argv[1])
