"""Server reflection: `grpc.reflection.v1` and `v1alpha` both answer, and describe google.rpc.ErrorInfo.

Every service serves reflection through services/common/grpc_server.start_server, so the ledger
stands for all three. The vendored proto/google/rpc files are the ones Python registers (and
reflection serves): a client in another language built from the repository decodes the same bytes.
"""

from __future__ import annotations

import os

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_tools import protoc

from services.common import reflection
from tests.support.databases import new_database_url
from tests.support.servers import REPO_ROOT, start_ledger_thread
from tests.support.tls import channel as tls_channel

TIMEOUT = 10


def _ask(address: str, service: str, requests: list[reflection_pb2.ServerReflectionRequest]):
    # v1 and v1alpha messages are the same on the wire; only the method path differs.
    with tls_channel(address) as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return list(call(iter(requests), timeout=TIMEOUT))


def _file(raw: bytes) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(raw)


def _files(descriptor_set) -> list[descriptor_pb2.FileDescriptorProto]:
    return list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file)


@pytest.fixture(scope="module")
def ledger_address(tmp_path_factory):
    server = start_ledger_thread(new_database_url("sqlite", tmp_path_factory.mktemp("reflection"), "ledger")[0])
    yield server.address
    server.stop()


@pytest.mark.parametrize("service", [reflection.V1_SERVICE_NAME, reflection.V1ALPHA_SERVICE_NAME])
def test_reflection_lists_the_services_and_describes_error_info(ledger_address, service):
    listed, described, error_file = _ask(
        ledger_address,
        service,
        [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="google.rpc.ErrorInfo"),
            reflection_pb2.ServerReflectionRequest(file_by_filename="google/rpc/status.proto"),
        ],
    )
    names = {entry.name for entry in listed.list_services_response.service}
    assert {
        "coalition.ledger.v1.LedgerService",
        "grpc.health.v1.Health",
        reflection.V1_SERVICE_NAME,
        reflection.V1ALPHA_SERVICE_NAME,
    } <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    details = next(file for file in files if file.name == "google/rpc/error_details.proto")
    assert "ErrorInfo" in [message.name for message in details.message_type]
    status_files = error_file.file_descriptor_response.file_descriptor_proto
    assert _file(status_files[0]).name == "google/rpc/status.proto"


def test_the_vendored_google_rpc_protos_are_the_ones_python_registers(tmp_path):
    descriptor_set = tmp_path / "rpc.binpb"
    protos = ["google/rpc/status.proto", "google/rpc/error_details.proto"]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    arguments = ["protoc", f"-I{os.path.join(REPO_ROOT, 'proto')}", f"-I{include}", f"-o{descriptor_set}", *protos]
    assert protoc.main(arguments) == 0
    vendored = {
        file.name: file for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    }
    for name in protos:
        registered = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(name).CopyToProto(registered)
        assert _without_json_names(vendored[name]) == _without_json_names(registered), (
            f"proto/{name} differs from googleapis-common-protos' {name}: copy it again from that package"
        )


def _without_json_names(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """protoc -o fills in json_name, generated Python code leaves it out: the same schema either way."""
    stripped = descriptor_pb2.FileDescriptorProto()
    stripped.CopyFrom(file)
    messages = list(stripped.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            field.ClearField("json_name")
    return stripped
