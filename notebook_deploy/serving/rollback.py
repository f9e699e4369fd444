"""Automatic rollback of canaries (``serve ... --canary REF=PCT --rollback-error-rate 0.05``): the router
keeps, per version, the outcome of each inference request over the last ``rollback_window`` seconds, and
a canary whose share of 5xx answers exceeds the stable version's by more than ``rollback_error_rate``, or
whose p99 latency exceeds ``rollback_latency_ratio`` times the stable version's, over that same window,
is taken out of rotation once it has answered ``rollback_min_requests`` requests in it. So is a canary
whose drift (the largest PSI of its drift monitor's last report, each version against its own bundle's
reference, over the drift window's rows) exceeds the stable version's by more than ``rollback_drift``:
a canary retrained on data unlike what production sends, or whose predictions no longer look like
those it made on its reference.

Each worker process judges the requests it answered (the same thresholds, on a share of the traffic).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .settings import ServeSettings

CHECK_SECONDS = 0.5  # a canary is judged at most this often (its p99 is a sort of the window)
THRESHOLDS = ("rollback_error_rate", "rollback_latency_ratio", "rollback_drift")  # the settings that judge canaries


class _Outcomes:
    """One version's requests in the window: (time, failed, seconds) each, and how many failed."""

    def __init__(self) -> None:
        self.seen: deque[tuple[float, bool, float]] = deque()
        self.failed = 0
        self.judged = 0.0  # when it was last judged

    def add(self, now: float, failed: bool, seconds: float, window: float) -> None:
        self.seen.append((now, failed, seconds))
        self.failed += failed
        self.prune(now, window)

    def prune(self, now: float, window: float) -> None:
        """Forget the requests older than ``window`` seconds."""
        while self.seen and self.seen[0][0] < now - window:
            self.failed -= self.seen.popleft()[1]

    def error_rate(self) -> float:
        """The share of failed requests in the window (0 with none)."""
        return self.failed / len(self.seen) if self.seen else 0.0

    def p99(self) -> float | None:
        """The 99th percentile of the window's latencies, in seconds (None with no request)."""
        return float(np.percentile([s for _, _, s in self.seen], 99)) if self.seen else None


class Rollback:
    """The thresholds of ``ServeSettings`` and the outcomes they are applied to (see the module's docstring)."""

    def __init__(self, settings: ServeSettings, drift_of: Callable[[object], float | None]) -> None:
        self.error_rate = settings.rollback_error_rate
        self.latency_ratio = settings.rollback_latency_ratio
        self.drift = settings.rollback_drift
        self.drift_of = drift_of  # a version's largest PSI now, or None
        self.window = settings.rollback_window
        self.min_requests = settings.rollback_min_requests
        self.outcomes: dict[object, _Outcomes] = {}  # a router's version -> its outcomes

    @classmethod
    def of(cls, settings: ServeSettings, drift_of: Callable[[object], float | None]) -> Rollback | None:
        """The rollback the settings ask for, or None when they give no threshold."""
        return cls(settings, drift_of) if any(getattr(settings, name) is not None for name in THRESHOLDS) else None

    def record(self, version: object, failed: bool, seconds: float, now: float) -> None:
        """Count one answered inference request of ``version``."""
        self.outcomes.setdefault(version, _Outcomes()).add(now, failed, seconds, self.window)

    def verdict(self, stable: object, canary: object, now: float) -> dict[str, Any] | None:
        """Why ``canary`` must leave rotation, with the numbers (``{"reason", ...}``), or None."""
        mine = self.outcomes.get(canary)
        if mine is None or len(mine.seen) < self.min_requests or now - mine.judged < CHECK_SECONDS:
            return None
        mine.judged = now
        theirs = self.outcomes.get(stable, _Outcomes())
        theirs.prune(now, self.window)
        numbers = {
            "requests": len(mine.seen),
            "error_rate": round(mine.error_rate(), 4),
            "stable_error_rate": round(theirs.error_rate(), 4),
        }
        if self.error_rate is not None and mine.error_rate() - theirs.error_rate() > self.error_rate:
            return {
                "reason": f"error rate {mine.error_rate():.1%} against the stable version's {theirs.error_rate():.1%} "
                f"over the last {self.window:g}s: more than {self.error_rate:.1%} above it",
                **numbers,
            }
        p99, stable_p99 = mine.p99(), theirs.p99()
        if self.latency_ratio is not None and p99 is not None and stable_p99:
            if p99 > self.latency_ratio * stable_p99:
                return {
                    "reason": f"p99 latency {p99 * 1000:.1f} ms against the stable version's {stable_p99 * 1000:.1f} ms "
                    f"over the last {self.window:g}s: more than {self.latency_ratio:g} times it",
                    "p99_ms": round(p99 * 1000, 3),
                    "stable_p99_ms": round(stable_p99 * 1000, 3),
                    **numbers,
                }
        drift, stable_drift = self.drift_of(canary), self.drift_of(stable)
        if self.drift is not None and drift is not None and drift - (stable_drift or 0.0) > self.drift:
            return {
                "reason": f"drift: largest PSI {drift:.3f} against the stable version's {stable_drift or 0.0:.3f}, "
                f"each against its own reference: more than {self.drift:g} above it",
                "psi": round(drift, 4),
                "stable_psi": round(stable_drift or 0.0, 4),
                **numbers,
            }
        return None

    def forget(self, version: object) -> None:
        """Drop what is kept of a version that left the server."""
        self.outcomes.pop(version, None)
