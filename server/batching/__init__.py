"""Dynamic batching of texts onto the encoder (plain asyncio + one inference thread; no gRPC)."""
