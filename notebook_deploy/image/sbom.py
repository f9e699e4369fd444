"""The CycloneDX SBOM of an image's Python packages: every distribution installed in the image's
dependency layer, plus the notebook-deploy runtime, each with its package URL.

Written with cyclonedx-python-lib (the CycloneDX project's own library: model, JSON serialisation and
the schema validators), so the document is the standard's and validates against its JSON schema. It
is read from the ``*.dist-info`` folders of the layer as built, not from this machine's environment,
because the image's wheels are resolved for another platform and may differ from what runs here.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from packaging.utils import canonicalize_name

from ..errors import NotebookDeployError
from ..version import __version__

MEDIA_TYPE = "application/vnd.cyclonedx+json"
RUNTIME = "notebook-deploy"


def image_sbom(packages: list[tuple[str, str]], image: str, digest: str, created: str) -> bytes:
    """The SBOM (CycloneDX 1.6 JSON) of the image ``image`` (``host/repository``) whose manifest
    digest is ``digest``, from the (name, version) of the distributions in its dependency layer. Its serial number and
    timestamp derive from the digest and ``created`` (ISO 8601), so the same image gives the same bytes."""
    components = [_component(name, version) for name, version in packages]
    components.append(_component(RUNTIME, __version__))  # its source files are the runtime layer
    host, _, repository = image.partition("/")
    subject = Component(
        name=repository.rsplit("/", 1)[-1],
        version=digest,
        type=ComponentType.CONTAINER,
        bom_ref=f"{image}@{digest}",
        purl=PackageURL("oci", None, repository.rsplit("/", 1)[-1], digest, {"repository_url": image}),
    )
    bom = Bom(
        components=sorted(components, key=lambda c: str(c.bom_ref)),
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"{image}@{digest}"),
        metadata=BomMetaData(component=subject, timestamp=datetime.fromisoformat(created)),
    )
    bom.register_dependency(subject, bom.components)
    return JsonV1Dot6(bom).output_as_string(indent=None).encode()


def check_sbom(document: bytes) -> dict[str, Any]:
    """The SBOM, parsed, after checking it against the CycloneDX JSON schema of its spec version."""
    try:
        parsed = json.loads(document)
        version = SchemaVersion.from_version(str(parsed["specVersion"]))
    except (ValueError, KeyError, TypeError) as error:
        raise NotebookDeployError(f"the SBOM is not a CycloneDX JSON document ({error})") from None
    problem = JsonStrictValidator(version).validate_str(document.decode())
    if problem is not None:
        message = getattr(problem.data, "message", str(problem.data))
        raise NotebookDeployError(
            f"the SBOM does not validate against the CycloneDX {version.to_version()} schema: {message}"
        )
    return parsed


def _component(name: str, version: str) -> Component:
    purl = PackageURL("pypi", None, canonicalize_name(name), version)  # the purl spec's pypi name rule
    return Component(name=name, version=version, type=ComponentType.LIBRARY, purl=purl, bom_ref=purl.to_string())
