"""Instrumentation of every handler of every service: request context, one log line per RPC,
errors to a rich status, request decoding and admission. Handlers are wrapped once, when a
service registers (InstrumentingServer).

Every line logged while a request runs carries its request id, method and peer (and the
partner, once authentication binds it), because they live in the request's log context (logs.py).

The request arrives as bytes and is decoded here, so a body that does not decode is an
INVALID_ARGUMENT with one log line like any other refusal, and a body above its method's size
limit is refused before it is parsed (parsing, not the bytes, is what costs memory). Concurrency
is counted here too, from the moment the request has arrived: a call that never sends its
message holds no slot (grpc's own maximum_concurrent_rpcs counts such calls), and streams have
their own pool, with a share per peer host, so they can never starve unary calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import grpc
import structlog
from google.protobuf.message import DecodeError
from sqlalchemy import exc as sa_exc

from services.common import logs
from services.common.errors import InvalidArgument, ResourceExhausted, ServiceError, Unavailable
from services.common.metrics import Metrics, RpcSeries
from services.common.tls import caller_identity
from services.common.validation import check_no_nul

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_LENGTH_MAX = 128
_log = structlog.get_logger("rpc")


# A call without x-request-id gets this process's random prefix and a count: unique like a
# UUID, without uuid4's read of the system's random source on every call.
_GENERATED_ID_PREFIX = os.urandom(8).hex()
_generated_ids = itertools.count(1)


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= REQUEST_ID_LENGTH_MAX:
            return value
    return f"{_GENERATED_ID_PREFIX}{next(_generated_ids):016x}"


def as_service_error(error: Exception) -> ServiceError | None:
    """Map infrastructure failures that a client should retry to UNAVAILABLE."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry with the same ids")
    return None


async def _abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    details = error.to_rpc_status().SerializeToString()
    trailing_metadata = (("grpc-status-details-bin", details), *error.trailing_metadata())
    await context.abort(error.code, error.message, trailing_metadata=trailing_metadata)


class _Call:
    """Bookkeeping of one RPC: binds context, then logs (and counts, with metrics) its outcome exactly once."""

    __slots__ = ("method", "reason", "series", "started", "status")

    def __init__(self, method: str, context: grpc.aio.ServicerContext, series: RpcSeries | None) -> None:
        self.method = method
        self.series = series
        self.started = time.perf_counter()
        self.status = "OK"
        self.reason = ""
        logs.start_request(
            request_id=_request_id(context), rpc_method=method, peer=context.peer(), caller=caller_identity(context)
        )

    async def fail(self, error: Exception, context: grpc.aio.ServicerContext) -> None:
        service_error = as_service_error(error)
        if service_error is None:
            _log.exception("rpc_internal_error")
            self.status, self.reason = "INTERNAL", "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; it has been logged")
        self.status, self.reason = service_error.code.name, service_error.reason
        await _abort(context, service_error)

    def finish(self) -> None:
        seconds = time.perf_counter() - self.started
        if self.series is not None:
            self.series.record(self.status, seconds)
        duration_ms = round(seconds * 1000, 3)
        fields = {"status": self.status, "duration_ms": duration_ms}
        if self.reason:
            fields["reason"] = self.reason
        if self.status in ("OK", "CANCELLED") or self.status in _CLIENT_STATUSES:
            _log.info("rpc_finished", **fields)
        else:
            _log.warning("rpc_finished", **fields)


_CLIENT_STATUSES = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
}


@dataclass(frozen=True, slots=True)
class CallLimits:
    """What one server admits: concurrent calls by kind, and request sizes by method."""

    unary_calls_max: int = 1024
    streams_max: int = 64
    streams_per_peer_host_max: int = 16
    request_bytes_max_default: int = 64 * 1024
    # Methods (short names, e.g. "CreateTransfers") allowed a larger request than the default.
    request_bytes_max_by_method: Mapping[str, int] = field(default_factory=dict)

    def request_bytes_max(self, method_name: str) -> int:
        return self.request_bytes_max_by_method.get(method_name, self.request_bytes_max_default)

    @property
    def receive_bytes_max(self) -> int:
        """The largest request of any method: grpc's max_receive_message_length."""
        return max([self.request_bytes_max_default, *self.request_bytes_max_by_method.values()])


class Admission:
    """Counts calls whose request has arrived. All of it runs on the server's event loop thread."""

    def __init__(self, limits: CallLimits) -> None:
        self.limits = limits
        self.unary_calls = 0
        self.streams = 0
        self.streams_by_peer_host: collections.Counter[str] = collections.Counter()

    def enter_unary(self) -> None:
        """Count a unary call in, or refuse it; the caller runs `leave_unary` once it is done.
        (Not a context manager: every call of every service passes here, and a generator-based
        one costs several times the counting.)"""
        if self.unary_calls >= self.limits.unary_calls_max:
            raise ResourceExhausted(
                "TOO_MANY_CONCURRENT_CALLS",
                f"the server is handling {self.limits.unary_calls_max} calls; retry with backoff",
                limit=self.limits.unary_calls_max,
            )
        self.unary_calls += 1

    def leave_unary(self) -> None:
        self.unary_calls -= 1

    @contextlib.contextmanager
    def stream(self, peer_host: str) -> Iterator[None]:
        if self.streams_by_peer_host[peer_host] >= self.limits.streams_per_peer_host_max:
            raise ResourceExhausted(
                "TOO_MANY_STREAMS_FROM_PEER",
                f"at most {self.limits.streams_per_peer_host_max} open streams per client host; close one first",
                limit=self.limits.streams_per_peer_host_max,
            )
        if self.streams >= self.limits.streams_max:
            raise ResourceExhausted(
                "TOO_MANY_STREAMS",
                f"the server has {self.limits.streams_max} open streams; retry with backoff",
                limit=self.limits.streams_max,
            )
        self.streams += 1
        self.streams_by_peer_host[peer_host] += 1
        try:
            yield
        finally:
            self.streams -= 1
            self.streams_by_peer_host[peer_host] -= 1
            if not self.streams_by_peer_host[peer_host]:
                del self.streams_by_peer_host[peer_host]


