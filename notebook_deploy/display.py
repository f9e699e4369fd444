"""Small helpers that render summaries for terminals and notebooks."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bundle import Bundle


def human_size(size: int) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def shorten(value: object, width: int = 60) -> str:
    """A value as one line of at most ``width`` characters: text as it is, anything else as JSON."""
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= width else text[: width - 1] + "…"


def html_table(title: str, rows: Iterable[tuple[str, str]]) -> str:
    """A two-column HTML table with a bold title, for ``_repr_html_``; values are escaped."""
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<div><strong>{html.escape(title)}</strong><table>{body}</table></div>"


def text_table(title: str, rows: Iterable[tuple[str, str]]) -> str:
    """The same summary as plain text, aligned for a terminal."""
    rows = list(rows)
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([title, *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


class ByteBars:
    """One byte progress bar per blob: tqdm in terminals, widget bars in notebooks (``tqdm.auto``).
    Call it as a push's ``progress(digest, done, total)``; ``close()`` when the push ends."""

    def __init__(self) -> None:
        self._bars: dict[str, object] = {}

    def __call__(self, digest: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(digest)
        if bar is None:
            bar = self._bars[digest] = tqdm(
                total=total,
                desc=digest.replace("sha256:", "")[:12],
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=True,
            )
        bar.update(done - bar.n)  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()  # type: ignore[attr-defined]


def bundle_rows(bundle: Bundle) -> list[tuple[str, str]]:
    """What a bundle's ``str`` and notebook display show, row by row."""
    rows = [
        ("model", bundle.model_type),
        ("methods", ", ".join(bundle.methods)),
        ("input", bundle.input_schema.describe()),
        ("packages", ", ".join(bundle.requirements) or "none"),
        ("python", bundle.python_version),
        ("size", human_size(bundle.size)),
        ("created", bundle.created),
    ]
    sample = bundle.sample_info  # bundles captured before it was recorded have none
    if sample:
        rows.append(("sample", f"{sample['rows']} rows: {sample['source']}"))
    reference = bundle.reference_summary
    if reference:
        rows.append(
            (
                "drift",
                f"reference of {reference['rows']} rows ({reference['source']}), {len(reference['features'])} features",
            )
        )
    if bundle.labels:
        rows.append(("labels", ", ".join(f"{k}={v}" for k, v in bundle.labels.items())))
    rows += [("warning", w) for w in bundle.warnings]
    return rows
