"""``containerize``: a Docker build context for people who build images elsewhere.

The context holds the dependencies already installed for the image's platform (as in the daemonless
build), the notebook-deploy runtime and the bundle, with a Dockerfile that copies them onto the base.
So ``docker build`` needs neither pip nor network, and gives the same files as ``push``; the
Dockerfile's settings come from the same ``image_settings`` as the daemonless image's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..api import load
from ..bundle import Bundle
from ..provenance import signer_keys
from ..store import Store
from .build import (
    BUNDLE_DIR,
    SCRIPTS,
    SITE,
    TRUST_DIR,
    image_settings,
    install_dependencies,
    left_out,
    python_minor,
    runtime_entries,
)


def containerize(
    ref: str | Bundle,
    output: str | os.PathLike[str],
    *,
    base: str | None = None,
    platform: str = "linux/amd64",
    store: Store | str | os.PathLike[str] | None = None,
) -> Path:
    """Write a build context for the image that serves ``ref`` into the new folder ``output``."""
    bundle = load(ref, store)
    trusted = signer_keys(bundle, action="build an image of")  # the image's trust store, as in build.image_spec
    output = Path(output)
    output.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-wheels-") as wheels:
        install_dependencies(bundle, platform, Path(wheels) / "wheels", output / "dependencies")
    installed = output / "dependencies"
    for path in [p for p in installed.rglob("*") if p.is_file() and left_out(p.relative_to(installed).as_posix())]:
        path.unlink()  # what the daemonless image leaves out, so that both give the same files
    for entry in runtime_entries():
        target = output / "runtime" / Path(entry.path).relative_to(SITE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.content, target)
    shutil.copytree(bundle.path, output / "bundle")
    (output / "trusted-keys").mkdir()
    for key_id, pem in trusted.items():
        (output / "trusted-keys" / f"{key_id}.pem").write_bytes(pem)
    (output / "Dockerfile").write_text(dockerfile(bundle, base or f"python:{python_minor(bundle)}-slim", platform))
    (output / ".dockerignore").write_text("Dockerfile\n")
    return output


def dockerfile(bundle: Bundle, base: str, platform: str) -> str:
    """The Dockerfile of the context: the same settings as the daemonless image."""
    spec = image_settings(bundle)
    lines = [
        f"# The image that serves {bundle.ref}, for {platform}; written by notebook-deploy containerize.",
        f"ARG BASE={base}",
        "FROM ${BASE}",
        f"COPY dependencies/site {SITE}",
        f"COPY dependencies/bin {SCRIPTS}",
        f"COPY runtime {SITE}",
        f"COPY bundle {BUNDLE_DIR}",
        f"COPY trusted-keys {TRUST_DIR}",
        "ENV " + " ".join(f"{k}={json.dumps(v)}" for k, v in spec.env.items()),
        "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in spec.labels.items()),
        f"WORKDIR {spec.working_dir}",
        *[f"EXPOSE {port}" for port in spec.exposed_ports],
        f"USER {spec.user}",
        f"HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD {json.dumps(spec.healthcheck)}",
        f"ENTRYPOINT {json.dumps(spec.entrypoint)}",
    ]
    return "\n".join(lines) + "\n"
