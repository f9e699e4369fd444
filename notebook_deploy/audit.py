"""The audit log: one JSON object per line, appended, never rewritten.

Events: ``capture`` (name, version), ``push`` (reference, digest, result), ``key_create`` and
``key_revoke`` (key_id, name, role), ``auth_failure`` (status, path, reason, client, key_id). Every line
also has the time (UTC), the user, the host and the process id. Keys and other secrets are never
written: callers pass key ids, and anything shaped like a notebook-deploy key is cut to its id.

The file is ``audit.log`` in the store root, or ``$NOTEBOOK_DEPLOY_AUDIT_LOG``, or the path given.
Each line is one ``write`` on a descriptor opened with ``O_APPEND``, so lines from concurrent
processes (server workers, captures, CLI calls) never interleave.

Store changes are recorded by the Store: ``import`` (archive, result, name, version or error), ``rm``
(name, version), ``tag`` and ``untag`` (name, tag, version).

A server records ``follow`` (ref, result ``switched`` or ``failed``, serving, to, reason) when the tag it
follows moves, and ``rollback`` (canary, stable, reason and its numbers) when it takes a canary out.

Refusals by a server's auth go through ``record_limited``: at most one line a second per client, event
and status (401 and 403 apart) in each server process; the next line written for that client carries ``suppressed``, the number left out
meanwhile, so a flood of bad keys cannot fill the disk and is still counted.

The log rotates by size: once it holds ``MAX_BYTES`` (10 MiB), it becomes ``audit.log.1`` (the older
ones shift to ``.2`` ... ``.5``; the oldest beyond ``KEEP`` = 5 is deleted), so it keeps at most about 60 MiB.
``read`` reads the rotated files too, oldest first.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .files import default_root, file_lock

AUDIT_LOG_VARIABLE = "NOTEBOOK_DEPLOY_AUDIT_LOG"
log = logging.getLogger("notebook_deploy.audit")
_KEY = re.compile(r"(ndk_[0-9a-f]{8})_[A-Za-z0-9_-]+")
_failed: set[str] = set()  # log files a warning was given for
MAX_BYTES = 10 << 20  # a log this large is rotated before the next line
KEEP = 5  # rotated files kept: audit.log.1 (newest) ... audit.log.5
LIMIT_SECONDS = 1.0  # record_limited writes at most one line per client and event in this time
_LIMITED_KEYS = 10_000  # clients remembered by record_limited; the longest quiet are forgotten first
_limited: OrderedDict[tuple[str, ...], list[float]] = OrderedDict()  # key -> [last written, suppressed]
_limited_lock = threading.Lock()
_GRPC_PEER = re.compile(r"^(ipv[46]:.+):\d+$")


def default_path(root: Any = None) -> Path:
    """``$NOTEBOOK_DEPLOY_AUDIT_LOG``, else ``audit.log`` in the store ``root`` (a Store or a folder;
    default: the default store)."""
    configured = os.environ.get(AUDIT_LOG_VARIABLE)
    if configured:
        return Path(configured)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        root = root.root  # a Store (which records its changes here, so this module does not import it)
    if root is None:
        root = default_root()
    return Path(root) / "audit.log"


def record(event: str, *, audit_log: str | os.PathLike[str] | None = None, root: Any = None, **fields: Any) -> None:
    """Append one line for ``event`` with ``fields`` to ``audit_log`` (default: ``default_path(root)``).

    It never raises: an audit log that cannot be written (read-only disk, no permission) is reported
    once as a warning, and the action being recorded goes on."""
    path = Path(audit_log) if audit_log else default_path(root)
    entry: dict[str, Any] = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event}
    entry.update({name: _redacted(value) for name, value in fields.items()})
    entry.update(user=_user(), host=socket.gethostname(), pid=os.getpid())
    line = (json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _rotate_if_full(path)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(descriptor, line)  # one write: whole lines, in any order, never mixed
        finally:
            os.close(descriptor)
    except OSError as error:
        if str(path) not in _failed:
            _failed.add(str(path))
            log.warning("cannot write the audit log %s (%s): events are not recorded", path, error)


def record_limited(
    event: str, client: str | None, *, audit_log: str | os.PathLike[str] | None = None, root: Any = None, **fields: Any
) -> bool:
    """``record``, at most once per ``LIMIT_SECONDS`` for one ``client``, ``event`` and ``status`` in this process; the
    line says how many were ``suppressed`` since the last one. Returns whether a line was written."""
    peer = _GRPC_PEER.match(str(client))  # "ipv4:HOST:PORT": a new port for each gRPC connection
    host = peer.group(1) if peer else str(client)
    key = (str(audit_log or default_path(root)), event, host, str(fields.get("status")))
    now = time.monotonic()
    with _limited_lock:
        state = _limited.get(key)
        if state is not None and now - state[0] < LIMIT_SECONDS:
            state[1] += 1
            return False
        suppressed = state[1] if state is not None else 0
        _limited[key] = [now, 0]
        _limited.move_to_end(key)
        while len(_limited) > _LIMITED_KEYS:
            _limited.popitem(last=False)
    record(event, audit_log=audit_log, root=root, client=client, suppressed=suppressed, **fields)
    return True


def read(audit_log: str | os.PathLike[str] | None = None, root: Any = None) -> list[dict[str, Any]]:
    """Every entry of the audit log, its rotated files included, oldest first (empty if there is none yet)."""
    path = Path(audit_log) if audit_log else default_path(root)
    entries = []
    for file in [path.with_name(f"{path.name}.{n}") for n in range(KEEP, 0, -1)] + [path]:
        try:
            text = file.read_text()
        except FileNotFoundError:
            continue
        entries += [json.loads(line) for line in text.splitlines() if line.strip()]
    return entries


def _rotate_if_full(path: Path) -> None:
    """Shift ``path`` to ``path.1`` (and older files up to ``KEEP``) once it holds ``MAX_BYTES``; one
    process rotates, under a lock, and the others see the fresh file."""
    if not _size_at_least(path, MAX_BYTES):
        return

    with file_lock(path.with_name(f".{path.name}.lock")):
        if not _size_at_least(path, MAX_BYTES):
            return  # another process rotated it meanwhile
        for number in range(KEEP - 1, 0, -1):
            older = path.with_name(f"{path.name}.{number}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{number + 1}"))
        os.replace(path, path.with_name(f"{path.name}.1"))


def _size_at_least(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size >= size
    except FileNotFoundError:
        return False


def _redacted(value: Any) -> Any:
    if isinstance(value, str) and "ndk_" in value:
        return _KEY.sub(r"\1_…", value)
    return value


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry and no $USER
        return str(os.getuid())
