"""Build the image that serves a bundle, as data: the base, then three layers in cache-friendly order.

1. the Python dependencies: wheels only, resolved by pip for the image's platform and Python version
   from the bundle's lock plus the serving runtime's own requirements (pinned to the versions here),
   installed with ``installer`` so that scripts point at the image's interpreter;
2. the notebook-deploy runtime: this package's own source files;
3. the bundle.

A change to the model changes only the last layer, so a re-push uploads only that. All three layers are
reproducible (see ``layers``), so the same bundle on the same base gives the same image digest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from ..bundle import Bundle, canonical_json
from ..errors import NotebookDeployError
from ..provenance import signer_keys
from ..signing import TRUST_DIR_VARIABLE
from .assemble import BaseImage, Image, ImageSpec, assemble, config_env
from .cache import LayerCache, layer_key
from .layers import Entry, Layer, build_layer, entries_from_directory

SITE = "/opt/notebook-deploy/site-packages"
SCRIPTS = "/opt/notebook-deploy/bin"
BUNDLE_DIR = "/opt/bundle"
TRUST_DIR = "/opt/notebook-deploy/trusted-keys"  # the image's trust store: the keys that signed its bundle
PORT = 8000
# What an image leaves out of what wheels ship, because the server never imports or runs it (documented
# in docs/guide.md, "What an image leaves out"): test suites, compiled caches (Python writes them again
# at first import), and what only a compiler or a type checker reads (C headers, Cython declarations,
# type stubs).
LEFT_OUT_FOLDERS = frozenset({"tests", "__pycache__"})
LEFT_OUT_SUFFIXES = (".pyc", ".pyi", ".h", ".hpp", ".pxd")
# ...and of this package: the Jupyter adapters and the built JupyterLab extension (the image only serves).
RUNTIME_LEFT_OUT = frozenset({"jupyter", "labextension"})
PACKAGES_FILE = "packages.json"  # in the build's scratch folder: the dependency layer's distributions
INTERPRETER = "/usr/bin/env python3"
USER = "65532"  # nobody-like: the server needs no privileges
# What `python -m notebook_deploy serve` imports, pinned below to the versions installed here.
RUNTIME_REQUIREMENTS = (
    "fastapi",
    "uvicorn",
    "httptools",
    "uvloop",
    "orjson",
    "numpy",
    "cloudpickle",
    "click",
    "packaging",
    "requests",
    "prometheus-client",
    "grpcio",
    "protobuf",
    "cryptography",  # cryptography: the bundle signature check
)
_PLATFORM_TAGS = {
    "linux/amd64": [
        "manylinux_2_28_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "manylinux1_x86_64",
        "linux_x86_64",
    ],
    "linux/arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64", "linux_aarch64"],
}
CUDA_VARIABLE = "CUDA_VERSION"
CPU_LABEL = "+cpu"  # the local version label of PyTorch's CPU builds
_HEALTHCHECK = [
    "python3",
    "-c",
    "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'))",
]


def image_spec(
    bundle: Bundle, work: Path, platform: str = "linux/amd64", cache: LayerCache | None = None, cuda: bool = False
) -> ImageSpec:
    """The three layers and the settings of the image that serves ``bundle`` (for a CUDA base with
    ``cuda``). With ``cache``, the dependency and runtime layers are taken from it when their facts are
    unchanged, and kept there when built; the packages of the dependency layer are written to ``work``
    for the SBOM either way."""
    python = python_minor(bundle)
    # The keys that signed the bundle, checked against the builder's trust store, become the image's:
    # so the image serves this bundle, and refuses another one mounted over it unless they signed it.
    trusted = signer_keys(bundle, action="build an image of")
    # The bundle layer is gzip'd in a thread (zlib lets go of the GIL) while the other two layers' keys
    # are worked out and looked up: on a re-push after a model-only change, those two steps are most of
    # what is not the bundle layer itself.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-layer") as gzipping:
        bundle_layer = gzipping.submit(
            build_layer,
            [Entry(f"{BUNDLE_DIR}/{f.name}", f) for f in sorted(bundle.path.iterdir())]
            + [Entry(f"{TRUST_DIR}/{key_id}.pem", pem) for key_id, pem in trusted.items()],
            work / "bundle.tar.gz",
        )
        deps = _dependency_layer(bundle, platform, work, cache, cuda)
        (work / PACKAGES_FILE).write_bytes(canonical_json(deps.packages))
        runtime = _runtime_layer(work, cache)
        payload = bundle_layer.result()
    spec = image_settings(bundle)
    spec.layers = [deps.layer, runtime.layer, payload]
    spec.history = [f"python {python} dependencies for {platform}", "notebook-deploy runtime", f"bundle {bundle.ref}"]
    return spec


@dataclass(frozen=True)
class _Built:
    layer: Layer
    packages: list[tuple[str, str]]


def dependency_facts(bundle: Bundle, platform: str, cuda: bool = False) -> dict[str, Any]:
    """What determines the dependency layer: the requirement set (the lock and the runtime's pins), the
    platform, the Python version and what is left out; a cached layer with the same facts is the same."""
    return {
        "kind": "dependencies",
        "requirements": dependency_requirements(bundle, platform, cuda),
        "python": python_minor(bundle),
        "platform": platform,
        "left_out": [sorted(LEFT_OUT_FOLDERS), list(LEFT_OUT_SUFFIXES)],
    }


def _dependency_layer(bundle: Bundle, platform: str, work: Path, cache: LayerCache | None, cuda: bool) -> _Built:
    """The dependency layer, from ``cache`` when one with the same facts was built before."""
    facts = dependency_facts(bundle, platform, cuda)
    key = layer_key(facts)
    kept = cache.get(key) if cache is not None else None
    if kept is not None:
        return _Built(kept.layer, kept.packages)
    staging = work / "dependencies"
    install_dependencies(bundle, platform, work / "wheels", staging, cuda)
    entries = entries_from_directory(staging / "site", SITE) + entries_from_directory(staging / "bin", SCRIPTS)
    layer = build_layer([e for e in entries if not left_out(e.path)], work / "dependencies.tar.gz")
    packages = [(d.metadata["Name"], d.version) for d in metadata.distributions(path=[str(staging / "site")])]
    if cache is None:
        return _Built(layer, packages)
    return _Built(cache.put(key, layer, packages, facts).layer, packages)


def _runtime_layer(work: Path, cache: LayerCache | None) -> _Built:
    """The runtime layer: determined by this package's files (their paths, modes and bytes)."""
    entries = runtime_entries()
    contents = hashlib.sha256()
    for entry in entries:
        data = entry.content if isinstance(entry.content, bytes) else entry.content.read_bytes()
        contents.update(f"{entry.path}\0{entry.mode}\0{len(data)}\0".encode() + data)
    facts = {"kind": "runtime", "files": contents.hexdigest()}
    key = layer_key(facts)
    kept = cache.get(key) if cache is not None else None
    if kept is not None:
        return _Built(kept.layer, [])
    layer = build_layer(entries, work / "runtime.tar.gz")
    return _Built(cache.put(key, layer, [], facts).layer if cache is not None else layer, [])


def dependency_packages(work: Path) -> list[tuple[str, str]]:
    """The (name, version) of each distribution in the dependency layer ``image_spec`` made in ``work``:
    read from the layer as built (or as cached), not from this machine, whose platform may differ."""
    return [(name, version) for name, version in json.loads((work / PACKAGES_FILE).read_bytes())]


def image_settings(bundle: Bundle) -> ImageSpec:
    """What the image runs and says about itself, without layers (shared with the generated Dockerfile)."""
    return ImageSpec(
        layers=[],
        history=[],
        entrypoint=["python3", "-m", "notebook_deploy", "serve", BUNDLE_DIR, "--host", "0.0.0.0"],
        env={"PYTHONPATH": SITE, "PORT": str(PORT), "PYTHONUNBUFFERED": "1", TRUST_DIR_VARIABLE: TRUST_DIR},
        labels=labels(bundle),
        user=USER,
        working_dir=BUNDLE_DIR,
        exposed_ports=[PORT],
        healthcheck=_HEALTHCHECK,
    )


def build(
    bundle: Bundle, base: BaseImage, work: Path, platform: str = "linux/amd64", cache: LayerCache | None = None
) -> Image:
    """The image (config, manifest, layers in ``work`` or ``cache``) that serves ``bundle`` on ``base``."""
    _check_python(bundle, base)
    return assemble(base, image_spec(bundle, work, platform, cache, cuda=is_cuda_base(base.config)))


def labels(bundle: Bundle) -> dict[str, str]:
    """OCI labels (and annotations) that say which bundle an image serves."""
    return {
        "org.opencontainers.image.title": bundle.name,
        "org.opencontainers.image.version": bundle.version,
        "org.opencontainers.image.description": f"{bundle.model_type} served by notebook-deploy",
        "io.notebook-deploy.bundle": bundle.ref,
        "io.notebook-deploy.digest": bundle.digest,
        "io.notebook-deploy.source": str(bundle.source.get("path") or ""),
    }


def runtime_requirements() -> list[str]:
    """The serving runtime's requirements, pinned to the versions installed here."""
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_REQUIREMENTS]


