"""Kubernetes manifests that run a bundle's image: a Deployment, a Service and a HorizontalPodAutoscaler,
or a KServe InferenceService.

    manifests = kubernetes_manifests("iris:prod", "registry.example.com/models/iris:1", api_keys_secret="iris-keys")
    print(manifests_yaml(manifests))          # for: kubectl apply -f -
    write_manifests(manifests, "k8s")         # one file per manifest, for: kubectl apply -f k8s

The container runs the image's own command (``python3 -m notebook_deploy serve /opt/bundle``); the port
reaches the server as ``$PORT`` and every other option as the variable ``notebook-deploy serve`` reads
(``NOTEBOOK_DEPLOY_WORKERS``, ``NOTEBOOK_DEPLOY_AUTH``, ...: see ``notebook-deploy serve --help``). It runs
as the image's non-root user with a read-only root filesystem, no capabilities and the runtime's seccomp
profile; ``/tmp`` is an emptyDir, where the metrics of several workers and the audit log are written.
API keys come from an existing Secret holding the key file under ``keys.json``, mounted as a volume (not
a subPath), so that ``keys revoke`` reaches running pods without a restart: the kubelet updates the file
and the server re-reads it when it changes.

With ``serve``'s canary, shadow and sticky options the one container serves every version: the image
carries the stable version (at ``/opt/bundle``, as ``push`` builds it), and each canary and shadow comes
from its own image, whose bundle an init container copies into an emptyDir (``/opt/versions``) before the
server starts with ``--canary /opt/versions/VERSION=PERCENT ...`` after the image's command.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .bundle import Bundle
from .errors import KubernetesError, NotebookDeployError, SettingError
from .image.build import BUNDLE_DIR, image_settings
from .serving.deployment import Deployment
from .serving.settings import OPTIONS, environment
from .store import Store

MANAGED_BY = "notebook-deploy"
BUNDLE_ANNOTATION = "notebook-deploy.io/bundle"
KEYS_DIRECTORY = "/etc/notebook-deploy/keys"
KEYS_FILE = "keys.json"  # the key of the Secret, and the file name the server reads
SCRATCH = "/tmp"  # the container's only writable folder (an emptyDir)
DRAIN_SECONDS = 5  # before SIGTERM: Services stop sending new requests to a terminating pod meanwhile
VERSIONS_DIRECTORY = "/opt/versions"  # an emptyDir: the canaries' and shadows' bundles, copied from their images
KSERVE_CONTAINER = "kserve-container"  # the container name KServe expects in a custom predictor
_QUANTITY = re.compile(r"(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # RFC 1035: Service and InferenceService names
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def kubernetes_manifests(
    ref: str | os.PathLike[str] | Bundle,
    image: str,
    *,
    name: str | None = None,
    namespace: str | None = None,
    replicas: int = 2,
    cpu: str = "500m",
    memory: str = "512Mi",
    cpu_limit: str | None = None,
    memory_limit: str | None = None,
    gpus: int = 0,
    port: int = 8000,
    min_replicas: int | None = None,
    max_replicas: int = 10,
    target_cpu_utilization: int = 70,
    api_keys_secret: str | None = None,
    kserve: bool = False,
    store: Store | str | os.PathLike[str] | None = None,
    canary: Sequence[str] = (),
    shadow: Sequence[str] = (),
    sticky_header: str | None = None,
    version_images: Mapping[str, str] | None = None,
    **serve_options: Any,
) -> list[dict[str, Any]]:
    """The manifests that serve the bundle ``ref`` from ``image`` (built by ``push`` or ``build_image``):
    a Deployment of ``replicas`` pods, a Service (port 80) and an autoscaler between ``min_replicas``
    (default: ``replicas``) and ``max_replicas`` at ``target_cpu_utilization`` percent of the ``cpu``
    request; or, with ``kserve=True``, one KServe InferenceService (KServe makes those three itself).

    ``name`` defaults to the bundle's name; ``memory_limit`` to ``memory``; there is no CPU limit unless
    ``cpu_limit`` is given. ``gpus`` NVIDIA GPUs per pod (``nvidia.com/gpu``, the device plugin's resource)
    serve the model on ``cuda`` unless ``device`` is set otherwise. ``api_keys_secret`` names an existing Secret whose ``keys.json`` is a key file
    (``notebook-deploy keys``): it is mounted and keys are required. ``serve_options`` are options of
    ``notebook-deploy serve`` passed as environment variables, e.g. ``workers=2``, ``max_batch_size=32``.

    ``canary`` (``["churn:3f2a=10"]``), ``shadow`` (``["churn:9b1c"]``) and ``sticky_header`` are ``serve``'s
    options: then the one container serves every version, and ``version_images`` gives the image of each
    canary and shadow (REF -> image, each pushed like ``image``), whose bundle an init container copies
    into the pod (see the module's docstring). Raises ``KubernetesError`` naming the option that is wrong."""
    from .api import load

    bundle = load(ref, store)
    try:
        versions = Deployment.around(bundle, canary, shadow, sticky_header, load=lambda given: load(given, store))
    except SettingError as error:
        raise KubernetesError(error.option, error.reason) from None
    name = _checked_name(name, bundle)
    _check_options(
        image,
        namespace,
        replicas,
        port,
        min_replicas,
        max_replicas,
        target_cpu_utilization,
        api_keys_secret,
        cpu=cpu,
        memory=memory,
        cpu_limit=cpu_limit,
        memory_limit=memory_limit,
    )
    if not isinstance(gpus, int) or gpus < 0:
        raise KubernetesError("gpus", f"must be a whole number of GPUs per pod, 0 or more, not {gpus!r}")
    min_replicas = replicas if min_replicas is None else min_replicas
    if gpus:
        serve_options = {"device": "cuda", **serve_options}
    environment = _environment(serve_options, api_keys_secret)
    grpc_port = int(serve_options["grpc_port"]) if serve_options.get("grpc_port") is not None else None
    metadata = _metadata(name, namespace, bundle)
    resources = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {
            "memory": memory_limit or memory,
            **({"cpu": cpu_limit} if cpu_limit else {}),
            **({"nvidia.com/gpu": str(gpus)} if gpus else {}),  # extended resources are limits only
        },
    }
    images: dict[str, str] = {}
    for given, carrier in (version_images or {}).items():
        try:
            images[load(given, store).version] = carrier
        except NotebookDeployError as error:
            raise KubernetesError("version_images", f"{given} does not load: {error}") from None
    others = _other_versions(versions, images)
    if kserve:
        if others:
            raise KubernetesError(
                "kserve",
                "KServe splits traffic itself: give the InferenceService canaryTrafficPercent, or leave --kserve "
                "off for one Deployment that serves every version",
            )
        if grpc_port is not None:
            raise KubernetesError(
                "grpc_port", "a KServe predictor exposes one port: leave gRPC out, or use the Deployment (kserve off)"
            )
        # Knative sets $PORT itself from the one container port, refuses a PORT variable and probes by number.
        container = _container(
            KSERVE_CONTAINER,
            image,
            bundle,
            environment + [{"name": "PROTOCOL", "value": "v2"}],
            {"http1": port},
            port,
            resources,
            api_keys_secret is not None,
        )
        return _plain(
            [
                _inference_service(
                    metadata, container, min_replicas, max_replicas, target_cpu_utilization, api_keys_secret
                )
            ]
        )
    if grpc_port is not None and (grpc_port < 1 or grpc_port == port):
        raise KubernetesError("grpc_port", f"must be a fixed port other than port ({port}), not {grpc_port}")
    ports = {"http": port, **({"grpc": grpc_port} if grpc_port is not None else {})}
    container = _container(
        "server",
        image,
        bundle,
        [{"name": "PORT", "value": str(port)}] + environment,
        ports,
        "http",
        resources,
        api_keys_secret is not None,
    )
    container["startupProbe"] = _probe("/healthz", "http", period=2, failures=90)  # up to 3 minutes to load
    container["lifecycle"] = {
        "preStop": {"exec": {"command": ["python3", "-c", f"import time; time.sleep({DRAIN_SECONDS})"]}}
    }
    copies = []
    if others:
        # after the image's own command (which serves the stable version): the canaries and shadows from the
        # folders their init containers fill, and the sticky header
        container["args"] = versions.arguments(lambda bundle: f"{VERSIONS_DIRECTORY}/{bundle.version}")
        container["volumeMounts"].append({"name": "versions", "mountPath": VERSIONS_DIRECTORY, "readOnly": True})
        copies = [_copy_container(index, other, image_of) for index, (other, image_of) in enumerate(others, 1)]
    return _plain(
        [
            _deployment(metadata, container, replicas, api_keys_secret, copies),
            _service(metadata, ports),
            _autoscaler(metadata, min_replicas, max_replicas, target_cpu_utilization),
        ]
    )


def _other_versions(versions: Deployment, by_version: Mapping[str, str]) -> list[tuple[Bundle, str]]:
    """Each canary and shadow with the image that carries it (``by_version``: version -> image); a
    ``KubernetesError`` names one without."""
    found = []
    for other in [*(bundle for bundle, _ in versions.canary), *versions.shadow]:
        image = by_version.get(other.version)
        if image is None:
            raise KubernetesError(
                "version_images",
                f"no image given for {other.ref}: pass {other.ref}=IMAGE, its image from 'notebook-deploy push'",
            )
        _check_image(image, "version_images")
        found.append((other, image))
    return found


def _copy_container(index: int, bundle: Bundle, image: str) -> dict[str, Any]:
    """An init container of ``bundle``'s image that copies the bundle it carries into the pod's versions
    folder, with the image's own Python (every image this writes has it), as the server's user."""
    return {
        "name": f"bundle-{index}",
        "image": image,
        "command": [
            "python3",
            "-c",
            "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])",
            BUNDLE_DIR,
            f"{VERSIONS_DIRECTORY}/{bundle.version}",
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _security(_image_user(bundle)),
        "volumeMounts": [{"name": "versions", "mountPath": VERSIONS_DIRECTORY}],
    }


def manifests_yaml(manifests: list[dict[str, Any]]) -> str:
    """The manifests as one YAML stream of documents, for ``kubectl apply -f -``."""
    import yaml

    return yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False)


def write_manifests(manifests: list[dict[str, Any]], directory: str | os.PathLike[str]) -> list[Path]:
    """Write each manifest to ``directory`` as ``NAME-KIND.yaml`` (for ``kubectl apply -f DIRECTORY``);
    return the paths, in the order of ``manifests``."""
    import yaml

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for manifest in manifests:
        path = folder / f"{manifest['metadata']['name']}-{manifest['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False))
        paths.append(path)
    return paths


def _plain(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifests as independent JSON data: no object shared between two places (nor YAML aliases)."""
    return json.loads(json.dumps(manifests))


def _checked_name(name: str | None, bundle: Bundle) -> str:
    """``name``, checked, or one made from the bundle's name (lower case letters, digits and '-')."""
    if name is None:
        name = re.sub(r"[^a-z0-9-]+", "-", bundle.name.lower()).strip("-")
        name = (name if name[:1].isalpha() else f"model-{name}")[:63].rstrip("-")
    if not _DNS_LABEL.fullmatch(name) or len(name) > 63:
        raise KubernetesError(
            "name",
            f"{name!r} is not a valid name: use at most 63 lower case letters, digits and '-', starting with a letter",
        )
    return name


def _check_image(image: str, option: str) -> None:
    if not image or any(c.isspace() for c in image):
        raise KubernetesError(option, f"{image!r} is not an image reference (like registry.example.com/iris:1)")


def _check_options(
    image: str,
    namespace: str | None,
    replicas: int,
    port: int,
    min_replicas: int | None,
    max_replicas: int,
    target_cpu_utilization: int,
    api_keys_secret: str | None,
    **quantities: str | None,
) -> None:
    _check_image(image, "image")
    if namespace is not None and (not _DNS_SUBDOMAIN.fullmatch(namespace) or "." in namespace or len(namespace) > 63):
        raise KubernetesError(
            "namespace", f"{namespace!r} is not a namespace name: at most 63 lower case letters, digits and '-'"
        )
    if api_keys_secret is not None and (not _DNS_SUBDOMAIN.fullmatch(api_keys_secret) or len(api_keys_secret) > 253):
        raise KubernetesError(
            "api_keys_secret", f"{api_keys_secret!r} is not a Secret name: lower case letters, digits, '-' and '.'"
        )
    for option, value in (
        ("replicas", replicas),
        ("max_replicas", max_replicas),
        ("target_cpu_utilization", target_cpu_utilization),
        ("min_replicas", min_replicas),
    ):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise KubernetesError(option, f"must be a whole number of at least 1, not {value!r}")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise KubernetesError("port", f"must be a port number from 1 to 65535, not {port!r}")
    lowest = replicas if min_replicas is None else min_replicas
    if lowest > max_replicas:
        raise KubernetesError(
            "min_replicas" if min_replicas is not None else "replicas",
            f"{lowest} is more than the maximum number of replicas ({max_replicas})",
        )
    for option, quantity in quantities.items():
        if quantity is not None and not _QUANTITY.fullmatch(str(quantity)):
            raise KubernetesError(
                option, f"{quantity!r} is not a Kubernetes quantity (like 500m or 2 for CPU, 512Mi or 2Gi for memory)"
            )


def _environment(options: dict[str, Any], api_keys_secret: str | None) -> list[dict[str, str]]:
    """The variables that give the server ``options`` (checked as ``serve`` checks them); the audit log on
    the emptyDir, and the mounted key file with keys required when there is a Secret."""
    wanted: dict[str, Any] = {"audit_log": f"{SCRATCH}/audit.log"}
    if api_keys_secret is not None:
        wanted.update(auth=True, keys_file=f"{KEYS_DIRECTORY}/{KEYS_FILE}")
    wanted.update({option: value for option, value in options.items() if value is not None})
    for option, value in wanted.items():
        declared = OPTIONS.get(option)
        if declared is not None and declared.path and not str(value).startswith("/"):
            raise KubernetesError(option, f"{value!r} must be an absolute path inside the container")
    try:
        variables = environment(wanted)
    except SettingError as error:
        raise KubernetesError(error.option, error.reason) from None
    return [{"name": name, "value": value} for name, value in variables.items()]


def _metadata(name: str, namespace: str | None, bundle: Bundle) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/version": bundle.version,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    return {
        "name": name,
        **({"namespace": namespace} if namespace else {}),
        "labels": labels,
        "annotations": {BUNDLE_ANNOTATION: bundle.ref},
    }


def _probe(path: str, port: int | str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(
    container_name: str,
    image: str,
    bundle: Bundle,
    environment: list[dict[str, str]],
    ports: dict[str, int],
    probe_port: int | str,
    resources: dict[str, Any],
    keys_mounted: bool,
) -> dict[str, Any]:
    """The server's container: the image's command, options as variables, probes on the health routes
    (at ``probe_port``, a number or a port's name), a non-root read-only root filesystem, /tmp (and the
    key file) mounted."""
    mounts: list[dict[str, str | bool]] = [{"name": "tmp", "mountPath": SCRATCH}]
    if keys_mounted:
        mounts.append({"name": "api-keys", "mountPath": KEYS_DIRECTORY, "readOnly": True})
    return {
        "name": container_name,
        "image": image,
        "command": image_settings(bundle).entrypoint,
        "env": environment,
        "ports": [
            {"name": port_name, "containerPort": number, "protocol": "TCP"} for port_name, number in ports.items()
        ],
        "resources": resources,
        "livenessProbe": _probe("/healthz", probe_port, period=10, failures=3),
        "readinessProbe": _probe("/readyz", probe_port, period=5, failures=2),
        "securityContext": _security(_image_user(bundle)),
        "volumeMounts": mounts,
    }


def _image_user(bundle: Bundle) -> int:
    """The numeric user the bundle's image runs as."""
    user = image_settings(bundle).user
    assert user is not None  # image_settings always names the (numeric) user
    return int(user)


def _security(user: int) -> dict[str, Any]:
    """A container's security: ``user``, non-root, read-only root filesystem, no capabilities, seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(api_keys_secret: str | None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if api_keys_secret is not None:  # 0444: the server's user is not the file's owner; it holds only hashes
        volumes.append(
            {
                "name": "api-keys",
                "secret": {
                    "secretName": api_keys_secret,
                    "defaultMode": 0o444,
                    "items": [{"key": KEYS_FILE, "path": KEYS_FILE}],
                },
            }
        )
    return volumes


def _deployment(
    metadata: dict[str, Any],
    container: dict[str, Any],
    replicas: int,
    api_keys_secret: str | None,
    copies: list[dict[str, Any]],
) -> dict[str, Any]:
    name = metadata["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": metadata["labels"], "annotations": metadata["annotations"]},
                "spec": {
                    "automountServiceAccountToken": False,  # the server never calls the Kubernetes API
                    # the drain before SIGTERM, the server's own drain of requests in flight, and a margin
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + int(OPTIONS["graceful_timeout"].default) + 5,
                    **({"initContainers": copies} if copies else {}),
                    "containers": [container],
                    "volumes": _volumes(api_keys_secret) + ([{"name": "versions", "emptyDir": {}}] if copies else []),
                },
            },
        },
    }


def _service(metadata: dict[str, Any], ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": metadata["name"]},
            "ports": [
                {
                    "name": port_name,
                    "port": 80 if port_name == "http" else number,
                    "targetPort": port_name,
                    "protocol": "TCP",
                }
                for port_name, number in ports.items()
            ],
        },
    }


def _autoscaler(
    metadata: dict[str, Any], min_replicas: int, max_replicas: int, target_cpu_utilization: int
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": metadata["name"]},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target_cpu_utilization},
                    },
                }
            ],
        },
    }


def _inference_service(
    metadata: dict[str, Any],
    container: dict[str, Any],
    min_replicas: int,
    max_replicas: int,
    target_cpu_utilization: int,
    api_keys_secret: str | None,
) -> dict[str, Any]:
    """A KServe InferenceService whose predictor is the server's container (a custom predictor speaking
    the Open Inference Protocol, declared by ``PROTOCOL=v2``), autoscaled on CPU like the Deployment."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "scaleMetric": "cpu",
                "scaleTarget": target_cpu_utilization,
                "labels": metadata["labels"],
                "annotations": metadata["annotations"],
                "automountServiceAccountToken": False,
                "containers": [container],
                "volumes": _volumes(api_keys_secret),
            },
        },
    }
