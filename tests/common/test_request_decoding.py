"""Issue 7 point 9: a request body that does not decode is the caller's mistake, on every RPC.

Before: grpc's own deserializer failed outside our handler, the call came back UNKNOWN
("Unexpected DecodeError") and nothing was logged.
"""

from __future__ import annotations

import time

import grpc

from services.common.errors import error_info_of
from tests.fuzz.harness import SERVICE_DESCRIPTORS

UNDECODABLE_BODIES = (
    b"\xff\xff\xff",  # a varint that never ends
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far beyond the message
    b"\x0f",  # wire type 7 does not exist
)


def _call(channel: grpc.Channel, method, body: bytes) -> grpc.RpcError:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(path)(body, timeout=10):
                pass
        else:
            channel.unary_unary(path)(body, timeout=10)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{path} accepted {body!r}")


def test_an_undecodable_body_is_invalid_argument_with_a_reason_on_every_rpc(stack):
    answers = {}
    for service in SERVICE_DESCRIPTORS:
        channel = stack.channels[service.full_name]
        for method in service.methods:
            for body in UNDECODABLE_BODIES:
                error = _call(channel, method, body)
                info = error_info_of(error)
                answers[(method.name, body)] = (error.code(), info.reason if info else None)
    expected = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_ENCODING")
    wrong = {key: answer for key, answer in answers.items() if answer != expected}
    assert len(answers) == len(UNDECODABLE_BODIES) * sum(len(s.methods) for s in SERVICE_DESCRIPTORS)
    assert not wrong, wrong


def test_an_undecodable_body_logs_exactly_one_rpc_finished_line(stack, rpc_log):
    for service in SERVICE_DESCRIPTORS:
        method = service.methods[0]
        metadata = (("x-request-id", f"undecodable-{service.name}"),)
        path = f"/{service.full_name}/{method.name}"
        try:
            stack.channels[service.full_name].unary_unary(path)(b"\x0f", timeout=10, metadata=metadata)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        lines = _logged(rpc_log, f"undecodable-{service.name}")
        assert [(e["event"], e["status"], e["reason"], e["rpc_method"]) for e in lines] == [
            ("rpc_finished", "INVALID_ARGUMENT", "INVALID_REQUEST_ENCODING", path)
        ]


def _logged(entries: list[dict], request_id: str) -> list[dict]:
    """The lines of one call. The server logs after it has answered, so wait for the first."""
    deadline = time.monotonic() + 10
    while not any(entry.get("request_id") == request_id for entry in entries) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [entry for entry in entries if entry.get("request_id") == request_id]
