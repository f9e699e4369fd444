"""Test helper: a small base image (an index of linux/amd64 and linux/arm64) pushed to a real registry.
It has no Python in it: enough to build, push and inspect images, not to run them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from notebook_deploy.image.layers import Entry, build_layer
from notebook_deploy.image.registry import OCI_INDEX, OCI_MANIFEST, Blob, Registry


def _push_json(client: Registry, repository: str, document: dict) -> tuple[str, int]:
    data = json.dumps(document, sort_keys=True).encode()
    blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data)
    client.push_blob(repository, blob)
    return blob.digest, blob.size


def push_test_base(
    client: Registry,
    workdir: Path,
    repository: str = "base/python",
    tag: str = "3.11",
    overrides: dict[str, Any] | None = None,
) -> str:
    """Push the test base as ``repository:tag``; return ``host/repository:tag``. ``overrides`` replace keys
    of its image config (``{"history": None}`` writes a JSON null)."""
    children = []
    for arch in ("amd64", "arm64"):
        layer = build_layer([Entry("etc/base-release", f"base for {arch}\n".encode())], workdir / f"base-{arch}.tgz")
        client.push_blob(repository, Blob(layer.digest, layer.size, path=layer.path))
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["python3"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created_by": "base"}],
            **(overrides or {}),
        }
        config_digest, config_size = _push_json(client, repository, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": config_size,
                },
                "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
            }
        ).encode()
        digest = client.put_manifest(repository, f"{tag}-{arch}", manifest, OCI_MANIFEST)
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    client.put_manifest(repository, tag, index, OCI_INDEX)
    return f"{client.host}/{repository}:{tag}"
