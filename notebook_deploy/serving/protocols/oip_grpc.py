"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` (KServe's
``grpc_predict_v2.proto``; the same names and field numbers as Triton's), served by grpc.aio in the event
loop of the HTTP server, on ``ServeSettings.grpc_port``.

One ``Servicer`` answers the calls over ``Models``, which finds the model of each call: ``One``, the model
of an app, or, where one server serves several versions and models, the router's (``router._Grpc``: split
by the canaries' shares, copied to shadows, pinned by ``model_version``). Every inference answer names the
bundle that gave it in the trailing metadata ``x-model-version`` (errors included), and is counted in that
model's metrics under the endpoint ``/inference.GRPCInferenceService/ModelInfer``, with the status the same
answer has over REST.

The server (``GrpcServer``) starts in the app's startup (``ServedModel.startup``, or the router's
lifespan) and stops in its shutdown, after the HTTP server has stopped taking requests: new calls are
refused, calls in flight get up to ``graceful_timeout`` seconds to finish. Tensors and errors are those
of the REST routes (``oip``): inputs come as typed ``contents`` or as ``raw_input_contents``; outputs
always go as ``raw_output_contents``, which is what tritonclient's ``as_numpy`` and KServe's client read.
Errors map to status codes: a request that does not fit → INVALID_ARGUMENT, an unknown model or version
→ NOT_FOUND, a full queue → UNAVAILABLE, a model that raised → INTERNAL.

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

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import numpy as np

from ...errors import RequestError, ServeError
from .. import auth
from ..served import VERSION_HEADER, error_answer
from ..web import ANSWERED
from . import grpc_predict_v2_pb2 as pb
from . import grpc_predict_v2_pb2_grpc as pb_grpc
from .oip import BYTES, DATATYPES, NUMERIC, OipModel, Tensor, element_count, from_raw, to_raw

if TYPE_CHECKING:
    from ..served import ServedModel
    from ..settings import ServeSettings

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
VERSION_KEY = VERSION_HEADER.lower()  # gRPC metadata keys are lower-case
# ModelInfer's method, the endpoint its calls are counted under in the metrics
INFER = f"/{pb.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name}/ModelInfer"
_STATUS = {404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}


Run = Callable[[OipModel], Awaitable[list[Tensor]]]  # an inference call's work, on a model given


class Models(Protocol):
    """The models the service reaches: the one model of an app (``One``), or the versions of several models
    in one server (``router._Grpc``), found again at every call."""

    def ready(self) -> bool:
        """Whether every model served has answered its stored sample (``ServerReady``)."""

    def find(self, name: str, version: str) -> OipModel:
        """The model that answers the metadata and readiness of ``name`` (and of ``version``, where given);
        a ``RequestError`` (404, or 400) naming what is served when there is none."""

    def answering(
        self, name: str, version: str, metadata: Mapping[str, str], run: Run
    ) -> contextlib.AbstractAsyncContextManager[OipModel]:
        """The model that answers an inference call (``metadata``: the call's, for a sticky caller), held
        while it answers; ``run`` is the call's inference, for the copies shadows get."""


class One:
    """The one model of an app: any other name or version is answered NOT_FOUND."""

    def __init__(self, model: OipModel) -> None:
        self.model = model

    def ready(self) -> bool:
        return self.model.served.ready

    def find(self, name: str, version: str) -> OipModel:
        self.model.check(name, version)
        return self.model

    @contextlib.asynccontextmanager
    async def answering(
        self, name: str, version: str, metadata: Mapping[str, str], run: Run
    ) -> AsyncIterator[OipModel]:
        yield self.find(name, version)


def attach(served: ServedModel, model: OipModel) -> None:
    """Serve ``model`` over gRPC on ``served.settings.grpc_port`` while the app runs."""
    server = GrpcServer(One(model), served.settings, auth.guard_of(served))
    served.startup.append(server.start)
    served.shutdown.append(server.stop)


class GrpcServer:
    """The service over ``models`` on ``settings.grpc_port``, with the keys ``guard`` checks: started and
    stopped by the app that serves HTTP (its lifespan)."""

    def __init__(self, models: Models, settings: ServeSettings, guard: auth.Guard) -> None:
        self.models, self.settings, self.guard = models, settings, guard
        self.server: Any = None

    async def start(self) -> None:
        settings = self.settings
        server = grpc.aio.server(
            interceptors=auth.grpc_interceptors(self.guard),
            options=[
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(self.models), server)
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
        self.server = server
        log.info("Open Inference Protocol over gRPC on %s (port %d, process %d)", address, port, os.getpid())

    async def stop(self) -> None:
        """Refuse new calls, and give those in flight up to ``graceful_timeout`` seconds."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop(self.settings.graceful_timeout)


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of the service, each over the model ``models`` finds for it."""

    def __init__(self, models: Models) -> None:
        self.models = models

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - the service's names
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.models.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        model = await _run(context, self.models.find, request.name, request.version)
        return pb.ModelReadyResponse(ready=model.served.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(**OipModel.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        model = await _run(context, self.models.find, request.name, request.version)
        metadata = model.metadata()
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[tensor(**spec) for spec in metadata["inputs"]],
            outputs=[tensor(**spec) for spec in metadata["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        names = [output.name for output in request.outputs]

        async def run(model: OipModel) -> list[Tensor]:
            """The request's inference on ``model``, counted in its metrics (HTTP requests are counted by
            their middleware), with the status the same answer has over REST."""
            metrics = model.served.metrics
            metrics.in_flight += 1
            start, status = time.perf_counter(), 500
            try:
                outputs = await model.infer(_inputs(request), names)
                status = 200
                return outputs
            except ANSWERED as error:
                status = error_answer(error)[0]
                raise
            finally:
                metrics.count(INFER, status, start)

        async def infer() -> tuple[OipModel, list[Tensor]]:
            metadata = dict(context.invocation_metadata() or ())
            async with self.models.answering(request.model_name, request.model_version, metadata, run) as model:
                context.set_trailing_metadata(((VERSION_KEY, model.bundle.ref),))  # errors included
                return model, await run(model)

        model, outputs = await _run(context, infer)
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
