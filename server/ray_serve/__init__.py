"""Serving on Ray Serve: replicas of the recserve engine behind Ray's gRPC proxy (`recserve serve-ray`)."""
