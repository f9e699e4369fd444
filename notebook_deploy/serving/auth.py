"""Who may call what: API keys with roles, checked on every route that is not open.

(Stub: access levels only; keys, 401/403 and the audit log come next.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServedModel

OPEN = "open"  # health probes and the API docs
PREDICT = "predict"  # inference, in every protocol
ADMIN = "admin"  # metadata, monitoring and metrics too


def dependencies(access: str, served: "ServedModel") -> list[Any]:
    """The FastAPI dependencies that guard a route of ``access``: none when keys are not required."""
    return []


def grpc_interceptors(served: "ServedModel") -> list[Any]:
    """The grpc.aio server interceptors that apply the same keys to gRPC calls (``authorization`` metadata)."""
    return []
