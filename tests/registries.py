"""Real container registries for tests: Debian's ``docker-registry`` (distribution 2.8) on loopback.

    with Registry("token", tmp_path / "registry") as reg:
        reg.host                     # "127.0.0.1:PORT"
        reg.write_docker_config(tmp_path / "docker" / "config.json")

Modes: ``"none"`` (no auth), ``"basic"`` (htpasswd, bcrypt) and ``"token"`` (Bearer tokens from a
token server of our own, run in a thread of the test process). ``scripts/install-test-deps.sh``
installs the binaries.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

Mode = Literal["none", "basic", "token"]

USERNAME = "tester"
PASSWORD = "s3cret-pass"
SERVICE = "test-registry"
ISSUER = "test-issuer"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _need(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise RuntimeError(f"{command} is not installed: run `bash scripts/install-test-deps.sh` as root")
    return path


class TokenServer:
    """A Docker token server (``GET /token``) on 127.0.0.1, serving from a daemon thread.

    It grants every requested action to ``USERNAME:PASSWORD``, only ``pull`` to anonymous callers,
    and answers 401 to any other credentials. ``issued`` records each grant.
    """

    def __init__(self, cert_path: Path, *, service: str = SERVICE, issuer: str = ISSUER) -> None:
        self.service = service
        self.issuer = issuer
        self.cert_path = cert_path
        self.issued: list[dict[str, Any]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert_der = self._write_certificate(cert_path)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
        self._server.daemon_threads = True
        self._server.token_server = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def _write_certificate(self, path: Path) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-token-issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert.public_bytes(serialization.Encoding.DER)

    def sign(self, subject: str, access: list[dict[str, Any]], ttl: int = 300) -> str:
        """An RS256 JWT for ``subject`` with these ``access`` claims, as the registry expects."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + ttl,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def parse_scopes(values: list[str]) -> list[dict[str, Any]]:
    """``repository:NAME:pull,push`` scopes (several params, or space-separated) as access claims."""
    access = []
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if not kind or not name:
                raise ValueError(f"bad scope {scope!r}")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
    return access


class _TokenHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        tokens: TokenServer = self.server.token_server  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path != "/token":
            return self._answer(404, {"error": "not found"})
        if query.get("service", [tokens.service]) != [tokens.service]:
            return self._answer(400, {"error": f"unknown service {query['service']}"})
        try:
            access = parse_scopes(query.get("scope", []))
        except ValueError as exc:
            return self._answer(400, {"error": str(exc)})

        subject = ""
        header = self.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user = password = ""
            if scheme.lower() != "basic" or (user, password) != (USERNAME, PASSWORD):
                return self._answer(401, {"error": "invalid credentials"}, {"WWW-Authenticate": 'Basic realm="token"'})
            subject = user
        else:
            for claim in access:
                claim["actions"] = [a for a in claim["actions"] if a == "pull"]

        token = tokens.sign(subject, access)
        tokens.issued.append({"subject": subject, "access": access})
        issued_at = dt.datetime.now(dt.timezone.utc).isoformat()
        self._answer(200, {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued_at})

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


