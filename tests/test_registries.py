"""The test registries of tests/registries.py, checked against the real docker-registry binary."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registries import PASSWORD, USERNAME, Registry, TokenServer

pytestmark = pytest.mark.integration

BLOB = b"a tiny blob for the test registry\n"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
REPO = "test/tiny"


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry("token", tmp_path / "registry") as reg:
        yield reg


def challenge(response: requests.Response) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate: Bearer realm=…,service=…`` challenge."""
    scheme, _, params = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def get_token(reg: Registry, scopes: list[str], auth: tuple[str, str] | None = None) -> requests.Response:
    """Ask the realm of the registry's challenge for a token, as a client would."""
    params = challenge(requests.get(f"{reg.url}/v2/", timeout=10))
    query = [("service", params["service"])] + [("scope", s) for s in scopes]
    return requests.get(params["realm"], params=query, auth=auth, timeout=10)


def jwt_part(token: str, index: int) -> dict:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def push_blob(reg: Registry, headers: dict[str, str]) -> requests.Response:
    """A monolithic upload: POST, then PUT the bytes to the Location (keeping its ``_state``)."""
    start = requests.post(f"{reg.url}/v2/{REPO}/blobs/uploads/", headers=headers, timeout=10)
    assert start.status_code == 202, start.text
    location = urllib.parse.urljoin(reg.url, start.headers["Location"])
    parts = urllib.parse.urlsplit(location)
    query = urllib.parse.urlencode(urllib.parse.parse_qsl(parts.query) + [("digest", DIGEST)])
    return requests.put(
        parts._replace(query=query).geturl(),
        data=BLOB,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=10,
    )


def head_blob(reg: Registry, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.head(f"{reg.url}/v2/{REPO}/blobs/{DIGEST}", headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("mode", "status", "scheme"), [("none", 200, None), ("basic", 401, "Basic"), ("token", 401, "Bearer")]
)
def test_each_mode_starts_and_answers(tmp_path: Path, mode: str, status: int, scheme: str | None) -> None:
    with Registry(mode, tmp_path / "registry") as reg:  # type: ignore[arg-type]
        assert reg.mode == mode and reg.host == f"127.0.0.1:{reg.port}" and reg.url == f"http://{reg.host}"
        response = requests.get(f"{reg.url}/v2/", timeout=10)
        assert response.status_code == status
        assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        if scheme is None:
            assert "WWW-Authenticate" not in response.headers
            assert reg.username is None and reg.password is None
        else:
            assert response.headers["WWW-Authenticate"].startswith(scheme + " realm=")
            assert (reg.username, reg.password) == (USERNAME, PASSWORD)
        if mode == "token":
            assert reg.token_server is not None
            assert challenge(response) == {"realm": reg.token_server.realm, "service": "test-registry"}
    assert not reg.running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{reg.url}/v2/", timeout=2)


def test_basic_credentials_and_docker_config(tmp_path: Path) -> None:
    with Registry("basic", tmp_path / "registry") as reg:
        assert requests.get(f"{reg.url}/v2/", auth=(USERNAME, PASSWORD), timeout=10).status_code == 200
        assert requests.get(f"{reg.url}/v2/", auth=(USERNAME, "wrong"), timeout=10).status_code == 401

        path = reg.write_docker_config(tmp_path / "docker" / "config.json")
        auth = json.loads(path.read_text())["auths"][reg.host]["auth"]
        assert base64.b64decode(auth).decode() == f"{USERNAME}:{PASSWORD}"
        response = requests.get(f"{reg.url}/v2/", headers={"Authorization": f"Basic {auth}"}, timeout=10)
        assert response.status_code == 200
        assert push_blob(reg, {"Authorization": f"Basic {auth}"}).status_code == 201


def test_token_flow_by_hand(token_registry: Registry) -> None:
    response = get_token(token_registry, [f"repository:{REPO}:pull"], auth=(USERNAME, PASSWORD))
    assert response.status_code == 200
    token = response.json()["token"]
    assert jwt_part(token, 0)["alg"] == "RS256" and jwt_part(token, 0)["x5c"]
    assert jwt_part(token, 1)["access"] == [{"type": "repository", "name": REPO, "actions": ["pull"]}]

    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{token_registry.url}/v2/", headers=bearer, timeout=10).status_code == 200

    other_key = TokenServer(token_registry.workdir / "other.crt")  # a token the registry can't verify
    try:
        forged = {"Authorization": f"Bearer {other_key.sign(USERNAME, [])}"}
        assert requests.get(f"{token_registry.url}/v2/", headers=forged, timeout=10).status_code == 401
    finally:
        other_key.stop()


def test_token_push_and_pull_scopes(token_registry: Registry) -> None:
    pushing = get_token(token_registry, [f"repository:{REPO}:pull,push"], auth=(USERNAME, PASSWORD))
    bearer = {"Authorization": f"Bearer {pushing.json()['token']}"}
    assert push_blob(token_registry, bearer).status_code == 201
    assert head_blob(token_registry, bearer).status_code == 200
    assert head_blob(token_registry, bearer).headers["Docker-Content-Digest"] == DIGEST

    anonymous = get_token(token_registry, [f"repository:{REPO}:pull,push"]).json()["token"]
    assert jwt_part(anonymous, 1)["access"] == [{"type": "repository", "name": REPO, "actions": ["pull"]}]
    anonymous_bearer = {"Authorization": f"Bearer {anonymous}"}
    assert head_blob(token_registry, anonymous_bearer).status_code == 200
    upload = requests.post(f"{token_registry.url}/v2/{REPO}/blobs/uploads/", headers=anonymous_bearer, timeout=10)
    assert upload.status_code == 401
    assert head_blob(token_registry).status_code == 401


def test_token_server_takes_several_scopes(token_registry: Registry) -> None:
    scopes = ["repository:a/one:pull", "repository:b/two:pull,push repository:c/three:*"]
    token = get_token(token_registry, scopes, auth=(USERNAME, PASSWORD)).json()["token"]
    assert jwt_part(token, 1)["access"] == [
        {"type": "repository", "name": "a/one", "actions": ["pull"]},
        {"type": "repository", "name": "b/two", "actions": ["pull", "push"]},
        {"type": "repository", "name": "c/three", "actions": ["*"]},
    ]
    assert token_registry.token_server is not None
    assert [grant["subject"] for grant in token_registry.token_server.issued] == [USERNAME]


def test_token_server_refuses_a_wrong_password(token_registry: Registry) -> None:
    assert get_token(token_registry, [f"repository:{REPO}:pull"], auth=(USERNAME, "wrong")).status_code == 401
    assert get_token(token_registry, [f"repository:{REPO}:pull"], auth=("someone", PASSWORD)).status_code == 401


def test_kill_and_restart_keep_the_storage(tmp_path: Path) -> None:
    with Registry("basic", tmp_path / "registry") as reg:
        auth = {"Authorization": "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()}
        assert push_blob(reg, auth).status_code == 201

        reg.kill()
        assert not reg.running
        with pytest.raises(requests.ConnectionError):
            head_blob(reg, auth)

        reg.restart()
        assert reg.running and reg.host == f"127.0.0.1:{reg.port}"
        assert head_blob(reg, auth).status_code == 200
        assert any(reg.data_dir.rglob("data"))