def runtime_entries() -> list[Entry]:
    """This package's source files, placed in the image's site-packages, without what the server never
    imports (``RUNTIME_LEFT_OUT``, ``left_out``)."""
    package = Path(__file__).resolve().parents[1]
    return [
        e
        for e in entries_from_directory(package, f"{SITE}/notebook_deploy")
        if not left_out(e.path) and Path(e.path).relative_to(f"{SITE}/notebook_deploy").parts[0] not in RUNTIME_LEFT_OUT
    ]


def left_out(path: str) -> bool:
    """Whether an image leaves the file ``path`` out: it sits in a folder of ``LEFT_OUT_FOLDERS`` or ends
    with one of ``LEFT_OUT_SUFFIXES`` (docs/guide.md lists both, with the reasons)."""
    parts = PurePosixPath(path).parts
    return bool(LEFT_OUT_FOLDERS.intersection(parts[:-1])) or path.endswith(LEFT_OUT_SUFFIXES)


def python_minor(bundle: Bundle) -> str:
    """``"3.11"`` for a bundle captured with Python 3.11.7."""
    return bundle.python_minor


def install_dependencies(bundle: Bundle, platform: str, wheels: Path, staging: Path, cuda: bool = False) -> None:
    """Download the wheels of the bundle's lock and the serving runtime for the image's platform and
    Python, and install them with ``installer`` into ``staging/site`` and ``staging/bin``."""
    requirements = dependency_requirements(bundle, platform, cuda)
    install_wheels(download_wheels(requirements, python_minor(bundle), platform, wheels), staging)


