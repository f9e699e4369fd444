"""Warnings raised again and again during one operation, shown once each with a count.

A capture calls the model many times (every method, row by row for batching, probes of values and
columns), and libraries warn on each call ("X does not have valid feature names"); a dozen copies of
one line bury the capture's own summary. ``once`` records the warnings of a block and, at its end,
re-issues each distinct one a single time, saying how often it was raised, through the caller's own
warning filters (an ignored warning stays ignored).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
_state = threading.local()


@contextlib.contextmanager
def once() -> Iterator[None]:
    """Collapse the repeated warnings raised inside the block; nested blocks report at the outermost."""
    if getattr(_state, "depth", 0):
        _state.depth += 1
        try:
            yield
        finally:
            _state.depth -= 1
        return
    _state.depth = 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        _state.depth = 0
    counts: dict[tuple[type[Warning], str], list[warnings.WarningMessage]] = {}
    for caught_warning in caught:
        counts.setdefault((caught_warning.category, str(caught_warning.message)), []).append(caught_warning)
    for (category, message), seen in counts.items():
        first = seen[0]
        text = message if len(seen) == 1 else f"{message} (raised {len(seen)} times; shown once)"
        warnings.warn_explicit(text, category, first.filename, first.lineno or 0)


def collapsed(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` with its repeated warnings shown once each (see ``once``)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with once():
            return function(*args, **kwargs)

    return wrapper
