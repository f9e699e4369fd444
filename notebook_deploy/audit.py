"""The audit log: one JSON object per line, appended, never rewritten.

Events: ``capture`` (name, version), ``push`` (reference, digest, result), ``key_create`` and
``key_revoke`` (key_id, name, role), ``auth_failure`` (status, path, reason, client, key_id). Every line
also has the time (UTC), the user, the host and the process id. Keys and other secrets are never
written: callers pass key ids, and anything shaped like a notebook-deploy key is cut to its id.

The file is ``audit.log`` in the store root, or ``$NOTEBOOK_DEPLOY_AUDIT_LOG``, or the path given.
Each line is one ``write`` on a descriptor opened with ``O_APPEND``, so lines from concurrent
processes (server workers, captures, CLI calls) never interleave.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


AUDIT_LOG_VARIABLE = "NOTEBOOK_DEPLOY_AUDIT_LOG"
log = logging.getLogger("notebook_deploy.audit")
_KEY = re.compile(r"(ndk_[0-9a-f]{8})_[A-Za-z0-9_-]+")
_failed: set[str] = set()  # log files a warning was given for


def default_path(root: Any = None) -> Path:
    """``$NOTEBOOK_DEPLOY_AUDIT_LOG``, else ``audit.log`` in the store ``root`` (a Store or a folder;
    default: the default store)."""
    configured = os.environ.get(AUDIT_LOG_VARIABLE)
    if configured:
        return Path(configured)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        root = root.root  # a Store (which records its changes here, so this module does not import it)
    if root is None:
        from .store import default_root

        root = default_root()
    return Path(root) / "audit.log"


def record(event: str, *, audit_log: str | os.PathLike[str] | None = None, root: Any = None, **fields: Any) -> None:
    """Append one line for ``event`` with ``fields`` to ``audit_log`` (default: ``default_path(root)``).

    It never raises: an audit log that cannot be written (read-only disk, no permission) is reported
    once as a warning, and the action being recorded goes on."""
    path = Path(audit_log) if audit_log else default_path(root)
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event}
    entry.update({name: _redacted(value) for name, value in fields.items()})
    entry.update(user=_user(), host=socket.gethostname(), pid=os.getpid())
    line = (json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(descriptor, line)  # one write: whole lines, in any order, never mixed
        finally:
            os.close(descriptor)
    except OSError as error:
        if str(path) not in _failed:
            _failed.add(str(path))
            log.warning("cannot write the audit log %s (%s): events are not recorded", path, error)


def read(audit_log: str | os.PathLike[str] | None = None, root: Any = None) -> list[dict[str, Any]]:
    """Every entry of the audit log, oldest first (empty if there is none yet)."""
    path = Path(audit_log) if audit_log else default_path(root)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _redacted(value: Any) -> Any:
    if isinstance(value, str) and "ndk_" in value:
        return _KEY.sub(r"\1_…", value)
    return value


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry and no $USER
        return str(os.getuid())
