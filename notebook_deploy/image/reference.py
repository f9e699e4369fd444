"""Image references: ``[registry/]repository[:tag][@digest]``, with Docker Hub's defaults."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from ..errors import ImageReferenceError

DOCKER_HUB = "registry-1.docker.io"
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


INSECURE_VARIABLE = "NOTEBOOK_DEPLOY_INSECURE_REGISTRIES"


def insecure_registries() -> set[str]:
    """The registries (``host[:port]``, comma-separated in ``$NOTEBOOK_DEPLOY_INSECURE_REGISTRIES``) that
    the user allows over plain http."""
    return {h.strip() for h in os.environ.get(INSECURE_VARIABLE, "").split(",") if h.strip()}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]``, ``[v6]:port`` or a URL's netloc) is this machine."""
    if host.startswith("["):  # [::1]:5000
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference. ``str()`` gives it back in full (``host/repo:tag``)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """Parse ``text``; a first component with a ``.`` or ``:`` or ``localhost`` names the registry."""
        rest, _, digest_text = text.partition("@")
        digest = digest_text or None
        tag = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
        first, _, remainder = rest.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, remainder
        else:
            registry, repository = DOCKER_HUB, rest
            if "/" not in repository:
                repository = f"library/{repository}"
        if not _REPOSITORY.match(repository):
            raise ImageReferenceError(
                f"{text!r}: {repository!r} is not a valid repository name (lowercase letters, digits, "
                "separators '.', '_', '-', and '/' between components)"
            )
        if tag is not None and not _TAG.match(tag):
            raise ImageReferenceError(f"{text!r}: {tag!r} is not a valid tag")
        if digest is not None and not _DIGEST.match(digest):
            raise ImageReferenceError(f"{text!r}: {digest!r} is not a sha256 digest")
        return cls(registry, repository, tag if tag or digest else "latest", digest)

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def scheme(self) -> str:
        """http for loopback registries (as Docker treats them) and for those the user named insecure in
        ``$NOTEBOOK_DEPLOY_INSECURE_REGISTRIES`` (Docker's ``insecure-registries``), else https. A private
        address is no reason for plain http: credentials would cross a network in the clear."""
        if self.registry in insecure_registries():
            return "http"
        return "http" if is_loopback(self.registry) else "https"

    def with_tag(self, tag: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
