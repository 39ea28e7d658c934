"""Readiness: grpc.health.v1 says SERVING only when calls succeed, polled from process start."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from export.errors import BundleError
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc
from tests.server.serve_process import ServeProcess, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING


async def test_no_call_fails_after_the_first_serving(small_bundle, tmp_path):
    port = free_port()
    # warm-up inference waits while this file exists, so the port is surely open before the
    # server is ready (a small bundle on a quiet machine is otherwise ready before the first poll)
    hold = tmp_path / "hold-warm-up"
    hold.write_text("hang")
    server = ServeProcess(small_bundle, tmp_path / "live", port=port,
                          env={"RECSERVE_BATCHER_FAULT_FILE": str(hold)})
    try:
        # reconnect every few ms, so the poll sees the port the moment it listens
        options = [("grpc.initial_reconnect_backoff_ms", 5), ("grpc.min_reconnect_backoff_ms", 5),
                   ("grpc.max_reconnect_backoff_ms", 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            first_serving, statuses = None, []
            deadline = time.monotonic() + 120
            while first_serving is None and time.monotonic() < deadline:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service="recserve.v1.Recommender"),
                                               timeout=0.5)
                    statuses.append(reply.status)
                    if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        hold.unlink(missing_ok=True)  # seen not ready: let the warm-up finish
                    if reply.status == SERVING:
                        first_serving = time.monotonic()
                except grpc.aio.AioRpcError as err:  # not listening yet
                    statuses.append(err.code().name)
                if first_serving is None:
                    await asyncio.sleep(0.01)
            assert first_serving is not None, f"never SERVING:\n{server.output}"
            # the port answered health before it was ready: NOT_SERVING was seen, not SERVING
            assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses, statuses[:5]
            # everything sent from the first SERVING on succeeds, at once and concurrently
            outcomes = await asyncio.gather(*(
                stub.Recommend(pb.RecommendRequest(query=f"gift box {i}", k=3), timeout=10)
                for i in range(40)), return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            assert not failures, failures[:3]
            assert all(len(o.items) == 3 for o in outcomes)
    finally:
        server.process.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        server.kill()


def test_sigterm_during_start_up_stops_cleanly(small_bundle, tmp_path):
    server = ServeProcess(small_bundle, tmp_path / "live", port=free_port())
    try:
        deadline = time.monotonic() + 60
        while "loading bundle" not in server.output and time.monotonic() < deadline:
            time.sleep(0.005)  # signal as soon as loading starts: well before the bundle is warm
        assert server.process.poll() is None, server.output
        server.process.send_signal(signal.SIGTERM)
        assert server.wait() == 0, server.output
        assert "stopped during start-up" in server.output
        assert "serving bundle" not in server.output, server.output
    finally:
        server.kill()


async def test_live_directory_is_locked_before_the_bundle_loads(small_bundle, tmp_path, monkeypatch):
    from server.live.service import lock_live_directory
    from server.service import app
    from server.live.config import LiveConfig

    loaded = []
    real_open = app.open_serving_state

    async def spy(*args, **kwargs):
        loaded.append(args[0])
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(app, "open_serving_state", spy)
    held = lock_live_directory(tmp_path / "live")  # another server owns this log
    try:
        server = app.RecserveServer(app.AllConfigs(server=app.ServerConfig(metrics_port=-1),
                                                   live=LiveConfig(directory=str(tmp_path / "live"))))
        with pytest.raises(BundleError, match="in use"):
            await server.start(small_bundle, "127.0.0.1:0")
        assert loaded == [], "the bundle was loaded although the live directory is taken"
    finally:
        held.close()