class Service:
    """A process a test starts and stops: ``with`` starts it, and stops it even if starting failed."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Registry(Service):
    """A ``docker-registry serve`` child process on a free 127.0.0.1 port, in one auth mode.

    ``workdir`` holds the config, storage (``data_dir``), log and auth files; a temporary folder,
    removed on exit, when not given. Use as a context manager, or call ``start()``/``stop()``.
    """

    def __init__(self, mode: Mode = "none", workdir: Path | None = None, *, timeout: float = 20.0) -> None:
        if mode not in ("none", "basic", "token"):
            raise ValueError(f"unknown registry mode {mode!r}")
        self.mode: Mode = mode
        self.timeout = timeout
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="registry-")) if workdir is None else Path(workdir)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.username: str | None = None if mode == "none" else USERNAME
        self.password: str | None = None if mode == "none" else PASSWORD
        self.token_server: TokenServer | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the config (and auth files), start the registry and wait until it answers."""
        binary = _need("docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        self._launch(binary)

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            # a fixed secret keeps upload `_state` valid across restart()
            "http": {"addr": self.host, "secret": "registries-py-test-secret"},
        }
        if self.mode == "basic":
            htpasswd = self.workdir / "htpasswd"
            line = subprocess.run(
                [_need("htpasswd"), "-Bbn", USERNAME, PASSWORD], check=True, capture_output=True, text=True
            ).stdout
            htpasswd.write_text(line.strip() + "\n")
            config["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
        elif self.mode == "token":
            if self.token_server is None:
                self.token_server = TokenServer(self.workdir / "token.crt")
            config["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(self.token_server.cert_path),
                }
            }
        return config

    def _launch(self, binary: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}  # no config overrides
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return
            except requests.RequestException:  # not listening yet (or someone else is)
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"docker-registry did not answer within {self.timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Stop the registry abruptly (SIGKILL); storage and the token server stay."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def restart(self) -> None:
        """Start the registry again on the same port, config and storage (after ``kill()``)."""
        self.kill()
        self._launch(_need("docker-registry"))

    def stop(self) -> None:
        """Stop the registry and token server; remove ``workdir`` if it was a temporary one."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def write_docker_config(self, path: Path, username: str | None = None, password: str | None = None) -> Path:
        """Write a Docker ``config.json`` with an ``auths`` entry for ``host``; return its path.

        ``path`` is the file (parents are made), or an existing folder to put ``config.json`` in.
        Credentials default to this registry's; with none (mode ``"none"``) ``auths`` is empty.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        username = username if username is not None else self.username
        password = password if password is not None else self.password
        auths = {}
        if username is not None:
            auths[self.host] = {"auth": base64.b64encode(f"{username}:{password or ''}".encode()).decode()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": auths}, indent=2))
        return path


class ReferrersProxy(Service):
    """A stand-in for a registry with the OCI referrers API, because none that runs here has it
    (distribution 2.8 has not): an HTTP proxy on 127.0.0.1 in front of a real ``Registry`` that
    forwards every request to it, and adds what distribution-spec 1.1 asks of a registry with the API:
    a manifest PUT with a ``subject`` is answered with ``OCI-Subject`` and listed by
    ``GET /v2/<name>/referrers/<digest>`` (an OCI index, filtered by ``?artifactType=``).
    """

    def __init__(self, upstream: Registry) -> None:
        self.upstream = upstream
        self.referrers: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.host = ""

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="referrers-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ProxyHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        proxy: ReferrersProxy = self.server.proxy  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")
        if self.command == "GET" and len(parts) > 4 and parts[-2] == "referrers":
            name = "/".join(parts[2:-2])
            wanted = urllib.parse.parse_qs(url.query).get("artifactType", [None])[0]
            found = [
                d
                for d in proxy.referrers.get((name, parts[-1]), [])
                if wanted is None or d.get("artifactType") == wanted
            ]
            body = json.dumps(
                {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": found}
            ).encode()
            headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
            if wanted is not None:
                headers["OCI-Filters-Applied"] = "artifactType"
            return self._answer(200, body, headers)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
        response = requests.request(
            self.command,
            f"{proxy.upstream.url}{self.path}",
            data=data,
            headers=headers,
            allow_redirects=False,
            timeout=60,
        )
        extra = {}
        if self.command == "PUT" and "/manifests/" in url.path and response.status_code == 201 and data:
            manifest = json.loads(data)
            if "subject" in manifest:
                name = url.path[len("/v2/") : url.path.index("/manifests/")]
                descriptor = {
                    "mediaType": manifest.get("mediaType"),
                    "size": len(data),
                    "digest": response.headers["Docker-Content-Digest"],
                    "artifactType": manifest.get("artifactType") or manifest["config"]["mediaType"],
                }
                listed = proxy.referrers.setdefault((name, manifest["subject"]["digest"]), [])
                if descriptor not in listed:
                    listed.append(descriptor)
                extra["OCI-Subject"] = manifest["subject"]["digest"]
        skip = ("content-length", "connection", "transfer-encoding", "content-encoding")
        self._answer(
            response.status_code,
            b"" if self.command == "HEAD" else response.content,
            {**{k: v for k, v in response.headers.items() if k.lower() not in skip}, **extra},
            length=int(response.headers.get("Content-Length") or len(response.content)),
        )

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def _answer(self, status: int, body: bytes, headers: dict[str, str], length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
