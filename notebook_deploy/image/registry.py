"""A client of the OCI distribution API on ``requests``: what pushing an image and reading a base need.

Written here rather than taken from PyPI: oras-py re-serialises manifests and reads whole blobs into
memory, python-dxf refuses authentication over plain http (local registries), google's
containerregistry is unmaintained, and docker-py needs a daemon (../shared/notes/oci-images.md §0).

- Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic, or a Bearer token fetched
  from the realm for exactly the scopes a request needs (cached per scope set, fetched again on 401).
- Blobs: existence check, cross-repository mount, then a monolithic upload for small blobs or PATCH
  chunks with ``Content-Range`` for large ones; a dropped connection resumes from the offset the
  registry reports. The ``Location`` of each answer is followed as given (it carries ``_state``).
- Manifests are sent as the exact bytes given, with their media type, and their digest checked.
- Connection errors, 429 and 5xx are retried with exponential backoff (``Retry-After`` honoured), then
  reported with what to do next.
- One client may be used from several threads at once (a push sends its blobs concurrently): requests'
  connection pool is thread-safe, and what the client itself remembers (tokens, Basic, whether the
  registry has the referrers API) is changed under a lock; see ``Registry.__init__``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urljoin, urlparse

import requests

from ..errors import RegistryAuthError, RegistryError
from .credentials import Credentials, find_credentials
from .reference import ImageReference, is_loopback

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
CHUNK_SIZE = 16 * 1024 * 1024
# Blobs a push sends at once: enough to overlap the round trips of a push's small requests (HEADs of
# blobs already there, the config), few enough not to crowd a registry or a small machine.
PUSH_THREADS = 4

Progress = Callable[[int, int], None]
T = TypeVar("T")


class _Unreachable(Exception):
    pass


@dataclass(frozen=True)
class Blob:
    """Bytes to push: held in memory, read from a file, or fetched on demand, with their digest and size."""

    digest: str
    size: int
    data: bytes | None = None
    path: Path | None = None
    fetch: Callable[[], bytes] | None = None  # for a blob read only if it must be uploaded (a base layer)

    def body(self, offset: int, length: int) -> bytes | FileSlice:
        """``length`` bytes from ``offset`` to send: read from the file as they are sent where the blob
        is a file (a chunk of a model's layer is not held in memory), else the bytes."""
        if self.data is None and self.fetch is None and self.path is not None:
            return FileSlice(self.path, offset, length)
        return self.read(offset, length)

    def read(self, offset: int, length: int) -> bytes:
        if self.data is None and self.fetch is not None:
            object.__setattr__(self, "data", self.fetch())
        if self.data is not None:
            return self.data[offset : offset + length]
        if self.path is None:
            raise ValueError(f"blob {self.digest} has no content to upload")
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)


