"""Server reflection as both ``grpc.reflection.v1`` (what current grpcurl, grpc-java and Postman ask
for first) and ``grpc.reflection.v1alpha`` (older clients).

grpcio-reflection implements only v1alpha (1.81.1, and every release up to 1.85.1). v1 is the same
protocol in a new package: every message, field name, number and type is the same. So one v1alpha
servicer answers both services (the bytes on the wire are the same), and v1's own descriptor, which
``file_containing_symbol`` hands out, is v1alpha's file with the package renamed.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
SERVICE_NAMES = (f"{V1}.ServerReflection", reflection.SERVICE_NAME)


def _renamed(type_name: str) -> str:
    return type_name.replace(f".{V1ALPHA}.", f".{V1}.")


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection proto: v1alpha's (no nested types, no options) in package v1."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name, file.package = V1_FILE, V1
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # a message field (assigning "" would set it)
                field.type_name = _renamed(field.type_name)
    for service in file.service:
        for method in service.method:
            method.input_type, method.output_type = _renamed(method.input_type), _renamed(method.output_type)
    return file


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection (both versions) for ``service_names`` and the reflection services."""
    pool = reflection_pb2.DESCRIPTOR.pool  # the default pool, where the servicer looks
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.Add(v1_file())
    servicer = reflection.aio.ReflectionServicer([*service_names, *SERVICE_NAMES])
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in SERVICE_NAMES
        ]
    )
