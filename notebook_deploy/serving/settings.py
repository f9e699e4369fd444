"""How a bundle is served: one frozen record shared by the CLI, ``serve()``, the runner and each worker."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .limits import DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True)
class ServeSettings:
    """Options of a server. ``batching=None`` turns batching on where the bundle records that a batch call
    gives the same outputs as single calls (checked on the sample at capture)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batching: bool | None = None
    max_batch_size: int = 64
    max_batch_wait_ms: float = 2.0
    max_queue: int = 1024
    workers: int = 1
    grpc_port: int | None = None
    grpc_host: str | None = None  # None: the host HTTP is served on (loopback when the app runs in-process)
    auth: bool | None = None
    keys_file: str | None = None
    audit_log: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    drift_window: int = 1000
    drift_threshold: float = 0.2
    drift_min_rows: int = 100
    prediction_log: str | None = None
    prediction_log_sample: float = 1.0
    prediction_log_max_bytes: int = 50 * 1024 * 1024
    graceful_timeout: float = 30.0
    debug_errors: bool = False  # return a model's exception text to callers (the log has it either way)
    allow_unsigned: bool = False  # serve a bundle no trusted key signed (written to the audit log)
    trust_dir: str | None = None  # the trusted public keys [default: signing.default_trust_dir()]
    trusted_keys: tuple[str, ...] = ()  # public keys (PEM) trusted too: what a deployment passes to replicas

    def trust(self) -> Any:
        """The ``signing.TrustStore`` a bundle's signature is checked against."""
        from ..signing import TrustStore

        return TrustStore(self.trust_dir, audit_log=self.audit_log, keys=[key.encode() for key in self.trusted_keys])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in json.loads(text).items() if k in known}
        values["trusted_keys"] = tuple(values.get("trusted_keys", ()))  # a list in JSON
        return cls(**values)

    def with_options(self, **options: Any) -> ServeSettings:
        """A copy with the options that are not None changed."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})
