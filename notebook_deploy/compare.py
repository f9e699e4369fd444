"""A deployment diff of two versions before a tag moves: what breaks callers, how the answers differ,
and what the move costs.

``compare(old, new)`` reports:

- **schema changes**, each marked breaking or not. Breaking is what a caller that works today would see
  fail: a method gone, a column gone or newly required, a kind that accepts less (float → int, a
  category's values narrowed, missing values no longer taken), a tensor of another shape, an answer of
  another kind. A new optional column or a wider kind is not breaking;
- **agreement**: the new version answering the old one's stored sample rows (labels exactly, scores
  within a tolerance), and, given a prediction log, the recorded traffic (``replay``);
- **the lock**: distributions added, removed, or at another version; the bundle's size, and the
  dependency layer's when the layer cache holds both (built by a push, build or export);
- **serving cost**, each version in a fresh Python side by side: start, p50/p99 latency, peak memory.

A policy (a YAML or JSON file of limits, ``POLICY_LIMITS``) turns the diff into a gate: ``violations``
lists what breaks it, and ``notebook-deploy tag REF TAG --require-compare POLICY`` refuses to move a tag
while the list is not empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from . import display
from .api import load
from .bundle import Bundle
from .capturing.footprint import measure
from .errors import NotebookDeployError
from .replay import ATOL, RTOL, Disagreement, Record, Replay, replay, replay_records
from .schema import ANY, BOOL, CATEGORY, DATETIME, FLOAT, INT, STR, Column, Domain, Schema, TableSchema, TensorSchema
from .store import Store

# What each kind of value accepts besides itself: a change to a kind that accepts all the old one did
# is a widening, any other change a narrowing that breaks callers.
_ACCEPTS = {FLOAT: {INT}, STR: {CATEGORY}, ANY: {FLOAT, INT, STR, CATEGORY, BOOL, DATETIME}}

# The limits of a policy that need each version measured in a fresh Python.
SERVING_LIMITS = frozenset({"max_latency_ratio", "max_start_ratio", "max_memory_ratio"})
# The limits a policy may set, with what each means; any other key in a policy file is refused.
POLICY_LIMITS = {
    "block_breaking_schema": "refuse any breaking schema change (true or false)",
    "min_sample_agreement": "the least share of the old version's sample rows the new one must answer alike",
    "min_traffic_agreement": "the least share of recorded traffic rows (--traffic) it must answer alike",
    "max_latency_ratio": "the most the new p50 latency may be, as a multiple of the old one's",
    "max_start_ratio": "the most the new start time may be, as a multiple of the old one's",
    "max_memory_ratio": "the most the new peak memory may be, as a multiple of the old one's",
    "max_size_ratio": "the most the new bundle's size may be, as a multiple of the old one's",
    "max_dependency_layer_ratio": "the most the new dependency layer may weigh, as a multiple of the old one's",
}


class PolicyError(NotebookDeployError):
    """A policy file that cannot be read or holds an unknown limit."""


@dataclass(frozen=True)
class SchemaChange:
    """One difference between the two versions' schemas, and whether it breaks a caller of today."""

    what: str
    breaking: bool


