"""gRPC server reflection, both `grpc.reflection.v1` and `v1alpha`, with the error detail types.

grpcio-reflection (1.85, the newest) serves only `v1alpha` (grpc/grpc#38576). The two versions are
the same messages under another package name, byte for byte on the wire, so `v1` is the same
servicer registered under the `v1` service name; its descriptor (the v1alpha file renamed) is added
to the default pool so that reflection describes it too.

The `google.rpc` status and error-detail messages (vendored in proto/google/rpc/, the very files
googleapis-common-protos registers in Python) are in the same pool, so a client that asks for
`google.rpc.ErrorInfo` (buf curl decoding a status detail) gets its descriptor.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
# The files a client may ask for by a detail's type (google.rpc.ErrorInfo, RetryInfo, Status).
ERROR_DETAIL_FILES = (error_details_pb2.DESCRIPTOR.name, status_pb2.DESCRIPTOR.name)


def _register_v1_descriptor() -> None:
    """Add grpc/reflection/v1/reflection.proto to the default pool (once; kept if already there)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE_NAME)
        return
    except KeyError:
        pass
    alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(alpha)
    old_prefix, new_prefix = f".{alpha.package}.", f".{V1_PACKAGE}."
    alpha.name, alpha.package = V1_FILE_NAME, V1_PACKAGE
    alpha.ClearField("options")
    for message in alpha.message_type:
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name[len(old_prefix) :]
    for service in alpha.service:
        for method in service.method:
            method.input_type = new_prefix + method.input_type[len(old_prefix) :]
            method.output_type = new_prefix + method.output_type[len(old_prefix) :]
    pool.AddSerializedFile(alpha.SerializeToString())


def enable(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection v1 and v1alpha on `server`, listing `service_names` and both reflections."""
    _register_v1_descriptor()
    names = [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1_method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1_method}),)
    )
