"""Write an assembled image to disk: an OCI layout directory, or one tar that both ``docker load``
and OCI tools read (the OCI layout plus Docker's legacy ``manifest.json``, as Docker 25's own
``docker save`` writes it)."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from .assemble import Image
from .registry import OCI_INDEX

Fetch = Callable[[str], bytes]  # digest -> bytes, for the base's layers (read from its registry)


def write_oci_layout(image: Image, directory: Path, name: str, fetch_base: Fetch) -> Path:
    """Write ``image`` as an OCI image layout in ``directory`` (created), tagged ``name``
    (``repository:tag``); base layers are read with ``fetch_base``."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for base_layer in image.base.layers:
        target = blobs / base_layer["digest"].split(":", 1)[1]
        if not target.exists():
            target.write_bytes(fetch_base(base_layer["digest"]))
    for layer in image.layers:
        shutil.copyfile(layer.path, blobs / layer.digest.split(":", 1)[1])
    (blobs / image.config_digest.split(":", 1)[1]).write_bytes(image.config)
    (blobs / image.digest.split(":", 1)[1]).write_bytes(image.manifest)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": name},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index, sort_keys=True))
    return directory


def write_image_tar(image: Image, path: Path, name: str, fetch_base: Fetch) -> Path:
    """Write ``image`` as one reproducible tar for ``docker load`` and for OCI tools (``oci-archive:``)."""
    with tempfile.TemporaryDirectory(prefix="notebook-deploy-image-") as scratch:
        layout = write_oci_layout(image, Path(scratch), name, fetch_base)
        layers = [d["digest"] for d in image.base.layers] + [layer.digest for layer in image.layers]
        docker_manifest = [
            {
                "Config": f"blobs/sha256/{image.config_digest.split(':', 1)[1]}",
                "RepoTags": [name],
                "Layers": [f"blobs/sha256/{d.split(':', 1)[1]}" for d in layers],
            }
        ]
        (layout / "manifest.json").write_text(json.dumps(docker_manifest))
        temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
        with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as tar:
            for file in sorted(p for p in layout.rglob("*")):
                info = tarfile.TarInfo(file.relative_to(layout).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if file.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = file.stat().st_size, 0o644
                    with open(file, "rb") as f:
                        tar.addfile(info, f)
        os.replace(temporary, path)
    return path
