"""gRPC server reflection under grpc.reflection.v1 as well as v1alpha.

grpcio-reflection (1.85) ships only v1alpha, so tools that ask for v1 first (grpcurl, Postman,
grpcui) fall back or fail. The v1 protocol has the same messages with the same field numbers
under another package name, so the v1alpha servicer answers v1 callers when it is also
registered under the v1 method path with the v1alpha message classes (identical bytes).
"""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    """List `service_names` (and both reflection services) over v1alpha and v1."""
    servicer = reflection.aio.ReflectionServicer((*service_names, reflection.SERVICE_NAME, V1_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(V1_SERVICE, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
    })
    server.add_generic_rpc_handlers((v1,))
