"""Drain: on SIGTERM every call already sent is answered OK, then the process exits 0."""

from __future__ import annotations

import asyncio
import signal

import grpc

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc
from tests.server.serve_process import ServeProcess


async def test_sigterm_with_100_calls_in_flight_answers_all_of_them(small_bundle, tmp_path):
    # one text per inference batch: the 100 calls take a while, so they are truly in flight
    # (and a door wide enough to admit them all)
    server = ServeProcess(small_bundle, tmp_path / "live", env={"RECSERVE_BATCHER_MAX_BATCH_SIZE": "1",
                                                                "RECSERVE_SERVER_MAX_CONCURRENT_CALLS": "128"})
    try:
        port = server.wait_serving()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            await stub.Recommend(pb.RecommendRequest(query="warm", k=3))
            calls = [asyncio.ensure_future(stub.Recommend(
                pb.RecommendRequest(query=f"vintage lantern {i} " * 12, k=10), timeout=20)) for i in range(100)]
            await asyncio.sleep(0.05)
            assert not all(c.done() for c in calls), "the calls finished before SIGTERM: not a drain test"
            server.process.send_signal(signal.SIGTERM)
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failures = [o.code().name for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert failures == [], f"{len(failures)} of 100 failed: {sorted(set(failures))}"
        assert all(len(o.items) == 10 for o in outcomes)
        assert server.wait(timeout=30) == 0, server.output
        assert "calls still running" not in server.output
    finally:
        server.kill()


async def test_calls_after_the_drain_window_are_refused_and_nothing_is_cut_off(small_bundle, tmp_path):
    server = ServeProcess(small_bundle, tmp_path / "live", env={"RECSERVE_SERVER_DRAIN_ACCEPT_S": "0.2"})
    try:
        port = server.wait_serving()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            await stub.Recommend(pb.RecommendRequest(query="warm", k=3))
            server.process.send_signal(signal.SIGTERM)
            codes = []
            for i in range(200):  # a client that keeps calling through the drain
                try:
                    await stub.Recommend(pb.RecommendRequest(query=f"candle {i}", k=3), timeout=5)
                    codes.append("OK")
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code().name)
                if server.process.poll() is not None:
                    break
                await asyncio.sleep(0.01)
        # OK while the drain still takes calls, then refused. One call may come back CANCELLED
        # at the instant the port closes: gRPC core cancels a call it has received but Python
        # has not picked up yet (ServerConfig.drain_accept_s); it never started, and a call the
        # servicer started is never cut off (exit 0, no "calls still running").
        first_refused = next(i for i, code in enumerate(codes) if code != "OK")
        assert first_refused > 0 and set(codes[:first_refused]) == {"OK"}, codes
        after = codes[first_refused:]
        assert set(after) <= {"UNAVAILABLE", "CANCELLED"} and after.count("CANCELLED") <= 1, codes
        assert "CANCELLED" not in after[1:], codes  # only at the transition
        assert "UNAVAILABLE" in codes or after == ["CANCELLED"], codes
        assert server.wait(timeout=30) == 0
        assert "calls still running" not in server.output
    finally:
        server.kill()
