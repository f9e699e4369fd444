"""The wire protocols a served bundle speaks. Each module adds its routes to a ``ServedModel``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import mlflow, native, oip, tfserving

if TYPE_CHECKING:
    from ..app import ServedModel

PROTOCOLS: list[Callable[[ServedModel], None]] = [
    native.add_routes,
    oip.add_routes,
    tfserving.add_routes,
    mlflow.add_routes,
]
