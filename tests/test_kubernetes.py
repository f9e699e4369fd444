"""Kubernetes manifests: valid against Kubernetes' own schemas (kubernetes-validate, offline), read by the
server as written, and, under a real Docker engine, a container run as the Deployment says answers its probes.

kubernetes-validate has no schema for KServe's InferenceService (a custom resource): its pod part is
validated as a core PodSpec, and the rest against INFERENCE_SERVICE below, a schema written from KServe's
documented v1beta1 fields (ComponentExtensionSpec, and what a custom predictor may hold under Knative).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml
from click.testing import CliRunner
from registries import free_port

import notebook_deploy as nd
from notebook_deploy.cli import cli
from notebook_deploy.errors import KubernetesError
from notebook_deploy.keys import KeyStore
from notebook_deploy.kubernetes import manifests_yaml, write_manifests

KUBERNETES_VERSION = "1.30.0"
IMAGE = "registry.example.com/models/forest:1"
# The fields of a KServe v1beta1 predictor that are not a PodSpec's (ComponentExtensionSpec).
EXTENSION_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
INFERENCE_SERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": _STRINGS,
                "annotations": _STRINGS,
            },
        },
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {
                "predictor": {
                    "type": "object",
                    "required": ["containers"],
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "labels": _STRINGS,
                        "annotations": _STRINGS,
                        # a custom predictor: one container, named as KServe expects, speaking the protocol in
                        # $PROTOCOL; Knative allows one port, named http1 or h2c, and sets $PORT itself
                        "containers": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "image", "env"],
                                "properties": {
                                    "name": {"const": "kserve-container"},
                                    "ports": {
                                        "type": "array",
                                        "maxItems": 1,
                                        "items": {"properties": {"name": {"enum": ["http1", "h2c"]}}},
                                    },
                                    "env": {
                                        "type": "array",
                                        "contains": {
                                            "properties": {"name": {"const": "PROTOCOL"}, "value": {"const": "v2"}},
                                            "required": ["name", "value"],
                                        },
                                        "items": {"properties": {"name": {"not": {"const": "PORT"}}}},
                                    },
                                },
                                "not": {"required": ["lifecycle"]},  # Knative refuses container lifecycle hooks
                            },
                        },
                    },
                },
            },
        },
    },
}
OPTION_SETS = {
    "defaults": {},
    "api keys": {"api_keys_secret": "forest-keys"},
    "namespace and sizes": {
        "namespace": "models",
        "replicas": 3,
        "cpu": "1",
        "memory": "1Gi",
        "cpu_limit": "2",
        "memory_limit": "1.5Gi",
        "min_replicas": 2,
        "max_replicas": 6,
        "target_cpu_utilization": 60,
    },
    "server options": {"workers": 2, "max_batch_size": 32, "batching": False, "grpc_port": 8001, "port": 9000},
    "kserve": {"kserve": True},
    "gpus": {"gpus": 1},
    "kserve with gpus": {"kserve": True, "gpus": 2},
    "kserve with keys": {"kserve": True, "api_keys_secret": "forest-keys", "namespace": "models"},
}


def validate(manifest: dict[str, Any]) -> None:
    """Validate against Kubernetes' schemas (strict: no unknown field), or KServe's for an InferenceService."""
    if manifest["kind"] != "InferenceService":
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return
    jsonschema.validate(manifest, INFERENCE_SERVICE)
    predictor = manifest["spec"]["predictor"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": manifest["metadata"]["name"]},
        "spec": {k: v for k, v in predictor.items() if k not in EXTENSION_FIELDS},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]
    return (
        spec["template"]["spec"]["containers"] if manifest["kind"] == "Deployment" else spec["predictor"]["containers"]
    )


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"] if manifest["kind"] == "Deployment" else manifest["spec"]["predictor"]


def environment(container: dict[str, Any]) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container["env"]}


def test_the_validation_here_catches_mistakes(forest_bundle):
    deployment, _, _ = nd.kubernetes_manifests(forest_bundle, IMAGE)
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    (service,) = nd.kubernetes_manifests(forest_bundle, IMAGE, kserve=True)
    service["spec"]["predictor"]["containers"][0]["env"].append({"name": "PORT", "value": "1"})
    with pytest.raises(jsonschema.ValidationError):
        validate(service)


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_manifest_is_valid(forest_bundle, options):
    manifests = nd.kubernetes_manifests(forest_bundle, IMAGE, **options)
    expected = ["InferenceService"] if options.get("kserve") else ["Deployment", "Service", "HorizontalPodAutoscaler"]
    assert [m["kind"] for m in manifests] == expected
    for manifest in manifests:
        validate(manifest)
        assert manifest["metadata"]["name"] == "forest"
        assert manifest["metadata"].get("namespace") == options.get("namespace")
        assert manifest["metadata"]["labels"] == {
            "app.kubernetes.io/name": "forest",
            "app.kubernetes.io/version": forest_bundle.version,
            "app.kubernetes.io/managed-by": "notebook-deploy",
        }
        assert manifest["metadata"]["annotations"] == {"notebook-deploy.io/bundle": forest_bundle.ref}
    assert list(yaml.safe_load_all(manifests_yaml(manifests))) == manifests


def test_the_deployment_runs_the_image_safely_with_probes_on_the_health_routes(forest_bundle):
    deployment, service, autoscaler = nd.kubernetes_manifests(forest_bundle, IMAGE, cpu="250m", memory="256Mi")
    (container,) = containers(deployment)
    assert container["image"] == IMAGE
    assert container["command"] == ["python3", "-m", "notebook_deploy", "serve", "/opt/bundle", "--host", "0.0.0.0"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert environment(container) == {"PORT": "8000", "NOTEBOOK_DEPLOY_AUDIT_LOG": "/tmp/audit.log"}
    assert deployment["spec"]["replicas"] == 2
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "forest"}
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (2, 10)
    assert autoscaler["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


@pytest.mark.parametrize("kserve", [False, True], ids=["deployment", "kserve"])
def test_the_api_keys_secret_is_mounted_as_the_key_file_and_keys_are_required(forest_bundle, kserve):
    (first, *_) = nd.kubernetes_manifests(forest_bundle, IMAGE, api_keys_secret="forest-keys", kserve=kserve)
    (container,) = containers(first)
    variables = environment(container)
    assert variables["NOTEBOOK_DEPLOY_AUTH"] == "true"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert variables["NOTEBOOK_DEPLOY_KEYS_FILE"] == f"{mount['mountPath']}/keys.json" and mount["readOnly"]
    assert "subPath" not in mount  # a subPath mount would not see the Secret change
    volume = next(v for v in pod_spec(first)["volumes"] if v["name"] == "api-keys")
    assert volume["secret"] == {
        "secretName": "forest-keys",
        "defaultMode": 0o444,
        "items": [{"key": "keys.json", "path": "keys.json"}],
    }


def test_the_inference_service_is_a_v2_custom_predictor_of_the_same_image(forest_bundle):
    (service,) = nd.kubernetes_manifests(forest_bundle, IMAGE, kserve=True, min_replicas=1, max_replicas=4)
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    deployment_container = containers(nd.kubernetes_manifests(forest_bundle, IMAGE)[0])[0]
    assert container["image"] == IMAGE and container["command"] == deployment_container["command"]
    assert environment(container)["PROTOCOL"] == "v2" and "PORT" not in environment(container)
    assert container["ports"] == [{"name": "http1", "containerPort": 8000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8000}
    assert container["securityContext"] == deployment_container["securityContext"]
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleMetric"], predictor["scaleTarget"]) == (
        1,
        4,
        "cpu",
        70,
    )


def test_the_server_reads_the_options_the_manifests_set(forest_bundle, monkeypatch):
    options = {
        "workers": 3,
        "batching": False,
        "max_batch_size": 16,
        "max_batch_wait_ms": 5,
        "max_queue": 100,
        "grpc_port": 8001,
        "max_body_bytes": 2048,
        "drift_window": 50,
        "drift_threshold": 0.3,
        "prediction_log": "/tmp/predictions.jsonl",
        "prediction_log_sample": 0.5,
    }
    deployment = nd.kubernetes_manifests(forest_bundle, IMAGE, api_keys_secret="forest-keys", port=9000, **options)[0]
    seen = {}
    monkeypatch.setattr(
        "notebook_deploy.serving.runner.run",
        lambda bundle, host, port, settings, **kwargs: seen.update(port=port, settings=settings),
    )
    variables = environment(containers(deployment)[0])
    result = CliRunner().invoke(cli, ["serve", str(forest_bundle.path)], env=variables)
    assert result.exit_code == 0, result.output
    assert seen["port"] == 9000
    settings = seen["settings"]
    assert {name: getattr(settings, name) for name in options} == options
    assert (settings.auth, settings.keys_file, settings.audit_log) == (
        True,
        "/etc/notebook-deploy/keys/keys.json",
        "/tmp/audit.log",
    )


def test_arguments_from_settings_win_over_the_environment_where_they_set_a_value(forest_bundle, monkeypatch):
    """What notebook_deploy.serve passes its child (ServeSettings.arguments) is not overridden by the
    $NOTEBOOK_DEPLOY_* variables the child inherits; what it leaves unset still comes from them."""
    seen = {}
    monkeypatch.setattr(
        "notebook_deploy.serving.runner.run",
        lambda bundle, host, port, settings, **kwargs: seen.update(settings=settings),
    )
    given = nd.ServeSettings(workers=1, debug_errors=False)
    result = CliRunner().invoke(
        cli,
        ["serve", str(forest_bundle.path), *given.arguments()],
        env={
            "NOTEBOOK_DEPLOY_WORKERS": "4",
            "NOTEBOOK_DEPLOY_DEBUG_ERRORS": "true",
            "NOTEBOOK_DEPLOY_AUDIT_LOG": "/tmp/a.log",
        },
    )
    assert result.exit_code == 0, result.output
    assert (seen["settings"].workers, seen["settings"].debug_errors) == (1, False)
    assert seen["settings"].audit_log == "/tmp/a.log"


def test_the_serve_help_names_the_environment_variables():
    text = " ".join(CliRunner().invoke(cli, ["serve", "--help"]).output.split())
    for variable in (
        "NOTEBOOK_DEPLOY_WORKERS",
        "NOTEBOOK_DEPLOY_AUTH",
        "NOTEBOOK_DEPLOY_KEYS_FILE",
        "NOTEBOOK_DEPLOY_MAX_BATCH_SIZE",
    ):
        assert f"env var: {variable}" in text


@pytest.mark.parametrize(
    "options, option, message",
    [
        ({"replicas": 0}, "replicas", "at least 1"),
        ({"min_replicas": 5, "max_replicas": 3}, "min_replicas", "more than the maximum"),
        ({"cpu": "lots"}, "cpu", "not a Kubernetes quantity"),
        ({"memory_limit": "1 GB"}, "memory_limit", "not a Kubernetes quantity"),
        ({"name": "Forest_1"}, "name", "lower case"),
        ({"namespace": "a.b"}, "namespace", "namespace"),
        ({"port": 70000}, "port", "65535"),
        ({"workers": 0}, "workers", "at least 1"),
        ({"prediction_log": "logs/p.jsonl"}, "prediction_log", "absolute path inside the container"),
        ({"tls_cert": "/etc/cert.pem"}, "tls_cert", "not an option the server reads from its environment"),
        ({"kserve": True, "grpc_port": 8001}, "grpc_port", "one port"),
        ({"grpc_port": 8000}, "grpc_port", "other than port"),
    ],
)
def test_bad_options_are_refused_naming_the_option(forest_bundle, options, option, message):
    with pytest.raises(KubernetesError, match=message) as raised:
        nd.kubernetes_manifests(forest_bundle, IMAGE, **options)
    assert raised.value.option == option


def k8s(store: nd.Store, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["--store", str(store.root), "k8s", *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_the_cli_writes_one_yaml_stream_of_the_same_manifests(session_store, forest_bundle):
    result = k8s(
        session_store,
        "forest",
        "--image",
        IMAGE,
        "--api-keys-secret",
        "forest-keys",
        "--namespace",
        "models",
        "--replicas",
        "3",
        "--cpu",
        "1",
        "--set",
        "workers=2",
        "--set",
        "max-batch-size=32",
    )
    expected = nd.kubernetes_manifests(
        "forest",
        IMAGE,
        store=session_store,
        api_keys_secret="forest-keys",
        namespace="models",
        replicas=3,
        cpu="1",
        workers=2,
        max_batch_size=32,
    )
    assert list(yaml.safe_load_all(result.output)) == expected
    kserve = k8s(session_store, "forest", "--image", IMAGE, "--kserve")
    assert list(yaml.safe_load_all(kserve.output)) == nd.kubernetes_manifests(
        "forest", IMAGE, store=session_store, kserve=True
    )


def test_the_cli_writes_one_file_per_manifest_into_a_folder(session_store, forest_bundle, tmp_path):
    result = k8s(session_store, "forest", "--image", IMAGE, "-o", str(tmp_path / "k8s"))
    files = sorted((tmp_path / "k8s").iterdir())
    assert [f.name for f in files] == [
        "forest-deployment.yaml",
        "forest-horizontalpodautoscaler.yaml",
        "forest-service.yaml",
    ]
    assert sorted(result.output.split()) == [str(f) for f in files]
    expected = {m["kind"]: m for m in nd.kubernetes_manifests("forest", IMAGE, store=session_store)}
    for path in files:
        manifest = yaml.safe_load(path.read_text())
        assert manifest == expected[manifest["kind"]]
        validate(manifest)


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["--replicas", "0"], "'--replicas'", "at least 1"),
        (["--min-replicas", "5", "--max-replicas", "3"], "'--min-replicas'", "more than the maximum"),
        (["--cpu", "lots"], "'--cpu'", "'lots' is not a Kubernetes quantity"),
        (["--target-cpu", "0"], "'--target-cpu'", "at least 1"),
        (["--set", "workers=0"], "'--set workers'", "at least 1"),
        (["--set", "workers"], "'--set'", "OPTION=VALUE"),
        (["--set", "replicas=3"], "'--set'", "replicas is an argument of this command"),  # was a TypeError
    ],
)
def test_the_cli_names_the_bad_option(session_store, forest_bundle, args, option, message):
    result = k8s(session_store, "forest", "--image", IMAGE, *args, ok=False)
    assert result.exit_code == 2
    assert f"Invalid value for {option}" in result.output and message in result.output


def test_write_manifests_returns_the_paths_in_order(forest_bundle, tmp_path):
    manifests = nd.kubernetes_manifests(forest_bundle, IMAGE, kserve=True)
    assert write_manifests(manifests, tmp_path) == [tmp_path / "forest-inferenceservice.yaml"]


# -- under a real Docker engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forest_image(engine, forest_bundle, tmp_path_factory):
    """The forest bundle's image, built on the test base and loaded into the engine's daemon."""
    registry, docker, base = engine
    tar = nd.export_image(
        forest_bundle, tmp_path_factory.mktemp("image") / "forest.tar", name="models/forest:k8s", base=base
    )
    docker.docker("load", "-i", str(tar))
    return docker, "models/forest:k8s"


def run_as_the_pod_would(
    docker, image: str, manifest: dict[str, Any], secrets: dict[str, Path], shared: dict[str, Path] | None = None
) -> str:
    """Run the manifest's container under Docker with its command, environment, port, user and security
    settings (read-only root, no capabilities, no privilege escalation, the default seccomp profile); an
    emptyDir becomes a tmpfs, or the folder ``shared`` gives for it (one its init containers filled), a
    Secret volume the folder ``secrets`` gives for it. Returns the name."""
    (container,) = containers(manifest)
    volumes = {volume["name"]: volume for volume in pod_spec(manifest)["volumes"]}
    security = container["securityContext"]
    name = f"nd-k8s-{os.getpid()}-{time.monotonic_ns()}"
    arguments = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--user",
        f"{security['runAsUser']}:{security['runAsGroup']}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    if security["readOnlyRootFilesystem"]:
        arguments.append("--read-only")
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume and mount["name"] in (shared or {}):
            mode = "ro" if mount.get("readOnly") else "rw"
            arguments += ["-v", f"{(shared or {})[mount['name']]}:{mount['mountPath']}:{mode}"]
        elif "emptyDir" in volume:
            arguments += ["--tmpfs", f"{mount['mountPath']}:mode=1777"]
        else:
            arguments += ["-v", f"{secrets[volume['secret']['secretName']]}:{mount['mountPath']}:ro"]
    for variable in container["env"]:
        arguments += ["-e", f"{variable['name']}={variable['value']}"]
    command = container["command"] + container.get("args", [])
    docker.docker(*arguments, "--entrypoint", command[0], image, *command[1:])
    return name


def probe_url(container: dict[str, Any], probe: str) -> str:
    """The URL the kubelet would GET for ``probe`` (a named port resolved), on the host network."""
    action = container[probe]["httpGet"]
    port = action["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return f"http://127.0.0.1:{port}{action['path']}"


@pytest.mark.integration
def test_a_container_run_as_the_deployment_says_answers_its_probes(forest_image, forest_bundle, iris):
    docker, image = forest_image
    deployment = nd.kubernetes_manifests(forest_bundle, image, port=free_port(), workers=2)[0]
    (container,) = containers(deployment)
    name = run_as_the_pod_would(docker, image, deployment, {})
    try:
        docker.wait_until_answers(name, probe_url(container, "readinessProbe"))
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert requests.get(probe_url(container, probe), timeout=5).status_code == 200, probe
        base = probe_url(container, "livenessProbe").removesuffix("/healthz")
        answer = requests.post(f"{base}/predict", json={"instances": iris[0][:3].tolist()}, timeout=30)
        assert answer.json() == {"predictions": forest_bundle.predict(iris[0][:3]).tolist()}
        # two workers share metrics through /tmp, the only writable folder
        assert "notebook_deploy" in requests.get(f"{base}/metrics", timeout=5).text
        assert docker.docker("exec", name, "id", "-u").stdout.strip() == "65532"
        assert len(docker.docker("top", name).stdout.strip().splitlines()) >= 4  # a header, the supervisor, 2 workers
    finally:
        docker.docker("rm", "-f", name, check=False)


@pytest.mark.integration
@pytest.mark.parametrize("kserve", [False, True], ids=["deployment", "kserve"])
def test_a_container_with_the_keys_secret_requires_keys_but_not_on_probes(
    forest_image, forest_bundle, iris, tmp_path, kserve
):
    docker, image = forest_image
    manifest = nd.kubernetes_manifests(
        forest_bundle, image, port=free_port(), api_keys_secret="forest-keys", kserve=kserve
    )[0]
    (container,) = containers(manifest)
    if kserve:  # Knative gives the container $PORT, set to its one port
        container["env"].append({"name": "PORT", "value": str(container["ports"][0]["containerPort"])})
    secret = tmp_path / "secret"
    key, _ = KeyStore(secret / "keys.json").create("predict")
    volume = next(v for v in pod_spec(manifest)["volumes"] if v["name"] == "api-keys")
    (secret / "keys.json").chmod(volume["secret"]["defaultMode"])  # as the kubelet writes it
    secret.chmod(0o755)
    name = run_as_the_pod_would(docker, image, manifest, {"forest-keys": secret})
    try:
        docker.wait_until_answers(name, probe_url(container, "readinessProbe"))
        assert requests.get(probe_url(container, "livenessProbe"), timeout=5).status_code == 200
        base = probe_url(container, "livenessProbe").removesuffix("/healthz")
        rows = {"instances": iris[0][:2].tolist()}
        assert requests.post(f"{base}/predict", json=rows, timeout=30).status_code == 401
        answer = requests.post(f"{base}/predict", json=rows, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200
        if kserve:  # what KServe's clients check
            assert requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 200
    finally:
        docker.docker("rm", "-f", name, check=False)


@pytest.mark.parametrize("kserve", [False, True])
def test_gpus_are_limits_of_the_device_plugin_and_serve_on_cuda(forest_bundle, kserve):
    manifest = nd.kubernetes_manifests(forest_bundle, IMAGE, gpus=2, kserve=kserve)[0]
    (container,) = containers(manifest)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert environment(container)["NOTEBOOK_DEPLOY_DEVICE"] == "cuda"
    chosen = nd.kubernetes_manifests(forest_bundle, IMAGE, gpus=1, device="auto")[0]
    assert environment(containers(chosen)[0])["NOTEBOOK_DEPLOY_DEVICE"] == "auto"  # an explicit device wins
    (plain,) = containers(nd.kubernetes_manifests(forest_bundle, IMAGE)[0])
    assert "nvidia.com/gpu" not in plain["resources"]["limits"] and "NOTEBOOK_DEPLOY_DEVICE" not in environment(plain)
    with pytest.raises(KubernetesError, match="gpus.*0 or more, not -1"):
        nd.kubernetes_manifests(forest_bundle, IMAGE, gpus=-1)
