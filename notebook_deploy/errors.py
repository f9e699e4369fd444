"""The exceptions notebook-deploy raises, all of them here, each under ``NotebookDeployError``. Each
message says what went wrong and what to do next.

Each class also carries the HTTP ``status`` that answers it, so the serving app, the Jupyter server
extension and the gRPC service (which maps statuses to its codes) read one table: the classes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class NotebookDeployError(Exception):
    """Base class of every error raised on purpose by notebook-deploy."""

    status: int = 500  # the HTTP status of an answer to this error, wherever it is answered
    headers: Mapping[str, str] = MappingProxyType({})  # headers that go with that answer


# -- bundles and the store ---------------------------------------------------------------------------


class BundleIntegrityError(NotebookDeployError):
    """A bundle on disk does not match its manifest (tampered, truncated or incomplete)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class UnsafePickleError(BundleIntegrityError):
    """A bundle's pickle would import or call something dangerous while loading; it was not loaded."""


class BundleReferenceError(NotebookDeployError):
    """A bundle reference is malformed or names nothing in the store."""

    status = 400


class BundleNotFoundError(BundleReferenceError):
    """A well-formed reference names no bundle, version or tag in the store."""

    status = 404


class BundleInUseError(NotebookDeployError):
    """A version cannot be deleted because a running local server serves it."""

    status = 409


class CaptureError(NotebookDeployError):
    """A model could not be captured into a bundle."""


# -- trust -------------------------------------------------------------------------------------------


class SigningError(NotebookDeployError):
    """A signing key or trusted key that cannot be created, read or used as asked."""


class UntrustedBundleError(NotebookDeployError):
    """A bundle that no trusted key signed (unsigned, signed by an unknown key, or a signature that
    does not name this bundle). The message names the signer and how to trust it."""


class KeyStoreError(NotebookDeployError):
    """A key operation that cannot be done as asked (an unknown role or id, an unreadable key file)."""


# -- serving -----------------------------------------------------------------------------------------


class ServeError(NotebookDeployError):
    """A local server could not be started or stopped."""


class ServerStoppedError(ServeError):
    """A request was sent to a local server that has stopped."""

    status = 409


class SettingError(ServeError, ValueError):
    """A server option with a value it cannot take. ``option`` is its name in ``ServeSettings``."""

    status = 400

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


class RequestError(NotebookDeployError):
    """A request that cannot be served as sent: answered with ``status`` and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class InputError(NotebookDeployError):
    """Request data does not fit a bundle's input schema. The message names the row and feature."""

    status = 422


class Overloaded(NotebookDeployError):
    """More requests wait than the queue holds: answer 503 and ask the client to retry."""

    status = 503
    retry_after = 1
    headers = MappingProxyType({"Retry-After": str(retry_after)})


class ModelError(NotebookDeployError):
    """The model raised while computing a prediction; the message names the method and the error."""


# -- images, registries, Kubernetes -----------------------------------------------------------------


class ImageReferenceError(NotebookDeployError):
    """An image reference that cannot be parsed."""

    status = 400


class RegistryError(NotebookDeployError):
    """The registry refused a request, or could not be reached."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class RegistryAuthError(RegistryError):
    """The registry wants credentials it did not get, or refused the ones it got."""


class ImageAttachError(NotebookDeployError):
    """The image was pushed, but its SBOM, provenance or signature could not be attached."""


class ImageVerificationError(NotebookDeployError):
    """An image's signature, provenance or SBOM is missing, not trusted, or names another image."""


class KubernetesError(NotebookDeployError):
    """An option that cannot give valid manifests. ``option`` is its keyword in ``kubernetes_manifests``."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


# -- background work ---------------------------------------------------------------------------------


class Cancelled(NotebookDeployError):
    """The task was cancelled; raised inside its work at the next progress report."""