@dataclass
class Comparison:
    """The result of ``compare``; true when nothing in it breaks callers."""

    old: str
    new: str
    schema: list[SchemaChange]
    sample: Replay | None  # None when the new version refuses the old one's methods outright
    traffic: Replay | None
    lock_added: list[str]
    lock_removed: list[str]
    lock_changed: list[tuple[str, str, str]]  # name, old version, new version
    sizes: tuple[int, int]
    dependency_layers: tuple[int, int] | None  # compressed sizes, from the layer cache when both were built
    footprints: tuple[dict[str, Any], dict[str, Any]] | None
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not any(change.breaking for change in self.schema)

    def violations(self, policy: dict[str, Any]) -> list[str]:
        """What of this comparison breaks the limits of ``policy`` (see ``POLICY_LIMITS``)."""
        broken = []
        if policy.get("block_breaking_schema") and not self:
            broken += [f"breaking schema change: {c.what}" for c in self.schema if c.breaking]
        for limit, replayed in (("min_sample_agreement", self.sample), ("min_traffic_agreement", self.traffic)):
            if limit not in policy:
                continue
            if replayed is None:
                broken.append(f"{limit}: no {limit.split('_')[1]} agreement could be measured")
            elif replayed.agreement < policy[limit]:
                broken.append(f"{limit}: {replayed.agreement:.2%} of the rows agree, below {policy[limit]:.2%}")
        ratios = self.ratios()
        for limit, key in (
            ("max_latency_ratio", "latency"),
            ("max_start_ratio", "start"),
            ("max_memory_ratio", "memory"),
            ("max_size_ratio", "size"),
            ("max_dependency_layer_ratio", "dependency_layer"),
        ):
            if limit in policy and key in ratios and ratios[key] > policy[limit]:
                broken.append(f"{limit}: the new {key} is {ratios[key]:.2f}x the old one's, above {policy[limit]}x")
        return broken

    def ratios(self) -> dict[str, float]:
        """New over old for latency (p50), start, peak memory and bundle size."""
        found = {"size": self.sizes[1] / self.sizes[0]}
        if self.dependency_layers is not None:
            found["dependency_layer"] = self.dependency_layers[1] / self.dependency_layers[0]
        if self.footprints is not None:
            old, new = self.footprints
            found["latency"] = new["latency_ms"]["p50"] / old["latency_ms"]["p50"]
            found["start"] = new["start_seconds"] / old["start_seconds"]
            found["memory"] = new["peak_rss_bytes"] / old["peak_rss_bytes"]
        return found

    def _rows(self) -> list[tuple[str, str]]:
        rows = [("old", self.old), ("new", self.new)]
        if not self.schema:
            rows.append(("schema", "unchanged"))
        for change in self.schema:
            rows.append(("schema BREAKS" if change.breaking else "schema", change.what))
        for label, replayed in (("sample", self.sample), ("traffic", self.traffic)):
            if replayed is not None:
                rows.append((f"{label} agreement", f"{replayed.agreement:.2%} of {replayed.rows} rows"))
                rows += [(f"{label} differs", _disagreement(d)) for d in replayed.worst[:3]]
        lock = [f"+{a}" for a in self.lock_added] + [f"-{r}" for r in self.lock_removed]
        lock += [f"{name} {old}→{new}" for name, old, new in self.lock_changed]
        rows.append(("lock", ", ".join(lock) or "unchanged"))
        rows.append(("bundle size", _pair(*self.sizes, display.human_size)))
        if self.dependency_layers is not None:
            rows.append(("dependency layer", _pair(*self.dependency_layers, display.human_size)))
        if self.footprints is not None:
            old, new = self.footprints
            rows.append(("start", _pair(old["start_seconds"], new["start_seconds"], lambda s: f"{s:.2f} s")))
            rows.append(
                ("latency p50", _pair(old["latency_ms"]["p50"], new["latency_ms"]["p50"], lambda m: f"{m:.2f} ms"))
            )
            rows.append(
                ("latency p99", _pair(old["latency_ms"]["p99"], new["latency_ms"]["p99"], lambda m: f"{m:.2f} ms"))
            )
            rows.append(("peak memory", _pair(old["peak_rss_bytes"], new["peak_rss_bytes"], display.human_size)))
        rows += [("note", note) for note in self.notes]
        return rows

    def __str__(self) -> str:
        return display.text_table(f"Comparison of {self.old} → {self.new}", self._rows())

    def _repr_html_(self) -> str:
        return display.html_table(f"Comparison of {self.old} → {self.new}", self._rows())

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "breaking": not self,
            "schema": [{"what": c.what, "breaking": c.breaking} for c in self.schema],
            "sample": self.sample.to_dict() if self.sample else None,
            "traffic": self.traffic.to_dict() if self.traffic else None,
            "lock": {
                "added": self.lock_added,
                "removed": self.lock_removed,
                "changed": [{"name": n, "old": o, "new": v} for n, o, v in self.lock_changed],
            },
            "sizes": {"old": self.sizes[0], "new": self.sizes[1]},
            "dependency_layers": (
                {"old": self.dependency_layers[0], "new": self.dependency_layers[1]} if self.dependency_layers else None
            ),
            "footprints": {"old": self.footprints[0], "new": self.footprints[1]} if self.footprints else None,
            "ratios": self.ratios(),
            "notes": self.notes,
        }


