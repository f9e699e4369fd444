"""The exceptions notebook-deploy raises. Each message says what went wrong and what to do next."""

from __future__ import annotations


class NotebookDeployError(Exception):
    """Base class of every error raised on purpose by notebook-deploy."""


class BundleIntegrityError(NotebookDeployError):
    """A bundle on disk does not match its manifest (tampered, truncated or incomplete)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class BundleReferenceError(NotebookDeployError):
    """A bundle reference is malformed or names nothing in the store."""


class BundleNotFoundError(BundleReferenceError):
    """A well-formed reference names no bundle, version or tag in the store."""


class CaptureError(NotebookDeployError):
    """A model could not be captured into a bundle."""


class InputError(NotebookDeployError):
    """Request data does not fit a bundle's input schema. The message names the row and feature."""


class ServeError(NotebookDeployError):
    """A local server could not be started or stopped."""


class ServerStoppedError(ServeError):
    """A request was sent to a local server that has stopped."""


class UnsafePickleError(BundleIntegrityError):
    """A bundle's pickle would import or call something dangerous while loading; it was not loaded."""


class BundleInUseError(NotebookDeployError):
    """A version cannot be deleted because a running local server serves it."""
