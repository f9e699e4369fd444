"""Keep the bytes of the URLs a recipe fetched, and hand them back to its replay.

A recipe cell that reads ``https://.../data.csv`` fetches it again when it is replayed, and may get other
bytes, or none. With ``keep_fetched`` the capture fetches each URL the kept executions fetched once more
(the recorder sees the URL, not the response: keeping every response of a session just in case would
cost memory and disk for downloads nobody keeps), stores the bytes in the bundle beside their sha256,
and verify's replay answers those URLs from the stored bytes: ``urllib.request.urlopen`` (pandas'
readers, scikit-learn's fetchers) and ``requests`` are redirected for exactly those URLs.
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
from pathlib import Path
from typing import Any

from .recipe import Recipe, fetch_warning

FETCH_TIMEOUT = 60  # seconds for one URL

# The first cell of a replay when the bundle kept fetched bytes. Standard library only (requests is
# patched when it is there), so it runs in a fresh environment too.
REPLAY_CELL = """\
import io as _nd_io, json as _nd_json, email.message as _nd_message
import urllib.request as _nd_request, urllib.response as _nd_response
with open({mapping!r}) as _nd_file:
    _nd_kept = _nd_json.load(_nd_file)  # URL -> the bundle's file of the bytes fetched at capture


def _nd_bytes(url):
    with open(_nd_kept[url], "rb") as _nd_file:
        return _nd_file.read()


_nd_urlopen = _nd_request.urlopen


def _nd_open(url, *args, **kwargs):
    full = getattr(url, "full_url", url)
    if full in _nd_kept:
        return _nd_response.addinfourl(_nd_io.BytesIO(_nd_bytes(full)), _nd_message.Message(), full, 200)
    return _nd_urlopen(url, *args, **kwargs)


_nd_request.urlopen = _nd_open
try:
    import requests.adapters as _nd_adapters
    import requests.models as _nd_models
except ImportError:
    pass
else:
    _nd_send = _nd_adapters.HTTPAdapter.send

    def _nd_send_kept(self, request, *args, **kwargs):
        if request.url not in _nd_kept:
            return _nd_send(self, request, *args, **kwargs)
        response = _nd_models.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        response._content = _nd_bytes(request.url)
        return response

    _nd_adapters.HTTPAdapter.send = _nd_send_kept
"""


def keep_fetched(recipe: Recipe, directory: Path, limit: int) -> list[tuple[str, Path]]:
    """Fetch each URL of ``recipe`` again into ``directory`` (at most ``limit`` bytes each), record them in
    ``recipe.fetched`` and replace their warnings; return (bundle file name, path) of each kept one."""
    kept = []
    for count, url in recipe.urls:
        if any(entry["url"] == url for entry in recipe.fetched):
            continue
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 - the notebook's own URL
                data = response.read(limit + 1)
        except (OSError, ValueError) as error:
            _replace_warning(
                recipe,
                count,
                url,
                f"cell [{count}] fetched {url}, which could not be fetched again to "
                f"keep its bytes ({error}): the replay fetches it again",
            )
            continue
        if len(data) > limit:
            _replace_warning(
                recipe,
                count,
                url,
                f"cell [{count}] fetched {url}, which is over {limit} bytes, so its "
                "bytes are not kept: the replay fetches it again",
            )
            continue
        sha = hashlib.sha256(data).hexdigest()
        name = f"fetched-{sha[:12]}-{_file_name(url)}"
        (directory / name).write_bytes(data)
        recipe.fetched.append({"url": url, "sha256": sha, "size": len(data), "file": name})
        _replace_warning(
            recipe,
            count,
            url,
            f"cell [{count}] fetched {url}: its bytes as fetched again at capture "
            f"(sha256 {sha[:12]}) are kept in the bundle ({name}) and answer it in the replay",
        )
        kept.append((name, directory / name))
    return kept


def replay_mapping(bundle_path: Path, fetched: list[dict[str, Any]]) -> dict[str, str]:
    """URL -> the bundle's file holding its kept bytes: what ``REPLAY_CELL`` reads."""
    return {entry["url"]: str(bundle_path / entry["file"]) for entry in fetched}


def _replace_warning(recipe: Recipe, count: int, url: str, text: str) -> None:
    recipe.warnings = [text if warning == fetch_warning(count, url) else warning for warning in recipe.warnings]


def _file_name(url: str) -> str:
    """The last part of the URL's path, made safe as a file name."""
    last = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", last)[:64] or "download"
