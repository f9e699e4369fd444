"""Who may call what: API keys with roles, checked on every route that is not open.

Keys (``notebook_deploy.keys``) have the role ``predict`` (inference, in every protocol) or ``admin``
(inference, metadata, monitoring and metrics). Routes declare their access level: ``OPEN`` (health
probes, the API docs), ``PREDICT`` or ``ADMIN``. Callers send ``Authorization: Bearer <key>``; a
missing or unknown key is answered 401 (with ``WWW-Authenticate: Bearer``), a key whose role does not
reach the route 403, and each refusal is written to the audit log (path, reason, client, key id).

Auth is on when ``settings.auth`` is True, or when it is None (the default) and the key file exists at
start, even with no key left in it: revoking the last key must not open the server. The server logs at
start whether auth is on, and why. When it is off, routes get no dependency at all, so the request path costs nothing more.
The key file is read once at start and again whenever it changes, so revocations apply at once.
The HTTP check is a FastAPI dependency (``web.key_dependencies``), the gRPC one an interceptor; this module
imports neither framework at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import audit
from ..keys import KeyStore, parse

if TYPE_CHECKING:
    from .served import ServedModel

OPEN = "open"  # health probes and the API docs
PREDICT = "predict"  # inference, in every protocol
ADMIN = "admin"  # metadata, monitoring and metrics too

# The key roles that reach each access level.
ROLES_FOR = {PREDICT: ("predict", "admin"), ADMIN: ("admin",)}
REACH = {"predict": "inference only", "admin": "inference, metadata and monitoring"}

NO_KEY = (
    "this server needs an API key: send 'Authorization: Bearer <key>'; "
    "create one with 'notebook-deploy keys create --role predict'"
)
BAD_KEY = "the API key is not valid (revoked or unknown)"

# gRPC methods of the Open Inference Protocol (inference.GRPCInferenceService) by access level; the
# health RPCs are open, inference and metadata need a predict key, anything else (statistics,
# repository, shared memory, trace and log settings) an admin key.
GRPC_OPEN = {"ServerLive", "ServerReady", "ModelReady"}
GRPC_PREDICT = {"ModelInfer", "ModelStreamInfer", "ServerMetadata", "ModelMetadata", "ModelConfig"}
GRPC_OPEN_SERVICES = {"grpc.health.v1.Health"}

log = logging.getLogger("notebook_deploy.serving")


@dataclass
class Refusal:
    """Why a call is refused: 401 (no or bad key) or 403 (a key whose role does not reach it)."""

    status: int
    message: str
    reason: str  # for the audit log: missing_key, malformed_header, invalid_key, insufficient_role
    key_id: str | None = None


class Guard:
    """The key check of one app: its key store, whether auth is on, and where refusals are recorded."""

    def __init__(self, settings: Any) -> None:
        self.keys = KeyStore(settings.keys_file)
        self.audit_log = settings.audit_log
        count = len(self.keys)
        exists = self.keys.path.exists()
        self.enabled = bool(settings.auth) if settings.auth is not None else exists
        why = (
            "--auth"
            if settings.auth
            else "--no-auth"
            if settings.auth is not None
            else ("the key file exists" if exists else "no key file")
        )
        if not self.enabled:
            log.info("auth is off (%s: %s): every route answers without a key", why, self.keys.path)
        elif count:
            log.info("auth is on (%s): %d key(s) in %s", why, count, self.keys.path)
        else:
            log.warning(
                "auth is on (%s) but %s has no key: every call but health and docs gets 401; "
                "create one with 'notebook-deploy keys create --role predict'",
                why,
                self.keys.path,
            )

    def check(self, authorization: str | None, access: str, path: str) -> Refusal | None:
        """None if ``authorization`` (the header's value) reaches ``access``, else why not."""
        if not authorization:
            return Refusal(401, NO_KEY, "missing_key")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Refusal(401, NO_KEY, "malformed_header")
        key = self.keys.verify(token)
        if key is None:
            return Refusal(401, BAD_KEY, "invalid_key", parse(token))
        if key.role not in ROLES_FOR[access]:
            needed = ROLES_FOR[access][0]
            return Refusal(
                403,
                f"the key '{key.id}' has role '{key.role}', which reaches {REACH.get(key.role, 'nothing')}; "
                f"{path} needs an '{needed}' key",
                "insufficient_role",
                key.id,
            )
        return None

    def record(self, refusal: Refusal, path: str, client: str | None, protocol: str) -> None:
        audit.record_limited(
            "auth_failure",
            client,
            audit_log=self.audit_log,
            status=refusal.status,
            path=path,
            reason=refusal.reason,
            key_id=refusal.key_id,
            protocol=protocol,
        )


def guard_of(served: ServedModel) -> Guard:
    """The served model's one Guard, made (and the key file read) on first use."""
    if served.guard is None:
        served.guard = Guard(served.settings)
    return served.guard


def grpc_access(method: str) -> str:
    """The access level of a gRPC method (``/package.Service/Method``)."""
    service, _, name = method.lstrip("/").rpartition("/")
    if service in GRPC_OPEN_SERVICES or name in GRPC_OPEN:
        return OPEN
    return PREDICT if name in GRPC_PREDICT else ADMIN


def grpc_interceptors(guard: Guard) -> list[Any]:
    """The grpc.aio server interceptors that apply the keys of ``guard`` (an app's: ``guard_of``) to gRPC calls
    (``authorization`` metadata)."""
    if not guard.enabled:
        return []
    return [_grpc_interceptor(guard)]


def _grpc_interceptor(guard: Guard) -> Any:
    import grpc

    class KeyInterceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            method = details.method
            access = grpc_access(method)
            if access == OPEN:
                return await continuation(details)
            metadata: Mapping[str, Any] = dict(details.invocation_metadata or ())
            refusal = guard.check(metadata.get("authorization"), access, method)
            handler = await continuation(details)
            if refusal is None or handler is None:
                return handler
            return _refusing(handler, refusal, method)

    def _refusing(handler: Any, refusal: Refusal, method: str) -> Any:
        code = grpc.StatusCode.UNAUTHENTICATED if refusal.status == 401 else grpc.StatusCode.PERMISSION_DENIED

        async def refuse(_request: Any, context: Any) -> None:
            guard.record(refusal, method, context.peer(), "grpc")
            await context.abort(code, refusal.message)

        options = dict(
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(refuse, **options)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(refuse, **options)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(refuse, **options)
        return grpc.stream_stream_rpc_method_handler(refuse, **options)

    return KeyInterceptor()
