"""Call-level errors: a gRPC status code, a stable machine-readable reason and an actionable message.

Use cases raise these; the server interceptor turns them into google.rpc.Status with an
ErrorInfo detail (AIP-193). Only UNAVAILABLE and ABORTED are meant to be retried, and a
RATE_LIMITED refusal once its RetryInfo delay has passed.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "coalition.exchange"


class ServiceError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = {key: str(value) for key, value in metadata.items()}

    def to_rpc_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        details = []
        for message in (info, *self.extra_details()):
            detail = any_pb2.Any()
            detail.Pack(message)
            details.append(detail)
        return status_pb2.Status(code=getattr(code_pb2, self.code.name), message=self.message, details=details)

    def extra_details(self) -> tuple[Message, ...]:
        """Status details after the ErrorInfo (google.rpc error_details messages)."""
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Trailing metadata sent with the status, beside grpc-status-details-bin."""
        return ()


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    """The caller made more calls than its rate allows: RESOURCE_EXHAUSTED `RATE_LIMITED`.

    Says when to retry three ways, for every kind of client: a google.rpc.RetryInfo detail
    (exact), `retry-after` trailing metadata in whole seconds rounded up (HTTP's Retry-After,
    for proxies and clients that read no details), and the message.
    """

    REASON = "RATE_LIMITED"

    def __init__(self, what: str, retry_delay_ns: int, **metadata: object) -> None:
        self.retry_delay_ns = retry_delay_ns
        self.retry_after_seconds = max(1, math.ceil(retry_delay_ns / 1_000_000_000))
        super().__init__(
            self.REASON,
            f"{what}; retry in {retry_delay_ns / 1_000_000_000:.3f} s (retry-after: {self.retry_after_seconds})",
            retry_after_seconds=self.retry_after_seconds,
            **metadata,
        )

    def extra_details(self) -> tuple[Message, ...]:
        seconds, nanos = divmod(self.retry_delay_ns, 1_000_000_000)
        return (error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)),)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("retry-after", str(self.retry_after_seconds)),)


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def error_info_of(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Client side: the ErrorInfo detail of a failed call, if the server sent one."""
    return _detail_of(error, error_details_pb2.ErrorInfo)


def retry_info_of(error: grpc.RpcError) -> error_details_pb2.RetryInfo | None:
    """Client side: the RetryInfo detail of a failed call (RATE_LIMITED sends one), if any."""
    return _detail_of(error, error_details_pb2.RetryInfo)


def _detail_of(error: grpc.RpcError, message_type: type[Message]):
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            return message
    return None