def compare(
    old: str | Bundle,
    new: str | Bundle,
    *,
    traffic: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    measure_serving: bool = True,
    platform: str = "linux/amd64",
    rtol: float = RTOL,
    atol: float = ATOL,
) -> Comparison:
    """The deployment diff of moving from ``old`` to ``new`` (see the module's docstring). ``traffic``
    is a prediction log (or several) replayed against ``new``; ``measure_serving=False`` skips the two
    fresh-Python measurements; the dependency layers compared are those built for ``platform``."""
    store = store if isinstance(store, Store) else Store(store)
    before, after = load(old, store), load(new, store)
    notes: list[str] = []
    changes = schema_changes(before, after)
    records = _sample_records(before)
    common = [r for r in records if r.method in after.methods]
    sample = replay_records(common, after, before, rtol=rtol, atol=atol) if common else None
    if sample is None:
        notes.append("the new version has none of the old one's methods: no sample agreement")
    replayed = replay(traffic, after, before, store=store, rtol=rtol, atol=atol) if traffic else None
    added, removed, changed = _lock_diff(before.lock(), after.lock())
    footprints = (measure(before.path), measure(after.path)) if measure_serving else None
    layers = _dependency_layers(before, after, store, platform)
    if layers is None:
        notes.append(
            f"the dependency layers for {platform} are not both in the layer cache: push or build both to compare them"
        )
    return Comparison(
        before.ref,
        after.ref,
        changes,
        sample,
        replayed,
        added,
        removed,
        changed,
        (before.size, after.size),
        layers,
        footprints,
        notes,
    )


def _dependency_layers(before: Bundle, after: Bundle, store: Store, platform: str) -> tuple[int, int] | None:
    """The compressed sizes of the two versions' dependency layers, when the store's layer cache has both:
    the part of an image that a change of the lock changes (building them here would take minutes)."""
    from .image.build import dependency_facts
    from .image.cache import layer_key
    from .image.publish import layer_cache

    cache = layer_cache(store)
    found = [cache.get(layer_key(dependency_facts(b, platform)), use=False) for b in (before, after)]
    if found[0] is None or found[1] is None:
        return None
    return found[0].layer.size, found[1].layer.size


