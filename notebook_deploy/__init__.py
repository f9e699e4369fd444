"""notebook-deploy: take a model from a Jupyter notebook to a versioned bundle, a REST endpoint and an image.

    import notebook_deploy as nd
    bundle = nd.capture(model, sample=X_test[:5])   # a versioned bundle in the local store
    server = nd.serve(bundle)                        # a REST API on localhost, in a child process
    server.predict(X_test[:3])
    nd.panel()                                       # the same from buttons, in a notebook

Names are imported on first use, so ``import notebook_deploy`` stays fast and light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

_EXPORTS = {
    "capture": ".capturing.live",
    "Bundle": ".bundle",
    "Store": ".store",
    "load": ".api",
    "serve": ".serving.process",
    "Server": ".serving.process",
    "create_app": ".serving.app",
    "ServeSettings": ".serving.settings",
    "slice_cells": ".capturing.slicing",
    "verify": ".verification",
    "Verification": ".verification",
    "deploy_notebook": ".jupyter.headless",
    "panel": ".jupyter.panel",
    "push": ".image.publish",
    "export_image": ".image.publish",
    "build_image": ".image.publish",
    "PushResult": ".image.publish",
    "kubernetes_manifests": ".kubernetes",
    "NotebookDeployError": ".errors",
    "BundleIntegrityError": ".errors",
    "BundleReferenceError": ".errors",
    "CaptureError": ".errors",
    "InputError": ".errors",
    "ServeError": ".errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .api import load
    from .bundle import Bundle
    from .capturing.live import capture
    from .capturing.slicing import slice_cells
    from .errors import (
        BundleIntegrityError,
        BundleReferenceError,
        CaptureError,
        InputError,
        NotebookDeployError,
        ServeError,
    )
    from .image.publish import PushResult, build_image, export_image, push
    from .jupyter.headless import deploy_notebook
    from .jupyter.panel import panel
    from .kubernetes import kubernetes_manifests
    from .serving.app import create_app
    from .serving.process import Server, serve
    from .serving.settings import ServeSettings
    from .store import Store
    from .verification import Verification, verify


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'notebook_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext notebook_deploy``: record the session's executions and add the ``%deploy`` magic."""
    from .jupyter.extension import load_ipython_extension as load

    load(shell)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (the "Deployments" sidebar) shipped in this package."""
    return [{"src": "labextension", "dest": "notebook-deploy"}]
