"""The JupyterLab extension's own tests, run from pytest so that CI covers them.

- Jest: the front end's unit tests (``labextension/``, ``jlpm test``), requests mocked.
- Galata: ``labextension/ui-tests`` drive a real JupyterLab (started by Playwright's ``webServer``
  on a free port, with the real server extension and kernels) in Debian's Chromium; the push goes to
  a real ``docker-registry`` on loopback. Screenshots of every step land in ``test-output/ui-tests``.

``jlpm`` comes with JupyterLab (jupyter-builder) in this environment; node and the npm registry are
needed for ``jlpm install``; ``scripts/install-test-deps.sh`` installs Chromium and the registry.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from images import push_test_base
from node import LABEXTENSION, jlpm, jlpm_install, venv_env
from registries import Registry, free_port

from notebook_deploy.image.registry import Registry as RegistryClient

ROOT = Path(__file__).resolve().parents[1]
UI_TESTS = LABEXTENSION / "ui-tests"
OUTPUT = ROOT / "test-output" / "ui-tests"
CHROMIUM = "/usr/bin/chromium"
PNG = b"\x89PNG\r\n\x1a\n"
SCREENSHOTS = [
    "01-sidebar-bundle.png",
    "02-endpoint-running.png",
    "03-test-answer.png",
    "04-push-refused.png",
    "05-push-progress.png",
    "06-push-succeeded.png",
    "07-tag-moved.png",
    "08-verify.png",
    "09-running-sidebar.png",
    "10-compare.png",
    "11-compare-measured.png",
    "12-monitor-live.png",
    "13-monitor-grown.png",
    "14-generated.png",
    "15-image-answer.png",
    "01-panel.png",
    "02-panel-captured.png",
    "03-panel-answered.png",
]

pytestmark = pytest.mark.integration


def _env(**extra: str) -> dict[str, str]:
    return venv_env(PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", **extra)


def test_jest_unit_tests():
    env = _env()
    jlpm_install(LABEXTENSION, env)
    result = jlpm(["test", "--ci"], LABEXTENSION, env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    counts = re.search(r"Tests:\s+(.*)", output)
    assert counts and "failed" not in counts.group(1) and re.search(r"\d+ passed", counts.group(1)), output[-4000:]


def test_galata_ui_tests(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: run `bash scripts/install-test-deps.sh` as root (apt-get install chromium)"
        )
    env = _env()
    jlpm_install(UI_TESTS, env)
    shutil.rmtree(OUTPUT, ignore_errors=True)
    with Registry("none", tmp_path / "registry") as registry:
        base = push_test_base(RegistryClient(registry.host, scheme="http", credentials=None), tmp_path)
        env = _env(
            CI="1",
            PLAYWRIGHT_CHROMIUM_EXECUTABLE=CHROMIUM,
            ND_UI_PORT=str(free_port()),
            ND_UI_REGISTRY=registry.host,
            ND_UI_BASE=base,
            ND_UI_TESTS=str(ROOT / "tests"),  # the foundation notebook's tiny models and picture
            NOTEBOOK_DEPLOY_HOME=str(tmp_path / "store"),
            JUPYTERLAB_GALATA_ROOT_DIR=str(tmp_path / "lab"),
            JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),  # no user config of this machine
        )
        (tmp_path / "lab").mkdir()
        result = jlpm(["playwright", "test", "--output", str(OUTPUT)], UI_TESTS, env, timeout=900)
    output = result.stdout + result.stderr
    print(output)  # shown by pytest when the test fails
    # Playwright's report, then the tail of JupyterLab's log (its lines start with [WebServer])
    report = "\n".join(line for line in output.splitlines() if not line.startswith("[WebServer]"))
    server_log = "\n".join(line for line in output.splitlines() if line.startswith("[WebServer]"))
    assert result.returncode == 0, (
        f"playwright test exited {result.returncode}:\n{report[-12000:]}\n"
        f"--- JupyterLab's log (tail) ---\n{server_log[-4000:]}"
    )
    assert re.search(r"\b[1-9]\d* passed\b", report), report[-4000:]
    shots = {path.name: path for path in OUTPUT.rglob("*.png")}
    for name in SCREENSHOTS:
        assert name in shots, f"no screenshot {name} under {OUTPUT}: {sorted(shots)}"
        data = shots[name].read_bytes()
        assert len(data) > 1000 and data.startswith(PNG), f"{shots[name]} is not a PNG"