class FileSlice(io.RawIOBase):
    """Part of a file as a request body that requests streams (http.client reads it in blocks). Seeking
    to 0 rewinds it, which ``Registry._request`` does before every attempt, so a retried or
    re-authenticated request sends the whole part again."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._file = open(path, "rb")
        self._offset, self._length, self._position = offset, length, 0
        self._file.seek(offset)

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + position))
        self._file.seek(self._offset + self._position)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._position
        data = self._file.read(left if size < 0 else min(size, left))
        self._position += len(data)
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


class Registry:
    """One registry (``host[:port]``). Credentials default to the Docker config and the environment."""

    def __init__(
        self,
        host: str,
        *,
        scheme: str = "https",
        credentials: Credentials | None | Literal["auto"] = "auto",
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 60,
    ) -> None:
        self.host = host
        self.base = f"{scheme}://{host}"
        self.credentials = find_credentials(host) if credentials == "auto" else credentials
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        # Shared by the threads of a push. A Session's connection pool (urllib3) is thread-safe, and
        # its default pool keeps 10 connections per host, more than a push's threads. A session with
        # cookies would not be safe to share, but registries do not set any.
        self._session = requests.Session()
        self._tokens: dict[tuple[str, ...], str] = {}
        self._basic = False
        # Held while a 401 is answered (a token fetched, or Basic switched on): threads that meet the
        # same challenge at once would otherwise each fetch a token for the same scopes; the later ones
        # find the earlier one's token under the lock and use it (see _authenticate).
        self._auth_lock = threading.Lock()
        # Whether the registry indexes referrers (answers OCI-Subject to a manifest PUT with a subject):
        # None until its first such answer. Held while that first answer is awaited, so that attachments
        # pushed at once learn it from one PUT rather than each sending its own (see put_referrer).
        self._referrers_api: bool | None = None
        self._referrers_lock = threading.Lock()

    # -- blobs ------------------------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: str, for_push: bool = False) -> bool:
        """Whether the blob is in ``repository``. ``for_push`` asks for the push scope right away, so a
        push needs one token, not one for the check and another for the upload."""
        scopes = _push(repository) if for_push else _pull(repository)
        response = self._request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes)
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise self._error(response, f"checking blob {digest[:19]} in {repository}")

    def push_blob(
        self,
        repository: str,
        blob: Blob,
        *,
        mount_from: str | None = None,
        progress: Progress | None = None,
        chunk_size: int = CHUNK_SIZE,
        check: bool = True,
    ) -> str:
        """Make ``blob`` present in ``repository``: ``"exists"``, ``"mounted"`` or ``"uploaded"``.
        ``check=False`` uploads without asking first whether it is there, for a blob that cannot be (one
        round trip fewer); a blob uploaded again is stored once, so a wrong guess costs only the bytes."""
        if check and self.blob_exists(repository, blob.digest, for_push=True):
            _report(progress, blob.size, blob.size)
            return "exists"
        if mount_from and mount_from != repository:
            scopes = _push(repository) + _pull(mount_from)
            response = self._request(
                "POST", f"/v2/{repository}/blobs/uploads/?mount={blob.digest}&from={mount_from}", scopes
            )
            if response.status_code == 201:
                _report(progress, blob.size, blob.size)
                return "mounted"
            if response.status_code == 202:  # declined: an upload session was opened instead
                self._upload(repository, blob, progress, chunk_size, response)
                return "uploaded"
        self._upload(repository, blob, progress, chunk_size)
        return "uploaded"

    def get_blob(self, repository: str, digest: str) -> bytes:
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}", _pull(repository))
        if response.status_code != 200:
            raise self._error(response, f"reading blob {digest[:19]} of {repository}")
        return response.content

    def _upload(
        self,
        repository: str,
        blob: Blob,
        progress: Progress | None,
        chunk_size: int,
        opened: requests.Response | None = None,
        restarted: bool = False,
    ) -> None:
        scopes = _push(repository)
        response = opened or self._request("POST", f"/v2/{repository}/blobs/uploads/", scopes)
        if response.status_code != 202:
            raise self._error(response, f"starting an upload to {repository}")
        location = self._location(response)
        if blob.size <= chunk_size:  # monolithic: the whole blob with the closing PUT
            self._close_upload(location, blob, scopes, body=blob.read(0, blob.size))
            _report(progress, blob.size, blob.size)
            return
        offset = 0
        while offset < blob.size:
            length = min(chunk_size, blob.size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{offset}-{offset + length - 1}",
            }
            patched: requests.Response | None
            chunk = blob.body(offset, length)
            try:
                patched = self._request("PATCH", location, scopes, data=chunk, headers=headers, retries=0)
            except _Unreachable:
                patched = None
            finally:
                if isinstance(chunk, FileSlice):
                    chunk.close()
            if patched is not None and patched.status_code == 202:
                location = self._location(patched)
                offset = _range_end(patched) + 1
            else:  # dropped connection or refused chunk: ask where the registry stands and go on from there
                status = self._request("GET", location, scopes)
                if status.status_code == 404 and not restarted:  # the session is gone: start again once
                    return self._upload(repository, blob, progress, chunk_size, restarted=True)
                if status.status_code != 204:
                    raise self._error(status, f"resuming the upload of {blob.digest[:19]} to {repository}")
                location = self._location(status)
                offset = _range_end(status) + 1
            _report(progress, offset, blob.size)
        self._close_upload(location, blob, scopes, body=b"")

    def _close_upload(self, location: str, blob: Blob, scopes: list[str], body: bytes) -> None:
        separator = "&" if urlparse(location).query else "?"
        response = self._request(
            "PUT",
            f"{location}{separator}digest={blob.digest}",
            scopes,
            data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(body))},
        )
        if response.status_code != 201:
            raise self._error(response, f"finishing the upload of {blob.digest[:19]}")
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != blob.digest:
            raise RegistryError(f"the registry stored {stored} for a blob whose digest is {blob.digest}")

    # -- manifests --------------------------------------------------------------------------------
    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store ``body`` (exact bytes) under a tag or digest; return its digest."""
        return self._put_manifest(repository, reference, body, media_type)[0]

    def put_referrer(self, repository: str, body: bytes, media_type: str) -> bool:
        """Store a manifest that has a ``subject`` by its digest; return whether the registry indexed it
        for the referrers API (it answers ``OCI-Subject``; a registry without the API does not).

        Once this registry has answered without ``OCI-Subject``, this client remembers it has no referrers
        API: later calls store nothing and return False at once, since the caller then stores the same
        manifest under a tag (which makes it readable by its digest too). So a push's later attachments
        take one manifest PUT, not two. Calls made while the first answer is awaited wait for it."""
        if self._referrers_api is False:
            return False
        if self._referrers_api is None:
            with self._referrers_lock:
                if self._referrers_api is None:  # the first: ask, and remember the answer
                    indexed = self._put_referrer(repository, body, media_type)
                    self._referrers_api = indexed
                    return indexed
            if self._referrers_api is False:  # learnt while this call waited
                return False
        return self._put_referrer(repository, body, media_type)

    def _put_referrer(self, repository: str, body: bytes, media_type: str) -> bool:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return bool(self._put_manifest(repository, digest, body, media_type)[1].headers.get("OCI-Subject"))

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]] | None:
        """The descriptors of the manifests whose subject is ``digest`` (of ``artifact_type``), or None
        where the registry has no referrers API (distribution 2.8 answers 404)."""
        query = f"?artifactType={quote(artifact_type, safe='')}" if artifact_type else ""  # its "+" is not a space
        response = self._request(
            "GET", f"/v2/{repository}/referrers/{digest}{query}", _pull(repository), headers={"Accept": OCI_INDEX}
        )
        if response.status_code != 200 or not response.headers.get("Content-Type", "").startswith(OCI_INDEX):
            return None
        found = response.json().get("manifests") or []
        return [m for m in found if artifact_type is None or m.get("artifactType") == artifact_type]

    def _put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> tuple[str, requests.Response]:
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            _push(repository),
            data=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code != 201:
            raise self._error(response, f"storing the manifest {repository}:{reference}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise RegistryError(f"the registry stored manifest {stored}, expected {digest}")
        return digest, response

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The manifest or index bytes and media type of ``repository:reference``."""
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            _pull(repository),
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code != 200:
            raise self._error(response, f"reading the manifest of {repository}:{reference}")
        return response.content, response.headers.get("Content-Type", "").split(";")[0]

    # -- transport --------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        scopes: list[str],
        *,
        retries: int | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else self.base + path
        attempts = (self.retries if retries is None else retries) + 1
        authenticated = False
        attempt = 0
        while True:
            try:
                # credentials go to the registry's own origin only: an upload Location elsewhere gets none
                # (redirects that requests follows drop them on a change of host, port or scheme itself)
                own = _origin(url) == _origin(self.base)
                sent = self._auth(scopes) if own else {}
                if isinstance(kwargs.get("data"), FileSlice):
                    kwargs["data"].seek(0)
                response = self._session.request(
                    method,
                    url,
                    headers={**(headers or {}), **sent},
                    timeout=self.timeout,
                    allow_redirects=method in ("GET", "HEAD"),
                    **kwargs,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                attempt += 1
                if attempt >= attempts:
                    if retries == 0:
                        raise _Unreachable(str(error)) from None
                    raise RegistryError(
                        f"{self.host} did not answer {method} {urlparse(url).path} after {attempts} attempts "
                        f"({type(error).__name__}). Check that the registry is up, then run the push again: "
                        "blobs already uploaded are not sent twice"
                    ) from None
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if response.status_code == 401 and not authenticated:
                authenticated = True
                self._authenticate(response, scopes, sent)
                continue
            if response.status_code in (429, 500, 502, 503, 504) and attempt + 1 < attempts:
                attempt += 1
                time.sleep(_retry_after(response) or self.backoff * 2 ** (attempt - 1))
                continue
            if response.status_code == 401:
                raise self._denied(response, scopes)
            return response

    def _auth(self, scopes: list[str]) -> dict[str, str]:
        token = self._tokens.get(tuple(scopes))
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _authenticate(self, response: requests.Response, scopes: list[str], sent: dict[str, str] | None = None) -> None:
        """Answer the 401 ``response`` to a request for ``scopes``. One thread at a time: if another has
        changed what would be sent for ``scopes`` while this one waited (``sent`` is what this request
        carried), that answer is used, and nothing is fetched again."""
        with self._auth_lock:
            current = self._auth(scopes)
            if current and current != (sent or {}):
                return
            self._answer_challenge(response, scopes)

    def _answer_challenge(self, response: requests.Response, scopes: list[str]) -> None:
        scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if not self.credentials:
                raise RegistryAuthError(
                    f"{self.host} needs a username and password: add them with `docker login {self.host}`, "
                    "to ~/.docker/config.json, or in REGISTRY_USERNAME and REGISTRY_PASSWORD"
                )
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryAuthError(
                f"{self.host} asks for an authentication this client does not know: "
                f"{response.headers.get('WWW-Authenticate')!r}"
            )
        realm = urlparse(params["realm"])
        if self.credentials and realm.scheme != "https" and not (realm.scheme == "http" and is_loopback(realm.netloc)):
            raise RegistryAuthError(
                f"{self.host} names the token server {params['realm']}, which is not https: the credentials for "
                f"{self.host} are not sent there in the clear (only a token server on this machine may use http)"
            )
        query: list[tuple[str, str]] = [("service", params["service"])] if "service" in params else []
        query += [("scope", s) for s in scopes]
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        try:
            answer = self._session.get(params["realm"], params=query, auth=auth, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise RegistryAuthError(
                f"the token server of {self.host} ({params['realm']}) did not answer: {error}"
            ) from None
        if answer.status_code == 401:
            raise RegistryAuthError(
                f"{self.host} refused the username and password for {self.credentials.username if self.credentials else 'anonymous access'}"
                f": {_message(answer)}. Check the credentials in ~/.docker/config.json or REGISTRY_USERNAME/PASSWORD"
            )
        if answer.status_code != 200:
            raise RegistryAuthError(
                f"the token server of {self.host} answered {answer.status_code}: {_message(answer)}"
            )
        body = answer.json()
        self._tokens[tuple(scopes)] = body.get("token") or body.get("access_token")

    def _denied(self, response: requests.Response, scopes: list[str]) -> RegistryAuthError:
        who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
        return RegistryAuthError(
            f"{self.host} refused {who} for {', '.join(scopes)}: {_message(response)}. "
            "Check the credentials (docker login, ~/.docker/config.json, REGISTRY_USERNAME/PASSWORD) and "
            "that they may push to this repository"
        )

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.host} answered {response.status_code} without a Location header")
        return urljoin(self.base + "/", location)

    def _error(self, response: requests.Response, doing: str) -> RegistryError:
        code = None
        try:
            errors = response.json().get("errors") or []
            code = errors[0].get("code") if errors else None
        except ValueError:
            pass
        return RegistryError(f"{self.host} answered {response.status_code} {doing}: {_message(response)}", code)


def run_all(jobs: list[tuple[str, Callable[[], T]]], workers: int = PUSH_THREADS) -> dict[str, T]:
    """Run ``jobs`` (key, call) on up to ``workers`` threads; return each key's result, in the jobs'
    order. The same key twice (a blob named twice) runs once. If a job raises, the jobs not started
    are dropped, those under way are waited for, and the first error (in the jobs' order) is raised."""
    unique = list(dict(jobs).items())
    if len(unique) <= 1 or workers <= 1:
        return {key: call() for key, call in unique}
    with ThreadPoolExecutor(max_workers=min(workers, len(unique)), thread_name_prefix="push") as pool:
        futures = [(key, pool.submit(call)) for key, call in unique]
        wait([f for _, f in futures], return_when=FIRST_EXCEPTION)
        if any(f.done() and f.exception() is not None for _, f in futures):
            for _, future in futures:
                future.cancel()
            wait([f for _, f in futures])  # those under way end before the error is raised
            for _, future in futures:
                if not future.cancelled() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
        return {key: future.result() for key, future in futures}


def registry_for(reference: ImageReference) -> Registry:
    """A client for the reference's registry (http for loopback and private addresses)."""
    return Registry(reference.registry, scheme=reference.scheme)


def _pull(repository: str) -> list[str]:
    return [f"repository:{repository}:pull"]


def _push(repository: str) -> list[str]:
    return [f"repository:{repository}:pull,push"]


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _range_end(response: requests.Response) -> int:
    """The last byte the registry holds, from ``Range: 0-N`` (inclusive)."""
    match = re.match(r"^(?:bytes=)?0-(\d+)$", response.headers.get("Range", ""))
    if not match:
        raise RegistryError(
            f"the registry answered an upload chunk without a valid Range header: {response.headers.get('Range')!r}"
        )
    return int(match.group(1))


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), 30.0) if value.replace(".", "", 1).isdigit() else None


def _origin(url: str) -> tuple[str, str]:
    """Scheme and host:port of a URL, the port made explicit: what "the same origin" compares."""
    parts = urlparse(url)
    return parts.scheme, f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {...}); Bearer is preferred when several are offered."""
    challenges = re.findall(r'(\w+)\s+((?:\w+="[^"]*"\s*,?\s*)+)', header)
    parsed = [(scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))) for scheme, params in challenges]
    for wanted in ("bearer", "basic"):
        for scheme, params in parsed:
            if scheme == wanted:
                return scheme, params
    return parsed[0] if parsed else ("", {})


def _message(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        if errors:
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except ValueError:
        pass
    return response.text.strip()[:300] or response.reason
