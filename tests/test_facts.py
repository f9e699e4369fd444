"""Facts written once in Python and repeated only where a language boundary forces it (the TypeScript
sidebar cannot import Python): each repetition is checked equal to its source here."""

from __future__ import annotations

import re
from pathlib import Path

from notebook_deploy.image import BACKENDS

ROOT = Path(__file__).parent.parent


def test_the_sidebar_offers_the_push_backends_that_push_takes() -> None:
    source = (ROOT / "labextension" / "src" / "dialogs.ts").read_text()
    found = re.search(r"export const BACKENDS = \[([^\]]*)\]", source)
    assert found, "labextension/src/dialogs.ts no longer declares BACKENDS"
    assert tuple(re.findall(r"'([^']*)'", found.group(1))) == BACKENDS
