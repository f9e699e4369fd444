"""Kubernetes manifests of several versions in one server (kubernetes.py with canary=, shadow=,
sticky_header=): valid against Kubernetes' schemas, the canaries' bundles copied into the pod from their
own images by init containers, and a pod run under Docker as the manifest says, answering from both
versions."""

from __future__ import annotations

import pytest
import requests
from click.testing import CliRunner
from registries import free_port
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from test_kubernetes import containers, pod_spec, probe_url, run_as_the_pod_would, validate

import notebook_deploy as nd
from notebook_deploy.cli import cli
from notebook_deploy.errors import KubernetesError
from notebook_deploy.serving.router import VERSION_HEADER

IMAGE = "registry.example.com/models/blooms:prod"
CANARY_IMAGE = "registry.example.com/models/blooms:canary"
SHADOW_IMAGE = "registry.example.com/models/blooms:shadow"


@pytest.fixture(scope="module")
def blooms(iris, tmp_path_factory):
    """Three versions of "blooms" (stable, canary, shadow) in a store of this module's own."""
    X, y = iris
    store = nd.Store(tmp_path_factory.mktemp("versions-store"))
    stable = nd.capture(
        RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), name="blooms", sample=X[:5], store=store
    )
    canary = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="blooms", sample=X[:5], store=store)
    shadow = nd.capture(
        RandomForestClassifier(n_estimators=2, random_state=3).fit(X, y), name="blooms", sample=X[:5], store=store
    )
    return store, stable, canary, shadow


def _manifests(blooms, **options):
    store, stable, canary, shadow = blooms
    return nd.kubernetes_manifests(
        stable,
        IMAGE,
        store=store,
        canary=[f"{canary.ref}=10"],
        shadow=[shadow.ref],
        sticky_header="X-User",
        version_images={canary.ref: CANARY_IMAGE, shadow.ref: SHADOW_IMAGE},
        **options,
    )


def test_one_deployment_serves_every_version_copied_from_its_image(blooms):
    _, stable, canary, shadow = blooms
    manifests = _manifests(blooms)
    assert [m["kind"] for m in manifests] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for manifest in manifests:
        validate(manifest)
    deployment = manifests[0]
    (server,) = containers(deployment)
    assert server["image"] == IMAGE
    assert server["command"] == ["python3", "-m", "notebook_deploy", "serve", "/opt/bundle", "--host", "0.0.0.0"]
    assert server["args"] == [
        "--canary", f"/opt/versions/{canary.version}=10",
        "--shadow", f"/opt/versions/{shadow.version}",
        "--sticky-header", "X-User",
    ]  # fmt: skip
    assert {"name": "versions", "mountPath": "/opt/versions", "readOnly": True} in server["volumeMounts"]
    spec = pod_spec(deployment)
    assert {"name": "versions", "emptyDir": {}} in spec["volumes"]
    copies = spec["initContainers"]
    assert [c["image"] for c in copies] == [CANARY_IMAGE, SHADOW_IMAGE]
    assert [c["command"][-2:] for c in copies] == [
        ["/opt/bundle", f"/opt/versions/{canary.version}"],
        ["/opt/bundle", f"/opt/versions/{shadow.version}"],
    ]
    for copy in copies:  # as locked down as the server
        assert copy["securityContext"] == server["securityContext"]
        assert copy["volumeMounts"] == [{"name": "versions", "mountPath": "/opt/versions"}]


def test_without_canary_or_shadow_the_manifests_are_unchanged(blooms):
    store, stable, _, _ = blooms
    plain = nd.kubernetes_manifests(stable, IMAGE, store=store)
    assert "args" not in containers(plain[0])[0] and "initContainers" not in pod_spec(plain[0])
    assert [v["name"] for v in pod_spec(plain[0])["volumes"]] == ["tmp"]


@pytest.mark.parametrize(
    ("options", "option", "message"),
    [
        ({"version_images": {}}, "version_images", "no image given for blooms:"),
        ({"kserve": True}, "kserve", "canaryTrafficPercent"),
    ],
)
def test_what_several_versions_cannot_take_is_refused_naming_the_option(blooms, options, option, message):
    store, stable, canary, shadow = blooms
    arguments = {
        "canary": [f"{canary.ref}=10"],
        "version_images": {canary.ref: CANARY_IMAGE},
        **options,
    }
    with pytest.raises(KubernetesError, match=message) as raised:
        nd.kubernetes_manifests(stable, IMAGE, store=store, **arguments)
    assert raised.value.option == option


