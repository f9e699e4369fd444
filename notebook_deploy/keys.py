"""API keys: created once, stored only as hashes, checked in constant time.

A key reads ``ndk_<id>_<secret>``: ``ndk_`` makes it recognisable (secret scanners, logs), ``<id>`` is
a short public id (8 hex digits) that names the key in listings, the audit log and error messages, and
``<secret>`` is 32 random bytes (``secrets.token_urlsafe``). The key file holds, per key, the id, a
name, a role and the sha256 of the whole key; never the key itself, which is shown once at creation.

The key file is ``keys.json`` in the store root, or ``$NOTEBOOK_DEPLOY_KEYS_FILE`` (for containers,
where it is mounted), or the path given; it is written atomically with mode 0600.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import audit
from .errors import KeyStoreError
from .files import default_root, file_lock, replace_file

log = logging.getLogger("notebook_deploy.keys")
_NEVER = object()

KEYS_FILE_VARIABLE = "NOTEBOOK_DEPLOY_KEYS_FILE"
PREFIX = "ndk_"
ROLES = ("predict", "admin")  # predict: inference only; admin: metadata and monitoring too
_KEY = re.compile(r"ndk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
KEY_PATTERN = _KEY  # what a key looks like: the secret scan of captures knows it (capturing/secrets.py)
_FORMAT = 1


@dataclass(frozen=True)
class ApiKey:
    """What is known of a key after its creation: never the key itself."""

    id: str
    name: str
    role: str
    created: str


def default_path(root: str | os.PathLike[str] | None = None) -> Path:
    """``$NOTEBOOK_DEPLOY_KEYS_FILE``, else ``keys.json`` in the store ``root`` (default: the default store)."""
    configured = os.environ.get(KEYS_FILE_VARIABLE)
    if configured:
        return Path(configured)
    return Path(root if root is not None else default_root()) / "keys.json"


def parse(key: str) -> str | None:
    """The public id of a well-formed key, or None."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


def _hash(key: str) -> str:
    # sha256, not a slow password KDF (bcrypt, scrypt, argon2): the keys are 256 random bits, so no
    # dictionary or brute-force attack on a stolen hash is feasible, and a fast hash keeps every
    # authenticated request cheap. Slow KDFs exist for low-entropy, human-chosen passwords.
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# Compared against when the id is unknown, so that unknown and wrong keys take the same path.
_NO_HASH = _hash(PREFIX + "00000000_" + "0" * 43)


class KeyStore:
    """The API keys of a server: ``create``, ``list``, ``revoke`` and ``verify``.

    ``path`` is the key file (default: ``default_path(root)``). ``verify`` re-reads the file when it
    changes on disk (one ``stat`` per call), so a revocation reaches a running server without restart.
    Key changes are written to the audit log (``audit_log``, or the default next to the store)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        audit_log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_path(root)
        self._root = root
        self._audit_log = audit_log
        self._loaded: object = _NEVER  # (inode, mtime_ns, size) of the file read into _by_id; None: no file
        self._by_id: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r})"

    # -- reading -----------------------------------------------------------------------------------

    def list(self) -> list[ApiKey]:
        """Every key, oldest first: id, name, role and creation time."""
        return [_record(entry) for entry in self._read()]

    def __len__(self) -> int:
        self._refresh()
        return len(self._by_id)

    def verify(self, key: str) -> ApiKey | None:
        """The key's record if ``key`` is a valid key of this store, else None (malformed, unknown or
        revoked). The hashes are compared with ``hmac.compare_digest``, and an unknown id is compared
        against a dummy hash, so the time taken does not tell how much of a guess was right."""
        self._refresh()
        key_id = parse(key) if isinstance(key, str) else None
        if key_id is None:
            return None
        entry = self._by_id.get(key_id)
        expected = entry["hash"] if entry is not None else _NO_HASH
        if hmac.compare_digest(_hash(key).encode(), str(expected).encode()) and entry is not None:
            return _record(entry)
        return None

    def _refresh(self) -> None:
        """Re-read the key file if it changed (replaced, written, deleted) since it was last read."""
        try:
            stat = os.stat(self.path)
            signature: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            signature = None
        if signature == self._loaded:
            return
        try:
            entries = self._read()
        except KeyStoreError as error:
            log.error("%s; no key is accepted until it is fixed", error)
            entries = []  # fail closed
        self._by_id = {entry["id"]: entry for entry in entries}
        self._loaded = signature

    def _read(self) -> builtins.list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise KeyStoreError(f"cannot read the key file {self.path}: {error}") from None
        try:
            data = json.loads(text)
            entries = data["keys"]
            for entry in entries:
                entry["id"], entry["role"], entry["hash"]  # noqa: B018 - the fields every entry needs
        except (ValueError, KeyError, TypeError):
            raise KeyStoreError(f"the key file {self.path} is not a notebook-deploy key file (damaged?)") from None
        return list(entries)

    # -- writing -----------------------------------------------------------------------------------

    def create(self, role: str, name: str | None = None) -> tuple[str, ApiKey]:
        """A new key of ``role`` (``"predict"`` or ``"admin"``): returns the key, which is not stored
        and cannot be shown again, and its record."""
        if role not in ROLES:
            raise KeyStoreError(f"the role must be one of {', '.join(ROLES)}, not {role!r}")
        with self._locked():
            entries = self._read()
            taken = {entry["id"] for entry in entries}
            key_id = secrets.token_hex(4)
            while key_id in taken:
                key_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            key = f"{PREFIX}{key_id}_{secret}"
            record = ApiKey(
                key_id, name or f"{role}-{key_id}", role, datetime.now(timezone.utc).isoformat(timespec="seconds")
            )
            entries.append({**asdict(record), "hash": _hash(key)})
            self._write(entries)
        audit.record(
            "key_create",
            audit_log=self._audit_log,
            root=self._root,
            key_id=key_id,
            name=record.name,
            role=role,
            keys_file=str(self.path),
        )
        return key, record

    def revoke(self, key_id: str) -> ApiKey:
        """Delete the key ``key_id`` (the id, or a whole key): servers refuse it from their next request."""
        key_id = parse(key_id) or key_id
        with self._locked():
            entries = self._read()
            found = [entry for entry in entries if entry["id"] == key_id]
            if not found:
                known = ", ".join(entry["id"] for entry in entries) or "none"
                raise KeyStoreError(
                    f"no key with id {key_id!r} in {self.path} (ids: {known}); 'notebook-deploy keys list' shows them"
                )
            self._write([entry for entry in entries if entry["id"] != key_id])
        record = _record(found[0])
        audit.record(
            "key_revoke",
            audit_log=self._audit_log,
            root=self._root,
            key_id=key_id,
            name=record.name,
            role=record.role,
            keys_file=str(self.path),
        )
        return record

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers (two 'keys create' at once) on a lock file next to the key file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            yield

    def _write(self, entries: builtins.list[dict[str, Any]]) -> None:
        """Replace the key file atomically: a 0600 temporary file in the same folder, fsync'd, renamed."""
        replace_file(
            self.path, mode=0o600, data=(json.dumps({"format": _FORMAT, "keys": entries}, indent=2) + "\n").encode()
        )


def _record(entry: dict[str, Any]) -> ApiKey:
    return ApiKey(str(entry["id"]), str(entry.get("name") or ""), str(entry["role"]), str(entry.get("created") or ""))