def peer_host(context: grpc.aio.ServicerContext) -> str:
    """`ipv4:10.0.0.7:51234` -> `ipv4:10.0.0.7`; `ipv6:[::1]:5000` -> `ipv6:[::1]`."""
    peer = context.peer() or ""
    host, _, port = peer.rpartition(":")
    return host if host and port.isdigit() else peer


class _Decoder:
    """Bytes to request message: size limit first, then parse; both failures are the caller's."""

    __slots__ = ("_bytes_max", "_deserialize")

    def __init__(self, deserialize, bytes_max: int) -> None:
        self._deserialize = deserialize
        self._bytes_max = bytes_max

    def __call__(self, raw: bytes):
        if len(raw) > self._bytes_max:
            raise ResourceExhausted(
                "REQUEST_TOO_LARGE",
                f"the request is {len(raw)} bytes; this method accepts at most {self._bytes_max}",
                limit_bytes=self._bytes_max,
            )
        if self._deserialize is None:
            return raw
        try:
            request = self._deserialize(raw)
        except DecodeError as error:
            raise InvalidArgument(
                "INVALID_REQUEST_ENCODING", f"the request body is not a valid protobuf message: {error}"
            ) from None
        check_no_nul(request, raw)
        return request


def _wrap_unary_unary(method: str, behavior, decode: _Decoder, admission: Admission, series: RpcSeries | None):
    async def handle(raw, context):
        call = _Call(method, context, series)
        admitted = False
        try:
            admission.enter_unary()
            admitted = True
            return await behavior(decode(raw), context)
        except asyncio.CancelledError:
            call.status = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # every error becomes a status on purpose
            await call.fail(error, context)
        finally:
            if admitted:
                admission.leave_unary()
            call.finish()

    return handle


def _wrap_unary_stream(method: str, behavior, decode: _Decoder, admission: Admission, series: RpcSeries | None):
    async def handle(raw, context):
        call = _Call(method, context, series)
        try:
            with admission.stream(peer_host(context)):
                request = decode(raw)
                async for response in behavior(request, context):
                    yield response
        except asyncio.CancelledError:
            call.status = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await call.fail(error, context)
        finally:
            call.finish()

    return handle


def wrap_handler(
    method: str, handler: grpc.RpcMethodHandler, admission: Admission, metrics: Metrics | None = None
) -> grpc.RpcMethodHandler:
    """Request context, decoding, admission, one log line and error mapping, bound to one method handler.

    The handler is registered without a request deserializer (grpc hands over the bytes) so that
    decoding happens inside the wrapper, where its failures become a status like any other.
    """
    decode = _Decoder(handler.request_deserializer, admission.limits.request_bytes_max(method.rsplit("/", 1)[-1]))
    series = metrics.rpc(method) if metrics is not None else None
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_unary(method, handler.unary_unary, decode, admission, series),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_unary_stream(method, handler.unary_stream, decode, admission, series),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )
    raise ValueError(f"{method}: only unary-request methods are supported by the instrumentation")


class InstrumentingServer:
    """Stands in for the server while services register: wraps each of our method handlers once.

    Wrapping at registration avoids grpc.aio's per-call server-interceptor machinery on every call.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        admission: Admission,
        package_prefix: str = "coalition.",
        metrics: Metrics | None = None,
    ) -> None:
        self._server = server
        self.admission = admission
        self.metrics = metrics
        self._prefix = package_prefix
        self.generic_handlers: list[_WrappingGenericHandler] = []

    def add_registered_method_handlers(self, service_name: str, handlers: dict) -> None:
        if service_name.startswith(self._prefix):
            handlers = {
                name: wrap_handler(f"/{service_name}/{name}", h, self.admission, self.metrics)
                for name, h in handlers.items()
            }
        self._server.add_registered_method_handlers(service_name, handlers)

    def add_generic_rpc_handlers(self, generic_handlers) -> None:
        wrapped = []
        for handler in generic_handlers:
            if _service_name(handler).startswith(self._prefix):
                handler = _WrappingGenericHandler(handler, self.admission, self.metrics)
                self.generic_handlers.append(handler)
            wrapped.append(handler)
        self._server.add_generic_rpc_handlers(tuple(wrapped))

    def __getattr__(self, name: str):
        return getattr(self._server, name)


class _WrappingGenericHandler(grpc.GenericRpcHandler):
    """For calls that arrive without the registered-method fast path: wrap on first use.

    Only methods the inner handler knows are cached, so the cache is bounded by the service's
    methods; a caller sending unknown names (answered UNIMPLEMENTED) adds nothing to it.
    """

    def __init__(self, inner, admission: Admission, metrics: Metrics | None = None) -> None:
        self._inner = inner
        self._admission = admission
        self._metrics = metrics
        self.wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        wrapped = self.wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            wrapped = self.wrapped[method] = wrap_handler(method, handler, self._admission, self._metrics)
        return wrapped


def _service_name(generic_handler) -> str:
    service_name = getattr(generic_handler, "service_name", None)
    return service_name() if callable(service_name) else ""
