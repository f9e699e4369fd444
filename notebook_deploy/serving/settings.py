"""How a bundle is served: ``ServeSettings``, one frozen record shared by ``serve()``, the CLI, the runner
and each worker, and the declaration of every option in it.

Each option is declared once, on its field (``_option``): its type and default (the field's), its range
or choices, its help, and whether it is a file path. Everything else is derived from those declarations:
the ``notebook-deploy serve`` options and their ``$NOTEBOOK_DEPLOY_<NAME>`` variables (cli.py), the
command line ``serve()`` starts its child with (``arguments``), the environment of a Kubernetes container
(``environment``), the checks (``ServeSettings.__post_init__``) and the JSON that Ray replicas and
worker processes receive (``to_json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..devices import DEVICES
from ..errors import SettingError
from .limits import DEFAULT_MAX_BODY_BYTES

ENVIRONMENT_PREFIX = "NOTEBOOK_DEPLOY_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True)
class Option:
    """The declaration of one server option (see the module's docstring)."""

    name: str
    kind: type  # bool, int, float or str (None is allowed where the default is None)
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    path: bool = False  # a file path: resolved on the command line, absolute inside a container
    must_exist: bool = False  # a path to a file that must exist when the server starts
    switch: str | None = None  # "--on/--off" of a yes/no option [default: --NAME/--no-NAME]
    default_help: str | None = None  # what the default means, where its value alone does not say
    from_environment: bool = True  # also read from $NOTEBOOK_DEPLOY_<NAME>
    command_line: bool = True  # an option of `notebook-deploy serve`

    @property
    def variable(self) -> str:
        """The environment variable the server reads it from."""
        return ENVIRONMENT_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """``--name``, or ``--on/--off`` for a yes/no option."""
        if self.kind is bool:
            dashed = self.name.replace("_", "-")
            return self.switch or f"--{dashed}/--no-{dashed}"
        return flag(self.name)

    def described(self) -> str:
        """The help text with its default, as ``--help`` shows it."""
        default = self.default_help or (
            None if self.default is None or self.default is False else as_text(self.default)
        )
        return f"{self.help} [default: {default}]." if default else f"{self.help}."

    def check(self, value: Any) -> None:
        """Raise ``SettingError`` naming this option unless ``value`` is of its type, range and choices."""
        if value is None and self.default is None:
            return
        if not self._of_kind(value):
            raise SettingError(self.name, f"must be {self.kind.__name__}, not {value!r}")
        if self.minimum is not None and float(value) < self.minimum:
            raise SettingError(self.name, f"must be at least {as_text(self.minimum)}, not {value!r}")
        if self.maximum is not None and float(value) > self.maximum:
            raise SettingError(self.name, f"must be at most {as_text(self.maximum)}, not {value!r}")
        if self.choices and value not in self.choices:
            raise SettingError(self.name, f"must be one of {', '.join(self.choices)}, not {value!r}")

    def _of_kind(self, value: Any) -> bool:
        """Whether ``value`` is of this option's type (an int for a float; a bool is not an int here)."""
        expected = (int, float) if self.kind is float else self.kind
        return isinstance(value, expected) and (self.kind is bool or not isinstance(value, bool))

    def parse(self, text: str) -> Any:
        """``text`` (from an environment variable or ``--set NAME=VALUE``) as a value of this option."""
        if self.kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise SettingError(self.name, f"must be true or false, not {text!r}")
            return lowered in ("true", "1", "yes", "on")
        try:
            return self.kind(text)
        except ValueError:
            raise SettingError(self.name, f"must be {self.kind.__name__}, not {text!r}") from None

    def arguments(self, value: Any) -> list[str]:
        """The ``notebook-deploy serve`` arguments that set ``value``."""
        if self.kind is bool:
            on, off = self.flag.split("/")
            return [on if value else off]
        return [self.flag, as_text(value)]


def _option(default: Any, help: str, **declared: Any) -> Any:
    """The field of an option, with its declaration (completed with the name and type by ``_declare``)."""
    return field(default=default, metadata={"option": (help, declared)})


def flag(name: str) -> str:
    """The ``notebook-deploy serve`` flag of the option ``name`` (``sticky_header`` -> ``--sticky-header``)."""
    return "--" + name.replace("_", "-")


def as_text(value: Any) -> str:
    """A value as the server reads it back from a command line or an environment variable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class ServeSettings:
    """Options of a server. Each is checked when the record is made: ``serve(b, max_queue=0)`` is refused
    with a ``SettingError`` that names ``max_queue``, not started as a server that answers 503 to all."""

    max_body_bytes: int = _option(DEFAULT_MAX_BODY_BYTES, "Refuse request bodies larger than this with 413", minimum=1)
    batching: bool | None = _option(
        None,
        "Join concurrent requests into one model call",
        switch="--batch/--no-batch",
        default_help="on where capture found batch calls give the same outputs as single ones",
    )
    max_batch_size: int = _option(64, "Most rows in one batched call", minimum=1)
    max_batch_wait_ms: float = _option(2.0, "Longest a request waits for its batch to fill, in milliseconds", minimum=0)
    max_queue: int = _option(
        1024, "Requests that may wait at once; beyond that the answer is 503 with Retry-After", minimum=1
    )
    workers: int = _option(1, "Worker processes sharing the port", minimum=1)
    grpc_port: int | None = _option(
        None, "Also serve the Open Inference Protocol over gRPC on this port", minimum=0, maximum=65535
    )
    grpc_host: str | None = _option(None, "The address gRPC listens on", default_help="the address HTTP is served on")
    auth: bool | None = _option(
        None,
        "Require an API key ('Authorization: Bearer KEY') on every route but health and docs",
        switch="--auth/--no-auth",
        default_help="on when the key file exists at start, even with no key left in it",
    )
    keys_file: str | None = _option(None, "The API key file", path=True, default_help="keys.json in the store")
    audit_log: str | None = _option(
        None, "Append refused calls here as JSON lines", path=True, default_help="audit.log in the store"
    )
    tls_cert: str | None = _option(
        None,
        "Serve HTTPS with this certificate (PEM, with its chain); needs --tls-key",
        path=True,
        must_exist=True,
        from_environment=False,
    )
    tls_key: str | None = _option(
        None, "The private key of --tls-cert (PEM)", path=True, must_exist=True, from_environment=False
    )
    drift_window: int = _option(
        1000, "Live rows each worker keeps to compare with the bundle's reference (/monitor/drift)", minimum=1
    )
    drift_threshold: float = _option(0.2, "Flag a feature as drifted when its PSI is above this", minimum=0)
    drift_min_rows: int = _option(100, "Rows the drift window needs before it flags anything", minimum=1)
    prediction_log: str | None = _option(
        None,
        "Append inputs and outputs here as JSON lines, one per row, rotated at --prediction-log-max-bytes",
        path=True,
    )
    prediction_log_sample: float = _option(
        1.0, "The fraction of rows written to --prediction-log", minimum=0, maximum=1
    )
    prediction_log_max_bytes: int = _option(50 * 1024 * 1024, "Rotate the prediction log at this size", minimum=1)
    graceful_timeout: float = _option(
        30.0, "Seconds the requests in flight get to finish once the server is asked to stop", minimum=0
    )
    debug_errors: bool = _option(
        False, "Return a model's exception text in 500 answers; by default only the server's log has it"
    )
    allow_unsigned: bool = _option(
        False, "Serve the bundle even if no trusted key signed it (written to the audit log)"
    )
    trust_dir: str | None = _option(
        None, "The folder of trusted public keys", path=True, default_help="trusted-keys in the store"
    )
    # Public keys (PEM) trusted too: what a Ray deployment passes to its replicas, which have no trust store.
    trusted_keys: tuple[str, ...] = _option(
        (), "Public keys (PEM) trusted besides the trust store's", from_environment=False, command_line=False
    )
    log_level: str = _option("info", "How much the server logs", choices=LOG_LEVELS)
    device: str = _option(
        "auto",
        "Where a torch model runs: cpu, cuda (refused where torch sees no CUDA GPU), or auto: cuda where there is one",
        choices=DEVICES,
    )
    follow: bool = _option(
        False,
        "Follow the tag each REF names (e.g. churn:prod): when it moves, load the new version beside the old, "
        "switch once it answers its stored sample, keep the old one if it does not",
    )
    rollback_error_rate: float | None = _option(
        None,
        "Take a canary out of rotation when its share of 5xx answers exceeds the stable version's by more than "
        "this (0.05: 5 points) over --rollback-window",
        minimum=0,
        maximum=1,
        default_help="off",
    )
    rollback_latency_ratio: float | None = _option(
        None,
        "Take a canary out of rotation when its p99 latency exceeds this many times the stable version's over "
        "--rollback-window",
        minimum=1,
        default_help="off",
    )
    rollback_drift: float | None = _option(
        None,
        "Take a canary out of rotation when the largest PSI of its drift report (its predictions', where its "
        "bundle has their reference, and its inputs') exceeds the stable version's by more than this (0.2: a "
        "shift the drift monitor flags); each version is compared with its own bundle's reference",
        minimum=0,
        default_help="off",
    )
    rollback_window: float = _option(
        60.0, "Seconds of requests over which a canary is compared with the stable version", minimum=1
    )
    rollback_min_requests: int = _option(
        100, "Requests a canary must have answered within --rollback-window before it is judged", minimum=1
    )

    def __post_init__(self) -> None:
        for option in OPTIONS.values():
            option.check(getattr(self, option.name))
        if not all(isinstance(key, str) for key in self.trusted_keys):
            raise SettingError("trusted_keys", "must be a tuple of public keys in PEM text")

    def trust(self) -> Any:
        """The ``signing.TrustStore`` a bundle's signature is checked against."""
        from ..signing import TrustStore

        return TrustStore(self.trust_dir, audit_log=self.audit_log, keys=[key.encode() for key in self.trusted_keys])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        values = {k: v for k, v in json.loads(text).items() if k in OPTIONS}
        values["trusted_keys"] = tuple(values.get("trusted_keys", ()))  # a list in JSON
        return cls(**values)

    def with_options(self, **options: Any) -> ServeSettings:
        """A copy with the options that are not None changed; an unknown name is a ``SettingError``."""
        for name in options:
            if name not in OPTIONS:
                raise SettingError(name, f"is not a server option; they are: {', '.join(OPTIONS)}")
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def arguments(self) -> list[str]:
        """The ``notebook-deploy serve`` arguments that give a child server these settings, every one that
        is set (not None): arguments win over the ``$NOTEBOOK_DEPLOY_*`` variables the child inherits, and
        what is left unset still comes from them."""
        if self.trusted_keys:
            raise SettingError("trusted_keys", "is for Ray replicas; a local server reads its trust store (trust_dir)")
        found: list[str] = []
        for option in OPTIONS.values():
            value = getattr(self, option.name)
            if option.command_line and value is not None:
                found += option.arguments(value)
        return found


def environment(values: Mapping[str, Any]) -> dict[str, str]:
    """The ``$NOTEBOOK_DEPLOY_*`` variables that give a server ``values`` (option name -> value, or its
    text), each checked as the server would check it; a ``SettingError`` names the first that is not."""
    variables = {}
    for name, value in values.items():
        option = OPTIONS.get(name)
        if option is None or not option.from_environment:
            readable = ", ".join(n for n, o in OPTIONS.items() if o.from_environment)
            raise SettingError(name, f"not an option the server reads from its environment, which are: {readable}")
        if isinstance(value, str) and option.kind is not str:
            value = option.parse(value)
        option.check(value)
        variables[option.variable] = as_text(value)
    return variables


def _declare() -> dict[str, Option]:
    """Every option of ``ServeSettings``, by name, from the declarations on its fields."""
    kinds = {"bool": bool, "int": int, "float": float, "str": str, "tuple": tuple}
    declared = {}
    for spec in fields(ServeSettings):
        help, details = spec.metadata["option"]
        kind = kinds[str(spec.type).split("[")[0].split(" |")[0]]
        declared[spec.name] = Option(spec.name, kind, spec.default, help, **details)
    return declared


OPTIONS: dict[str, Option] = _declare()
