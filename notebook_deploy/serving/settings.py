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

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def with_options(self, **options: Any) -> "ServeSettings":
        """A copy with the options that are not None changed."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})
