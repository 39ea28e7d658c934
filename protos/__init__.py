"""recserve.v1 gRPC contract: recommender.proto and its generated Python stubs."""

from protos import recommender_pb2, recommender_pb2_grpc

SERVICE_NAME = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name

__all__ = ["recommender_pb2", "recommender_pb2_grpc", "SERVICE_NAME"]
