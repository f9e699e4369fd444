"""`notebook-deploy serve` started as users start it, in a process of its own, until it is ready."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Served:
    """The URL the server announced, and (once it stopped) what it wrote to standard error."""

    url: str
    stderr: str = field(default="")


@contextlib.contextmanager
def cli_server(store_root: Path, *arguments: str, timeout: float = 120) -> Iterator[Served]:
    """Run ``notebook-deploy --store STORE serve ARGUMENTS --port 0`` until its ready file appears; stop
    it (SIGTERM) on leaving, and keep its standard error."""
    with tempfile.TemporaryDirectory() as scratch:
        ready = Path(scratch) / "ready.json"
        command = [sys.executable, "-m", "notebook_deploy", "--store", str(store_root), "serve", *arguments]
        command += ["--port", "0", "--ready-file", str(ready)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        served = Served("")
        try:
            deadline = time.monotonic() + timeout
            while not ready.exists():
                assert process.poll() is None and time.monotonic() < deadline, process.stderr and process.stderr.read()
                time.sleep(0.05)
            served.url = json.loads(ready.read_text())["url"]
            yield served
        finally:
            process.terminate()
            served.stderr = process.communicate(timeout=30)[1]