def dependency_requirements(bundle: Bundle, platform: str, cuda: bool = False) -> list[str]:
    """What the dependency layer installs: the bundle's lock and the serving runtime's pins, sorted; for a
    CUDA base (``cuda``), the CUDA builds of what the lock pins as CPU builds."""
    if platform not in _PLATFORM_TAGS:
        raise NotebookDeployError(f"cannot build for {platform}: known platforms are {', '.join(_PLATFORM_TAGS)}")
    lock = [cuda_build(line) for line in bundle.lock()] if cuda else bundle.lock()
    return sorted(set(runtime_requirements() + lock))


def is_cuda_base(config: dict[str, Any]) -> bool:
    """Whether an image config is a CUDA base: NVIDIA's CUDA images, and those built on them (PyTorch's,
    for one), set ``CUDA_VERSION``."""
    return bool(config_env(config).get(CUDA_VARIABLE))


def cuda_build(requirement: str) -> str:
    """``torch==2.13.0,!=2.13.0+cpu`` for ``torch==2.13.0+cpu``: the same version, any build but the CPU
    one (PyPI's Linux wheels of torch are its CUDA builds, with the CUDA libraries as ``nvidia-*`` wheels
    beside it; the CPU build sorts above them, so the pin must exclude it); other pins unchanged."""
    name, _, version = requirement.partition("==")
    if not version.endswith(CPU_LABEL):
        return requirement
    return f"{name}=={version.removesuffix(CPU_LABEL)},!={version}"


def download_wheels(requirements: list[str], python: str, platform: str, directory: Path) -> list[Path]:
    """The wheels (and only wheels) of ``requirements`` and their dependencies for the target, in a
    fresh ``directory`` (pip's own cache makes a repeat cheap)."""
    directory.mkdir(parents=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(sorted(set(requirements))) + "\n")
    abi = "cp" + python.replace(".", "")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--dest",
        str(directory),
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *[arg for tag in _PLATFORM_TAGS[platform] for arg in ("--platform", tag)],
        "-r",
        listing.name,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    Path(listing.name).unlink()
    if result.returncode != 0:
        raise NotebookDeployError(
            f"resolving wheels for Python {python} on {platform} failed (every requirement must have a wheel "
            f"for that platform):\n{result.stderr.strip()[-3000:]}"
        )
    return sorted(directory.glob("*.whl"))


def install_wheels(wheels: list[Path], staging: Path) -> None:
    """Install ``wheels`` into ``staging/site`` (and scripts into ``staging/bin``) for the image's
    interpreter, as pip would inside the image, without running anything of theirs."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    scheme = {
        "purelib": staging / "site",
        "platlib": staging / "site",
        "headers": staging / "include",
        "scripts": staging / "bin",
        "data": staging / "data",
    }
    destination = SchemeDictionaryDestination(
        {k: str(v) for k, v in scheme.items()}, interpreter=INTERPRETER, script_kind="posix"
    )
    for wheel in sorted(wheels, key=lambda w: w.name):
        with WheelFile.open(wheel) as source:
            install(source, destination, additional_metadata={"INSTALLER": b"notebook-deploy\n"})


def _check_python(bundle: Bundle, base: BaseImage) -> None:
    """Refuse a base whose Python minor differs from the bundle's, where the base says which it has."""
    wanted = bundle.python_minor
    found = config_env(base.config).get("PYTHON_VERSION")
    if found and not found.startswith(wanted + "."):
        raise NotebookDeployError(
            f"{base.reference} has Python {found}, but {bundle.ref} was captured with Python {wanted}: pickles do "
            f"not load across Python versions. Use a python:{wanted} base"
        )
