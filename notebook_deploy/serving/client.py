"""The HTTP client side of a served bundle: send rows, decode the answer to the model's own types.

Shared by every handle to a running server (the local ``Server``, a Ray Serve deployment), so that each
answers ``predict`` the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson
import requests

from .. import display
from ..bundle import Bundle
from ..errors import InputError, ServeError
from ..schema import as_rows, dumps


class BundleClient:
    """Talks to the REST API of ``bundle`` served at ``url``. A handle names itself with ``title`` and
    describes itself with ``_summary()`` rows, shown as text and, in notebooks, as a table."""

    title = "Server for"

    def __init__(
        self,
        bundle: Bundle,
        url: str,
        *,
        api_key: str | None = None,
        verify: bool | str | os.PathLike[str] | None = None,
    ) -> None:
        self.bundle = bundle
        self.models = {bundle.name: bundle}  # the stable version of each model served, by name
        self.url = url
        self._session = requests.Session()
        if api_key:  # sent with every request of predict and post
            self._session.headers["Authorization"] = f"Bearer {api_key}"
        # TLS: the CA or certificate file to trust, or False. Passed per request, because a session's
        # verify loses to $REQUESTS_CA_BUNDLE (requests#3829).
        self._verify = None if verify is None else verify if isinstance(verify, bool) else str(verify)
        self._generates: bool | None = None

    def predict(self, data: Any, method: str = "predict", timeout: float = 60, *, model: str | None = None) -> Any:
        """Send ``data`` (rows as for ``Bundle.predict``) over HTTP and decode the answer to the type the
        model returns (an array, or a DataFrame). A 422 raises ``InputError``, other errors ``ServeError``.

        ``model`` names the model when the server serves several (its own route, ``/v1/models/NAME:predict``,
        which takes the same rows): the unnamed ``/predict`` cannot say which one is meant."""
        if model is None and len(self.models) > 1:
            raise ServeError(f"this server serves several models ({', '.join(self.models)}): name one, model=...")
        bundle = self.models.get(model or self.bundle.name)
        if bundle is None:
            raise ServeError(f"model {model!r} is not served here; this server serves {', '.join(self.models)}")
        instances = bundle.input_schema.encode(as_rows(data))
        path, body = (
            (method, {"instances": instances})
            if model is None
            else (f"v1/models/{model}:predict", {"instances": instances, "signature_name": method})
        )
        response = self.post(path, body, timeout=timeout)
        if response.status_code == 422:
            raise InputError(_detail(response))
        if response.status_code != 200:
            raise ServeError(f"{self.url}/{path} answered {response.status_code}: {_detail(response)}")
        return bundle.output_schema(method).decode(orjson.loads(response.content)["predictions"])

    def post(self, path: str, payload: Any, timeout: float = 60, stream: bool = False) -> requests.Response:
        """POST ``payload`` as JSON to ``path`` on this server and return the raw response; with
        ``stream=True`` its body is read as it comes (``iter_content``), as for Server-Sent Events."""
        return self._session.post(
            f"{self.url}/{path.lstrip('/')}",
            data=dumps(payload),
            headers={"content-type": "application/json"},
            timeout=timeout,
            verify=self._verify,  # None is requests' own default: the session's setting
            stream=stream,
        )

    def get(self, path: str, timeout: float = 60) -> requests.Response:
        """GET ``path`` on this server (``/metrics``, ``/monitor/drift``) and return the raw response."""
        return self._session.get(f"{self.url}/{path.lstrip('/')}", timeout=timeout, verify=self._verify)

    @property
    def generates(self) -> bool:
        """Whether the server streams generated text (``POST /generate``): a text generator's does."""
        if self._generates is None:
            response = self._session.get(f"{self.url}/openapi.json", timeout=30, verify=self._verify)
            self._generates = response.ok and "/generate" in response.json().get("paths", {})
        return self._generates

    def generate(self, prompt: str | list[dict[str, str]], timeout: float = 300, **sampling: Any) -> Iterator[str]:
        """The text a generator makes from ``prompt`` (text, or chat messages), piece by piece as the
        server streams it; ``sampling`` are /generate's fields (``max_tokens``, ``temperature``, ``stop``).
        Raises ``ServeError`` with the server's message when it refuses or the model fails."""
        body = {"messages" if isinstance(prompt, list) else "prompt": prompt, **sampling}
        with self.post("generate", body, timeout, stream=True) as response:
            if response.status_code != 200:
                raise ServeError(f"{self.url}/generate answered {response.status_code}: {_detail(response)}")
            for line in response.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = orjson.loads(line.removeprefix("data:").strip())
                if "detail" in event:  # the model failed after the stream had begun
                    raise ServeError(f"{self.url}/generate failed: {event['detail']}")
                if "text" in event:
                    yield event["text"]

    @property
    def docs_url(self) -> str:
        return f"{self.url}/docs"

    def _summary(self) -> list[tuple[str, str]]:
        return [("url", self.url), ("docs", self.docs_url)]

    def _subject(self) -> str:
        """What the server serves, as its title names it."""
        return self.bundle.ref

    def __str__(self) -> str:
        return display.text_table(f"{self.title} {self._subject()}", self._summary())

    def _repr_html_(self) -> str:
        link = f"<p><a href='{self.docs_url}' target='_blank'>Open the API docs</a></p>"
        return display.html_table(f"{self.title} {self._subject()}", self._summary()) + link

    def close(self) -> None:
        """Close the HTTP connections kept open."""
        self._session.close()


def _detail(response: requests.Response) -> str:
    """The message of an error answer: ``detail`` in notebook-deploy's own routes, ``error`` in TF Serving's."""
    try:
        answer = response.json()
        return str(answer["detail"] if "detail" in answer else answer["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500]
