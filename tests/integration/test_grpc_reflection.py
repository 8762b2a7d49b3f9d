"""Server reflection through real clients of both protocol versions: ``grpc.reflection.v1`` (a
client built here from the v1 protocol's own messages, in a descriptor pool of its own, so it shares
nothing with the server's v1alpha code) and ``grpc.reflection.v1alpha`` (grpcio-reflection's stubs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

from service.model.registry import ModelRegistry
from tests.integration.test_grpc_support import Served, serve_in_process

# The v1 messages a client needs to list services and fetch a file (field numbers as published).
V1_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request { string file_containing_symbol = 4; string list_services = 7; }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


@pytest.fixture(scope="module")
def v1_messages(tmp_path_factory: pytest.TempPathFactory) -> tuple[type[Any], type[Any]]:
    """(ServerReflectionRequest, ServerReflectionResponse) of v1, compiled from V1_PROTO."""
    root = tmp_path_factory.mktemp("reflection-v1")
    (root / "reflection_v1.proto").write_text(V1_PROTO, encoding="utf-8")
    out = root / "reflection_v1.pb"
    assert protoc.main(["protoc", f"-I{root}", f"--descriptor_set_out={out}", "reflection_v1.proto"]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    request, response = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))
        for name in ("ServerReflectionRequest", "ServerReflectionResponse")
    )
    return request, response


@pytest.fixture()
def served(registry: ModelRegistry) -> Iterator[Served]:
    with serve_in_process(registry.root) as s:
        yield s


def v1_call(served: Served, messages: tuple[type[Any], type[Any]]) -> Callable[..., Any]:
    """One-request ServerReflectionInfo over v1: fields of the request -> the one response."""
    request, response = messages
    stream = served.channel.stream_stream(
        V1_METHOD, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )

    def call(**fields: str) -> Any:
        (reply,) = list(stream(iter([request(**fields)]), timeout=5))
        return reply

    return call


def test_v1_reflection_lists_services_and_resolves_them(
    served: Served, v1_messages: tuple[type[Any], type[Any]]
) -> None:
    call = v1_call(served, v1_messages)
    listed = {s.name for s in call(list_services="").list_services_response.service}
    assert {
        "newstagger.v1.TaggerService",
        "newstagger.v1.AdminService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed
    for name in sorted(listed):  # every listed service resolves, as `grpcurl describe` needs
        reply = call(file_containing_symbol=name)
        assert reply.WhichOneof("message_response") == "file_descriptor_response", (name, reply)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        package, _, service = name.rpartition(".")
        assert any(f.package == package and service in [s.name for s in f.service] for f in files), name
    reply = call(file_containing_symbol="grpc.reflection.v1.ServerReflection")
    (v1_file, *_) = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    (method,) = v1_file.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    assert (
        call(file_containing_symbol="no.such.Service").error_response.error_code
        == grpc.StatusCode.NOT_FOUND.value[0]
    )


def test_v1alpha_reflection_still_answers(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    listed = {s.name for s in reply.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", "newstagger.v1.TaggerService"} <= listed
