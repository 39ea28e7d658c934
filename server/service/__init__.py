"""The gRPC layer: the only part of recserve that imports grpc."""
