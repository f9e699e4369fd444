"""Which version of a model answers an inference request: the stable version or a canary, by their shares of
0..100, at a point drawn at random or, for a caller named by a sticky header, from that header's value (its
sha256), so that one caller always meets the same version. Pure decisions, shared by the local server
(``router.VersionRouter``) and the Ray Serve ingress (``targets.ray``), so both split traffic alike."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

# The options of ``serve`` that place versions, as a ``SettingError`` names them (the command line's flags,
# ``--canary`` ..., are derived from them), and the roles of the versions: the stable one, and those placed.
CANARY, SHADOW, STICKY_HEADER = "canary", "shadow", "sticky_header"
STABLE = "stable"


class Split:
    """The shares of one model's versions: the stable version (index 0) gets what the canaries' percents
    (indexes 1...) leave."""

    def __init__(self, percents: Sequence[float]) -> None:
        self.bounds = [100.0 - sum(percents)]
        for percent in percents:
            self.bounds.append(self.bounds[-1] + percent)

    def pick(self, point: float) -> int:
        """The index of the version whose share holds ``point`` (0 <= point < 100)."""
        for index, bound in enumerate(self.bounds):
            if point < bound:
                return index
        return 0


def point(sticky: bytes | None, draw: random.Random) -> float:
    """A point on 0..100: from the sticky header's value when the request has one, else drawn at random."""
    if sticky is not None:
        return int.from_bytes(hashlib.sha256(sticky).digest()[:8], "big") / 2**64 * 100
    return draw.random() * 100
