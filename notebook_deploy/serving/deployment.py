"""What one server serves (``Deployment``): one stable version per model name, canaries with their shares,
shadows, the sticky header, the tags it follows; parsed from ``serve``'s options, checked when made, and
written back as those options (for a child server, a worker, a Kubernetes container). Importing it
imports no server: ``runner.py`` starts the app that serves it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..bundle import Bundle
from ..errors import SettingError
from .follow import check_followable
from .rollback import THRESHOLDS
from .settings import ServeSettings, as_text, flag
from .split import CANARY, SHADOW, STICKY_HEADER


@dataclass(frozen=True)
class Deployment:
    """What one server serves: one stable version per model name, canaries (bundle, percent of that model's
    inference requests), shadows, the header whose value keeps a caller on one version, and the references
    (``churn:prod``, one per stable version) whose tags the server follows. Checked when made: a
    ``SettingError`` names the option (``canary``, ``shadow``, ``sticky_header``, ``refs``, ``follow``) that is
    wrong."""

    stable: tuple[Bundle, ...]
    canary: tuple[tuple[Bundle, float], ...] = ()
    shadow: tuple[Bundle, ...] = ()
    sticky_header: str | None = None
    follow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for bundle, percent in self.canary:
            if not 0 <= percent <= 100:
                raise SettingError(CANARY, f"{bundle.ref}: the percent must be from 0 to 100, not {percent:g}")
        names = [bundle.name for bundle in self.stable]
        if not names:
            raise SettingError("refs", "give at least one bundle to serve")
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise SettingError(
                "refs", f"{', '.join(twice)} given twice: serve one stable version per name, others with --canary"
            )
        for option, bundles in ((CANARY, [b for b, _ in self.canary]), (SHADOW, list(self.shadow))):
            for bundle in bundles:
                if bundle.name not in names:
                    raise SettingError(
                        option, f"{bundle.ref} is not a version of a model served here ({', '.join(names)})"
                    )
        for name in names:
            refs = [b.ref for b in self.versions_of(name)] + [b.ref for b in self.shadow if b.name == name]
            if len(set(refs)) != len(refs):
                raise SettingError(CANARY, f"a version of {name} is given twice: {', '.join(refs)}")
            total = sum(percent for bundle, percent in self.canary if bundle.name == name)
            if total > 100:
                raise SettingError(CANARY, f"the canaries of {name} get {total:g}% of its requests; at most 100")
        if self.sticky_header and not self.canary:
            raise SettingError(STICKY_HEADER, f"keeps callers on one version: it needs {flag(CANARY)}")
        if self.follow:
            check_followable(self.stable, self.follow)

    @classmethod
    def parse(
        cls,
        refs: Sequence[str],
        canary: Sequence[str] = (),
        shadow: Sequence[str] = (),
        sticky_header: str | None = None,
        *,
        load: Callable[[str], Bundle],
        follow: bool = False,
    ) -> Deployment:
        """The deployment the command line describes (``--canary REF=PERCENT``, ``--shadow REF``, ``--follow``),
        with each reference loaded by ``load``; a ``SettingError`` names the option and what was wrong (a
        canary or shadow that does not load too; the stable REFs raise their own errors)."""
        canaries = []
        for text in canary:
            ref, equals, percent = text.rpartition("=")
            if not equals or not ref:
                raise SettingError(CANARY, f"{text!r} is not REF=PERCENT (e.g. churn:3f2a=10)")
            try:
                share = float(percent)
            except ValueError:
                raise SettingError(CANARY, f"{text!r}: {percent!r} is not a percent") from None
            canaries.append((_load(load, ref, CANARY), share))
        return cls(
            tuple(load(ref) for ref in refs),  # REF's own errors, as when one bundle is served
            tuple(canaries),
            tuple(_load(load, ref, SHADOW) for ref in shadow),
            sticky_header or None,
            tuple(refs) if follow else (),
        )

    @classmethod
    def around(
        cls,
        stable: Bundle,
        canary: Sequence[str],
        shadow: Sequence[str],
        sticky_header: str | None,
        *,
        load: Callable[[str], Bundle],
    ) -> Deployment:
        """The versions of one model around ``stable``, a bundle loaded already: what ``k8s`` and ``ray`` deploy
        (one REF, given as a path or a Bundle there), parsed as ``parse`` does."""
        return cls.parse(
            [stable.ref], canary, shadow, sticky_header, load=lambda ref: stable if ref == stable.ref else load(ref)
        )

    def arguments(self, where: Callable[[Bundle], str] = lambda bundle: str(bundle.path)) -> list[str]:
        """The ``notebook-deploy serve`` options that give its canaries, shadows and sticky header, each version
        named by ``where(bundle)`` (its folder by default): what ``serve()`` passes its child server, and a
        Kubernetes container adds to its image's command. ``parse`` reads them back."""
        found: list[str] = []
        for bundle, percent in self.canary:
            found += [flag(CANARY), f"{where(bundle)}={as_text(percent)}"]
        for bundle in self.shadow:
            found += [flag(SHADOW), where(bundle)]
        if self.sticky_header:
            found += [flag(STICKY_HEADER), self.sticky_header]
        return found

    def versions_of(self, name: str) -> list[Bundle]:
        """The stable version of ``name`` and its canaries, in that order."""
        return [b for b in self.stable if b.name == name] + [b for b, _ in self.canary if b.name == name]

    @property
    def single(self) -> Bundle | None:
        """The one bundle served, when there is nothing to route or follow: then the plain app serves it."""
        alone = len(self.stable) == 1 and not self.canary and not self.shadow and not self.follow
        return self.stable[0] if alone else None

    def bundles(self) -> list[Bundle]:
        return [*self.stable, *(b for b, _ in self.canary), *self.shadow]

    def check(self, settings: ServeSettings) -> None:
        """Refuse settings that need canaries the deployment does not have, before any worker starts."""
        judging = [name for name in THRESHOLDS if getattr(settings, name) is not None]
        if judging and not self.canary:
            raise SettingError(judging[0], f"judges canaries: it needs {flag(CANARY)}")

    def to_json(self) -> str:
        """The deployment for worker processes: bundle folders, percents, header."""
        return json.dumps(
            {
                "stable": [str(b.path) for b in self.stable],
                "canary": [[str(b.path), percent] for b, percent in self.canary],
                "shadow": [str(b.path) for b in self.shadow],
                "sticky_header": self.sticky_header,
                "follow": list(self.follow),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        spec = json.loads(text)
        return cls(
            tuple(Bundle.open(Path(p)) for p in spec["stable"]),
            tuple((Bundle.open(Path(p)), float(percent)) for p, percent in spec["canary"]),
            tuple(Bundle.open(Path(p)) for p in spec["shadow"]),
            spec["sticky_header"],
            tuple(spec.get("follow", ())),
        )


def _load(load: Callable[[str], Bundle], ref: str, option: str) -> Bundle:
    try:
        return load(ref)
    except Exception as error:  # noqa: BLE001 - any failure to load is a bad option value here
        raise SettingError(option, f"{ref} does not load: {error}") from None