def read_policy(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The limits in a policy file (YAML, or JSON, which is YAML too), checked against ``POLICY_LIMITS``."""
    import yaml  # here, not above: the CLI imports this module, and an image's runtime has no PyYAML

    try:
        policy = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PolicyError(f"cannot read the policy {path}: {error}") from None
    if not isinstance(policy, dict):
        raise PolicyError(f"the policy {path} must be a mapping of limits, e.g. 'min_sample_agreement: 0.99'")
    unknown = sorted(set(policy) - set(POLICY_LIMITS))
    if unknown:
        raise PolicyError(f"the policy {path} has unknown limits {unknown}; known: {', '.join(POLICY_LIMITS)}")
    for key, value in policy.items():
        flag = key == "block_breaking_schema"
        if isinstance(value, bool) != flag or not isinstance(value, (int, float)):
            raise PolicyError(
                f"the policy {path}: {key} must be {'true or false' if flag else 'a number'}, got {value!r}"
            )
    return policy


def schema_changes(old: Bundle, new: Bundle) -> list[SchemaChange]:
    """The differences between the schemas of ``old`` and ``new``, breaking ones first."""
    changes = [SchemaChange(f"method {m} is gone", True) for m in old.methods if m not in new.methods]
    changes += [SchemaChange(f"method {m} is new", False) for m in new.methods if m not in old.methods]
    changes += input_changes(old.input_schema, new.input_schema)
    for method in (m for m in old.methods if m in new.methods):
        before, after = old.output_schema(method), new.output_schema(method)
        if before.to_dict() != after.to_dict():
            changes.append(SchemaChange(f"the answers of {method}: {before.describe()} → {after.describe()}", True))
    return sorted(changes, key=lambda c: not c.breaking)


def input_changes(old: Schema, new: Schema) -> list[SchemaChange]:
    """The differences between two request schemas, each marked breaking or not."""
    if isinstance(old, TensorSchema) and isinstance(new, TensorSchema):
        changes = []
        if old.shape != new.shape:
            changes.append(SchemaChange(f"rows of shape {list(old.shape)} → {list(new.shape)}", True))
        changes += _kind_changes("the rows", old.kind, new.kind, old.domain, new.domain)
        return changes
    if isinstance(old, TableSchema) and isinstance(new, TableSchema):
        return _column_changes(old, new)
    return [SchemaChange(f"the input: {old.describe()} → {new.describe()}", True)]


def _column_changes(old: TableSchema, new: TableSchema) -> list[SchemaChange]:
    before = {c.name: c for c in old.columns}
    after = {c.name: c for c in new.columns}
    gone = [n for n in before if n not in after]
    arrived = [n for n in after if n not in before]
    changes = []
    for name in gone:
        renamed = [n for n in arrived if after[n].kind == before[name].kind]
        hint = f" (renamed to {' or '.join(repr(n) for n in renamed)}?)" if renamed else ""
        changes.append(SchemaChange(f"column '{name}' is gone: rows that send it are refused{hint}", True))
    for name in arrived:
        required = not after[name].optional
        changes.append(SchemaChange(f"column '{name}' is new and {'required' if required else 'optional'}", required))
    for name in (n for n in before if n in after):
        was, now = before[name], after[name]
        if was.optional and not now.optional:
            changes.append(SchemaChange(f"column '{name}' was optional and is now required", True))
        elif now.optional and not was.optional:
            changes.append(SchemaChange(f"column '{name}' is now optional", False))
        changes += _kind_changes(f"column '{name}'", was.kind, now.kind, was.domain, now.domain)
        changes += _category_changes(name, was, now)
    if [n for n in old.names if n in after] != [n for n in new.names if n in before]:
        changes.append(SchemaChange("the column order changed: rows sent as lists are read differently", True))
    return changes


def _kind_changes(where: str, was: str, now: str, before: Domain, after: Domain) -> list[SchemaChange]:
    changes = []
    if was != now:
        widened = was in _ACCEPTS.get(now, set())
        changes.append(SchemaChange(f"{where}: {was} → {now}", not widened))
    if now == FLOAT and was == FLOAT:
        if before.nullable and not after.nullable:
            changes.append(SchemaChange(f"{where} no longer takes missing values", True))
        if after.limit is not None and (before.limit is None or after.limit < before.limit):
            changes.append(SchemaChange(f"{where} takes numbers within ±{after.limit:.6g} only", True))
    return changes


def _category_changes(name: str, was: Column, now: Column) -> list[SchemaChange]:
    if was.kind != CATEGORY or now.kind != CATEGORY or was.categories is None:
        return []
    if now.categories is None:
        return [SchemaChange(f"column '{name}' takes any value now", False)]
    lost = [c for c in was.categories if c not in now.categories]
    new = [c for c in now.categories if c not in was.categories]
    changes = []
    if lost:
        changes.append(SchemaChange(f"column '{name}' no longer takes {', '.join(map(repr, lost))}", True))
    if new:
        changes.append(SchemaChange(f"column '{name}' also takes {', '.join(map(repr, new))}", False))
    return changes


def _sample_records(bundle: Bundle) -> list[Record]:
    """The stored sample as records: each row with the answers the version gave at capture."""
    rows = bundle.sample["instances"]
    return [
        Record(
            method,
            row,
            answers[i] if isinstance(answers, list) and len(answers) == len(rows) else answers,
            bundle.name,
            bundle.version,
        )
        for method, answers in bundle.sample["outputs"].items()
        for i, row in enumerate(rows)
    ]


def _lock_diff(old: list[str], new: list[str]) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    def pins(lines: list[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for line in lines:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = (name, version)
        return found

    before, after = pins(old), pins(new)
    added = [f"{after[k][0]}=={after[k][1]}" for k in sorted(after.keys() - before.keys())]
    removed = [f"{before[k][0]}=={before[k][1]}" for k in sorted(before.keys() - after.keys())]
    changed = [
        (after[k][0], before[k][1], after[k][1])
        for k in sorted(before.keys() & after.keys())
        if before[k][1] != after[k][1]
    ]
    return added, removed, changed


def _pair(old: float, new: float, show: Any) -> str:
    ratio = f" ({new / old:.2f}x)" if old else ""
    return f"{show(old)} → {show(new)}{ratio}"


def _disagreement(d: Disagreement) -> str:
    return f"{d.method}: was {display.shorten(d.recorded)}, now {display.shorten(d.answered)}"
