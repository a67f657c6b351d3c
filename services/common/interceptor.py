"""Instrumentation of every handler of every service: request context, one log line per RPC,
errors to a rich status. Handlers are wrapped once, when a service registers (InstrumentingServer).

Every line logged while a request runs carries its request id, method and peer (and the
partner, once authentication binds it), because they live in structlog's contextvars.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import structlog
from sqlalchemy import exc as sa_exc

from services.common.errors import ServiceError, Unavailable

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_LENGTH_MAX = 128
_log = structlog.get_logger("rpc")


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= REQUEST_ID_LENGTH_MAX:
            return value
    return uuid.uuid4().hex


def as_service_error(error: Exception) -> ServiceError | None:
    """Map infrastructure failures that a client should retry to UNAVAILABLE."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry with the same ids")
    return None


async def _abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    details = error.to_rpc_status().SerializeToString()
    await context.abort(error.code, error.message, trailing_metadata=(("grpc-status-details-bin", details),))


class _Call:
    """Bookkeeping of one RPC: binds context, then logs its outcome exactly once."""

    __slots__ = ("method", "reason", "started", "status")

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.status = "OK"
        self.reason = ""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=_request_id(context), rpc_method=method, peer=context.peer())

    async def fail(self, error: Exception, context: grpc.aio.ServicerContext) -> None:
        service_error = as_service_error(error)
        if service_error is None:
            _log.exception("rpc_internal_error")
            self.status, self.reason = "INTERNAL", "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; it has been logged")
        self.status, self.reason = service_error.code.name, service_error.reason
        await _abort(context, service_error)

    def finish(self) -> None:
        duration_ms = round((time.perf_counter() - self.started) * 1000, 3)
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


def _wrap_unary_unary(method: str, behavior):
    async def handle(request, context):
        call = _Call(method, context)
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            call.status = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # every error becomes a status on purpose
            await call.fail(error, context)
        finally:
            call.finish()

    return handle


def _wrap_unary_stream(method: str, behavior):
    async def handle(request, context):
        call = _Call(method, context)
        try:
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


def wrap_handler(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Request context, one log line and error mapping, bound to one method handler."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_unary(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_unary_stream(method, handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class InstrumentingServer:
    """Stands in for the server while services register: wraps each of our method handlers once.

    Wrapping at registration avoids grpc.aio's per-call server-interceptor machinery on every call.
    """

    def __init__(self, server: grpc.aio.Server, package_prefix: str = "coalition.") -> None:
        self._server = server
        self._prefix = package_prefix

    def add_registered_method_handlers(self, service_name: str, handlers: dict) -> None:
        if service_name.startswith(self._prefix):
            handlers = {name: wrap_handler(f"/{service_name}/{name}", h) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service_name, handlers)

    def add_generic_rpc_handlers(self, generic_handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(
                _WrappingGenericHandler(h) if _service_name(h).startswith(self._prefix) else h for h in generic_handlers
            )
        )

    def __getattr__(self, name: str):
        return getattr(self._server, name)


class _WrappingGenericHandler(grpc.GenericRpcHandler):
    """For calls that arrive without the registered-method fast path: wrap on first use."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method not in self._wrapped:
            handler = self._inner.service(handler_call_details)
            self._wrapped[method] = None if handler is None else wrap_handler(method, handler)
        return self._wrapped[method]


def _service_name(generic_handler) -> str:
    service_name = getattr(generic_handler, "service_name", None)
    return service_name() if callable(service_name) else ""
