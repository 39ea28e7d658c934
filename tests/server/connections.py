"""A gRPC channel on a connection of its own, for tests that count which worker answers."""

from __future__ import annotations

import grpc


def new_connection(port: int) -> grpc.Channel:
    """gRPC shares subchannels (connections) between the channels of one process unless each
    has its own pool: a closed channel's connection could carry the next call (seen in CI:
    16 "new" channels all answered by one worker), and SO_REUSEPORT would never spread them."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