def test_several_versions_serve_grpc_on_the_port_given(blooms):
    store, stable, canary, _ = blooms
    arguments = {"canary": [f"{canary.ref}=10"], "version_images": {canary.ref: CANARY_IMAGE}}
    deployment = nd.kubernetes_manifests(stable, IMAGE, store=store, grpc_port=9000, **arguments)[0]
    (server,) = containers(deployment)
    assert {"name": "grpc", "containerPort": 9000, "protocol": "TCP"} in server["ports"]
    assert server["args"] == ["--canary", f"/opt/versions/{canary.version}=10"]


def test_the_serve_checks_apply(blooms, forest_bundle, session_store):
    store, stable, canary, _ = blooms
    with pytest.raises(KubernetesError) as raised:
        nd.kubernetes_manifests(stable, IMAGE, store=store, canary=[f"{canary.ref}=150"])
    assert raised.value.option == "canary" and "from 0 to 100" in raised.value.reason
    with pytest.raises(KubernetesError) as raised:
        nd.kubernetes_manifests(stable, IMAGE, store=store, sticky_header="X-User")
    assert raised.value.option == "sticky_header"


def test_the_cli_takes_the_options_of_serve(blooms):
    store, stable, canary, shadow = blooms
    arguments = ["--store", str(store.root), "k8s", stable.ref, "--image", IMAGE, "--canary", f"{canary.ref}=10"]
    arguments += ["--shadow", shadow.ref, "--sticky-header", "X-User"]
    images = ["--version-image", f"{canary.ref}={CANARY_IMAGE}", "--version-image", f"{shadow.ref}={SHADOW_IMAGE}"]
    done = CliRunner().invoke(cli, [*arguments, *images])
    assert done.exit_code == 0, done.output
    import yaml

    assert list(yaml.safe_load_all(done.output)) == _manifests(blooms)
    missing = CliRunner().invoke(cli, arguments)
    assert missing.exit_code == 2 and "Invalid value for '--version-image'" in missing.output
    assert f"pass {shadow.ref}=IMAGE" in missing.output or f"pass {canary.ref}=IMAGE" in missing.output
    bad = CliRunner().invoke(cli, [*arguments, "--version-image", "nothing"])
    assert bad.exit_code == 2 and "is not REF=IMAGE" in bad.output
    for command in ("serve", "k8s", "ray"):  # the same options, declared once
        shown = CliRunner().invoke(cli, [command, "--help"]).output
        assert "--canary REF=PERCENT" in shown and "--shadow REF" in shown and "--sticky-header NAME" in shown


@pytest.mark.integration
def test_a_pod_run_as_the_manifest_says_serves_both_versions(blooms, engine, tmp_path, iris):
    """The init container copies the canary's bundle out of its image into the shared folder (an emptyDir:
    world-writable, as Kubernetes makes it), then the server, from the stable version's image, serves both."""
    registry, docker, base = engine
    store, stable, canary, _ = blooms
    images = {}
    for role, bundle in (("prod", stable), ("canary", canary)):
        tar = nd.export_image(bundle, tmp_path / f"{role}.tar", name=f"models/blooms:{role}", base=base)
        docker.docker("load", "-i", str(tar))
        images[role] = f"models/blooms:{role}"
    (deployment, *_) = nd.kubernetes_manifests(
        stable,
        images["prod"],
        store=store,
        port=free_port(),
        canary=[f"{canary.ref}=50"],
        sticky_header="X-User",
        version_images={canary.ref: images["canary"]},
    )
    versions = tmp_path / "versions"
    versions.mkdir(mode=0o1777)
    versions.chmod(0o1777)
    (copy,) = pod_spec(deployment)["initContainers"]
    security = copy["securityContext"]
    docker.docker(
        "run", "--rm", "--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--read-only",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{versions}:{copy['volumeMounts'][0]['mountPath']}",
        "--entrypoint", copy["command"][0], copy["image"], *copy["command"][1:],
    )  # fmt: skip
    assert (versions / canary.version / "bundle.json").is_file()
    (server,) = containers(deployment)
    name = run_as_the_pod_would(docker, images["prod"], deployment, {}, {"versions": versions})
    try:
        docker.wait_until_answers(name, probe_url(server, "readinessProbe"))
        base_url = probe_url(server, "livenessProbe").removesuffix("/healthz")
        rows = iris[0][50:52].tolist()
        expected = {stable.ref: stable.predict(rows).tolist(), canary.ref: canary.predict(rows).tolist()}
        reached: dict[str, set[str]] = {}
        for user in range(30):
            answer = requests.post(
                f"{base_url}/predict", json={"instances": rows}, headers={"X-User": f"user-{user}"}, timeout=30
            )
            version = answer.headers[VERSION_HEADER]
            assert answer.json() == {"predictions": expected[version]}
            reached.setdefault(f"user-{user}", set()).add(version)
        assert set().union(*reached.values()) == {stable.ref, canary.ref}
    finally:
        docker.docker("rm", "-f", name, check=False)
