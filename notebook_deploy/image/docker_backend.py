"""The Docker backend: where a Docker daemon answers, load the image built as data and push it with the
Docker SDK. The daemon pushes with its own transport; errors it reports inside the push stream, which
docker-py does not raise, are raised here."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import NotebookDeployError, RegistryError
from .credentials import find_credentials
from .reference import ImageReference

Progress = Callable[[str, int, int], None]


def docker_client() -> Any | None:
    """A Docker SDK client for the daemon that ``DOCKER_HOST`` (or the default socket) names, if one answers."""
    try:
        import docker
    except ImportError:
        return None
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - no daemon, no permission, a broken socket: all mean "not here"
        return None


def load_image(client: Any, image_tar: Path) -> None:
    """Load an image tar into the daemon, streamed from the file rather than read into memory."""
    with open(image_tar, "rb") as f:
        client.images.load(f)


def push_from_daemon(client: Any, target: ImageReference, progress: Progress | None = None) -> str:
    """Push the daemon's image ``target`` to its registry; return the manifest digest."""
    repository = f"{target.registry}/{target.repository}"
    credentials = find_credentials(target.registry)
    auth = {"username": credentials.username, "password": credentials.password} if credentials else None
    digest = None
    for event in client.api.push(repository, tag=target.tag or "latest", stream=True, decode=True, auth_config=auth):
        if "errorDetail" in event or "error" in event:
            message = (event.get("errorDetail") or {}).get("message") or event.get("error")
            raise RegistryError(f"the Docker daemon could not push {target}: {message}")
        detail = event.get("progressDetail") or {}
        if progress is not None and detail.get("total"):
            progress(event.get("id", ""), detail.get("current", 0), detail["total"])
        found = re.search(r"digest: (sha256:[0-9a-f]{64})", event.get("status", ""))
        if found:
            digest = found.group(1)
    if digest is None:
        raise NotebookDeployError(f"the Docker daemon's push of {target} ended without a digest")
    return digest
