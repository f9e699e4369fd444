"""Registry credentials, found where docker and podman keep them; never stored in a bundle or image.

Order, as the docker CLI does it: ``credHelpers[registry]``, then ``credsStore``, then the inline
``auths`` entry of ``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json``), then podman's
``auth.json``; last, the ``REGISTRY_USERNAME`` / ``REGISTRY_PASSWORD`` environment variables, which is
how JupyterHub and CI usually pass them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotebookDeployError


@dataclass(frozen=True)
class Credentials:
    """A username and password (or identity token, when ``username`` is ``<token>``)."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(username={self.username!r}, password='***')"


def find_credentials(registry: str) -> Credentials | None:
    """The credentials for ``registry`` (``host[:port]``), or None for anonymous access."""
    for path in _config_files():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        helper = config.get("credHelpers", {}).get(registry) or config.get("credsStore")
        if helper:
            found = _from_helper(helper, registry)
            if found:
                return found
        for key in (
            registry,
            f"https://{registry}",
            f"http://{registry}",
            *(["https://index.docker.io/v1/"] if registry == "registry-1.docker.io" else []),
        ):
            entry = config.get("auths", {}).get(key)
            if entry:
                return _from_entry(entry, path)
    username, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
    if username and password:
        return Credentials(username, password)
    return None


def _config_files() -> list[Path]:
    docker = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    podman = [Path(p) for p in (os.environ.get("REGISTRY_AUTH_FILE"),) if p]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        podman.append(Path(runtime, "containers", "auth.json"))
    podman.append(Path.home() / ".config" / "containers" / "auth.json")
    return [docker, *podman]


def _from_entry(entry: dict, path: Path) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials("<token>", entry["identitytoken"])
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise NotebookDeployError(f"{path}: an 'auth' entry is not base64 of user:password") from None
        return Credentials(username, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"])
    return None


def _from_helper(helper: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<helper>`` (the docker credential helper protocol)."""
    try:
        result = subprocess.run(
            [f"docker-credential-{helper}", "get"], input=registry, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    answer = json.loads(result.stdout)
    return Credentials(answer.get("Username", ""), answer.get("Secret", ""))
