"""Serving stage: load a bundle, batch queries onto ONNX Runtime, retrieve, rerank, answer gRPC."""
