"""The wire protocols a served bundle speaks. Each module adds its routes to a ``ServedModel``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import mlflow, native, oip, openai, tfserving

if TYPE_CHECKING:
    from ..served import ServedModel


def _oip_grpc(served: ServedModel) -> None:
    """The Open Inference Protocol over gRPC, on ``settings.grpc_port`` where one is set: grpc is only
    imported then, since importing it costs a server that does not speak it a noticeable start-up."""
    if served.settings.grpc_port is not None:
        from . import oip_grpc

        oip_grpc.attach(served, served.app.state.oip)  # the REST routes' (oip.add_routes)


PROTOCOLS: list[Callable[[ServedModel], None]] = [
    native.add_routes,
    oip.add_routes,
    _oip_grpc,
    tfserving.add_routes,
    mlflow.add_routes,
    openai.add_routes,
]
