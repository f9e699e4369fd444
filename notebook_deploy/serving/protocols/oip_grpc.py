"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` (KServe's
``grpc_predict_v2.proto``; the same names and field numbers as Triton's), served by grpc.aio in the event
loop of the HTTP server, on ``ServeSettings.grpc_port``.

It starts in the app's startup (``ServedModel.startup``) and stops in its shutdown, after the HTTP
server has stopped taking requests: new calls are refused, calls in flight get up to
``graceful_timeout`` seconds to finish. Tensors and errors are those of the REST routes (``oip``):
inputs come as typed ``contents`` or as ``raw_input_contents``; outputs always go as
``raw_output_contents``, which is what tritonclient's ``as_numpy`` and KServe's client read. Errors map to
status codes: a request that does not fit → INVALID_ARGUMENT, an unknown model or version → NOT_FOUND,
a full queue → UNAVAILABLE, a model that raised → INTERNAL.

Where it listens: the host the HTTP server is bound to (``ServeSettings.grpc_host``, which the runner
sets to it; loopback when the app runs in-process), on ``grpc_port``; port 0 picks a free port, which is
logged. Keys (``auth``) and TLS (``tls_cert``/``tls_key``) apply to gRPC too. With
several workers each worker process serves gRPC on the same port (``SO_REUSEPORT``, which grpc sets on
Linux and which is turned on here only then, so that a single server whose port is taken fails to start
rather than sharing it with another process) and the kernel spreads connections over them.

The stubs ``grpc_predict_v2_pb2.py`` and ``grpc_predict_v2_pb2_grpc.py``, and the type stub
``grpc_predict_v2_pb2.pyi`` that tells mypy the messages the generated module makes at run time, were
generated from ``grpc_predict_v2.proto`` with grpcio-tools 1.63.0 (protoc of protobuf 5.26.1, whose generated code loads
on every protobuf from 5.26 on), from the repository's root::

    pip install grpcio-tools==1.63.0
    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \\
        notebook_deploy/serving/protocols/grpc_predict_v2.proto
    sed -i 's/_descriptor_pool.Default().AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' \\
        notebook_deploy/serving/protocols/grpc_predict_v2_pb2.py

The last step puts the messages in a descriptor pool of their own: tritonclient and kserve define the
same ``inference.*`` messages in the default pool, and a model that imports either must still load.
tests/test_oip.py checks the generated descriptor against the .proto and Triton's field numbers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from ...errors import RequestError, ServeError
from .. import auth
from ..served import ANSWERED, error_answer
from . import grpc_predict_v2_pb2 as pb
from . import grpc_predict_v2_pb2_grpc as pb_grpc
from .oip import BYTES, DATATYPES, NUMERIC, OipModel, Tensor, element_count, from_raw, to_raw

if TYPE_CHECKING:
    from ..served import ServedModel

# uvicorn's own logger, so that the gRPC address is shown where uvicorn shows the HTTP one
log = logging.getLogger("uvicorn.error")

# Which field of InferTensorContents carries each datatype (FP16 only travels raw).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_STATUS = {404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}


def attach(served: ServedModel, model: OipModel) -> None:
    """Serve ``model`` over gRPC on ``served.settings.grpc_port`` while the app runs."""
    settings = served.settings
    state: dict[str, Any] = {}

    async def start() -> None:
        server = grpc.aio.server(
            interceptors=auth.grpc_interceptors(served),
            options=[
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(model), server)
        host = settings.grpc_host or "127.0.0.1"
        address = f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"
        try:
            if settings.tls_cert and settings.tls_key:
                credentials = grpc.ssl_server_credentials(
                    [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
                )
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise ServeError(f"cannot serve gRPC on {address} (is the port in use?): {error}") from None
        await server.start()
        state["server"] = server
        log.info("Open Inference Protocol over gRPC on %s (port %d, process %d)", address, port, os.getpid())

    async def stop() -> None:
        server = state.pop("server", None)
        if server is not None:
            await server.stop(settings.graceful_timeout)

    served.startup.append(start)
    served.shutdown.append(stop)


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of the service, over one ``OipModel``."""

    def __init__(self, model: OipModel) -> None:
        self.model = model

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - the service's names
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.model.served.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        await _run(context, self.model.check, request.name, request.version)
        return pb.ModelReadyResponse(ready=self.model.served.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(**self.model.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        await _run(context, self.model.check, request.name, request.version)
        metadata = self.model.metadata()
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[tensor(**spec) for spec in metadata["inputs"]],
            outputs=[tensor(**spec) for spec in metadata["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        model = self.model

        async def infer() -> list[Tensor]:
            model.check(request.model_name, request.model_version)
            return await model.infer(_inputs(request), [output.name for output in request.outputs])

        outputs = await _run(context, infer)
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for tensor in outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(to_raw(tensor))
        return response


async def _run(context: Any, call: Any, *args: Any) -> Any:
    """``call(*args)`` (awaited if it is a coroutine), with the errors of a request as gRPC status codes."""
    try:
        result = call(*args)
        if hasattr(result, "__await__"):
            result = await result
        return result
    except ANSWERED as error:  # the statuses the REST routes would answer, as gRPC codes
        status, message, _ = error_answer(error)
    code = _STATUS.get(status, grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL)
    await context.abort(code, message)


def _inputs(request: Any) -> list[Tensor]:
    """The input tensors of a ModelInferRequest, from ``raw_input_contents`` or from typed ``contents``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            400, f"raw_input_contents has {len(raw)} entries; it needs one per input ({len(request.inputs)})"
        )
    if not request.inputs:
        raise RequestError(400, "the request has no inputs")
    tensors = []
    for index, spec in enumerate(request.inputs):
        name, datatype, shape = spec.name, spec.datatype, list(spec.shape)
        if datatype not in DATATYPES:
            raise RequestError(400, f"input '{name}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        if any(size < 0 for size in shape):
            raise RequestError(400, f"input '{name}': its shape {shape} has a negative size")
        if raw:
            data = from_raw(raw[index], datatype, shape, name)
        else:
            data = _from_contents(spec, datatype, shape, name)
        tensors.append(Tensor(name, datatype, shape, data))
    return tensors


def _from_contents(spec: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    field = CONTENTS.get(datatype)
    if field is None:
        raise RequestError(400, f"input '{name}': {datatype} data must be sent in raw_input_contents")
    values = getattr(spec.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise RequestError(400, f"input '{name}' has {len(values)} values in {field}; its shape {shape} needs {count}")
    if datatype == BYTES:
        return from_raw(b"".join(len(v).to_bytes(4, "little") + v for v in values), BYTES, shape, name)
    try:
        return np.asarray(values, dtype=NUMERIC[datatype])
    except (OverflowError, ValueError) as error:
        raise RequestError(400, f"input '{name}': {error}") from None
