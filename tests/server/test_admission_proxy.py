"""`serve --admission-proxy`: a real HAProxy in front of a real server, over real gRPC."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.admission_proxy import REFUSAL, AdmissionProxy, ProxyPlan, haproxy_binary
from tests.server.serve_process import ServeProcess, free_port


def test_the_generated_configuration_is_valid_haproxy(tmp_path):
    proxy = AdmissionProxy(ProxyPlan("127.0.0.1:1", ("127.0.0.1:2", "127.0.0.1:3"), 64))
    config = tmp_path / "haproxy.cfg"
    config.write_text(proxy.plan.config())
    lib = str(__import__("pathlib").Path(haproxy_binary()).parent / "lib")
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True,
                           env={"LD_LIBRARY_PATH": lib})
    assert check.returncode == 0, check.stderr
    assert "maxconn 64" in proxy.plan.config() and "stats socket" in proxy.plan.config()
    proxy.stop()


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_refuses_beyond_the_bound_at_once_and_health_still_answers(small_bundle, tmp_path):
    fault = tmp_path / "hang"
    metrics_port = free_port()
    server = ServeProcess(small_bundle, tmp_path / "live", "--admission-proxy", "--metrics-port", str(metrics_port),
                          env={"RECSERVE_SERVER_MAX_CONCURRENT_CALLS": "2",
                               "RECSERVE_BATCHER_FAULT_FILE": str(fault),
                               "RECSERVE_BATCHER_INFERENCE_TIMEOUT_S": "60", "RECSERVE_BATCHER_CACHE_SIZE": "0"})
    try:
        port = server.wait_serving()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.RecommenderStub(channel)
        assert stub.Recommend(pb.RecommendRequest(query="red mug", k=3), timeout=10).items
        fault.write_text("hang")  # inference now holds every call: two fill the bound
        held = ThreadPoolExecutor(2)
        hung = [held.submit(stub.Recommend, pb.RecommendRequest(query=f"hung {i}", k=3), timeout=30)
                for i in range(2)]
        time.sleep(1.0)
        refused = 0
        for i in range(20):
            with pytest.raises(grpc.RpcError) as error:
                stub.Recommend(pb.RecommendRequest(query=f"more {i}", k=3), timeout=10)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.value.details() == REFUSAL
            refused += 1
        assert not any(f.done() for f in hung)  # refused while the server still held both calls
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # health bypasses the bound
        fault.unlink()
        assert all(f.result().items for f in hung)  # the held calls complete once inference runs
        assert stub.Recommend(pb.RecommendRequest(query="after", k=3), timeout=10).items
        counted = _metrics(metrics_port)
        assert f"recserve_admission_proxy_refused_total {float(refused)}" in counted
        assert 'recserve_requests_total{code="OK",method="Recommend"} 4.0' in counted
        channel.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert "admission proxy on" in server.output
    finally:
        server.kill()


def test_protected_mode_is_judged_by_the_public_address(small_bundle, tmp_path):
    server = ServeProcess(small_bundle, tmp_path / "live", "--admission-proxy", "--host", "0.0.0.0")
    try:
        port = server.wait_serving()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            assert stub.Recommend(pb.RecommendRequest(query="mug", k=1), timeout=10).items
            with pytest.raises(grpc.RpcError) as error:  # the server's own port is loopback; the public one is not
                stub.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id="x", title="x")]), timeout=10)
            assert error.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    finally:
        server.kill()


def test_tls_with_the_proxy_is_one_line_and_exit_2(small_bundle, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(small_bundle), "--port", "0",
         "--admission-proxy", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
        capture_output=True, text=True, timeout=60, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert "--admission-proxy" in done.stderr and "Traceback" not in done.stderr


def test_two_workers_behind_the_proxy_share_the_calls_and_the_bound(small_bundle, tmp_path):
    """--workers 2: each worker on its own loopback port, the bound is per worker that is up."""
    fault = tmp_path / "hang"
    server = ServeProcess(small_bundle, tmp_path / "live", "--admission-proxy", "--workers", "2",
                          env={"RECSERVE_SERVER_MAX_CONCURRENT_CALLS": "2",
                               "RECSERVE_BATCHER_FAULT_FILE": str(fault),
                               "RECSERVE_BATCHER_INFERENCE_TIMEOUT_S": "60", "RECSERVE_BATCHER_CACHE_SIZE": "0"})
    try:
        port = server.wait_serving(timeout=180)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.RecommenderStub(channel)
        seen = {stub.Recommend(pb.RecommendRequest(query=f"red mug {i}", k=3), timeout=10).timings.worker_id
                for i in range(12)}
        assert len(seen) == 2, seen  # one connection from the client, calls spread by the proxy
        fault.write_text("hang")
        held = ThreadPoolExecutor(4)
        hung = [held.submit(stub.Recommend, pb.RecommendRequest(query=f"hung {i}", k=3), timeout=30)
                for i in range(4)]  # 2 per worker fill the bound of both
        time.sleep(1.5)
        for i in range(10):
            with pytest.raises(grpc.RpcError) as error:
                stub.Recommend(pb.RecommendRequest(query=f"more {i}", k=3), timeout=10)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.value.details() == REFUSAL
        assert not any(f.done() for f in hung)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        fault.unlink()
        assert all(f.result().items for f in hung)
        channel.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.wait(timeout=90) == 0
    finally:
        server.kill()


def test_two_workers_behind_the_proxy_keep_protected_mode_and_outlive_a_killed_worker(small_bundle, tmp_path):
    import os

    server = ServeProcess(small_bundle, tmp_path / "live", "--admission-proxy", "--workers", "2",
                          "--host", "0.0.0.0")
    try:
        port = server.wait_serving(timeout=180)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            with pytest.raises(grpc.RpcError) as error:  # workers are on loopback; callers are not
                stub.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id="x", title="x")]), timeout=10)
            assert error.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            ids = {stub.Recommend(pb.RecommendRequest(query=f"mug {i}", k=1), timeout=10).timings.worker_id
                   for i in range(8)}
            assert len(ids) == 2, ids
            victim = sorted(ids)[0]
            os.kill(int(victim.rsplit("-", 1)[1]), signal.SIGKILL)
            time.sleep(1.5)  # the proxy's connect check marks it down (inter 500 ms)
            after = [stub.Recommend(pb.RecommendRequest(query=f"cup {i}", k=1), timeout=10) for i in range(10)]
            assert all(r.items for r in after)
            assert victim not in {r.timings.worker_id for r in after}
            index = victim.split("-", 1)[0]  # the replacement binds the same loopback port
            deadline, back = time.monotonic() + 90, set()
            while time.monotonic() < deadline and not back:
                ids = {stub.Recommend(pb.RecommendRequest(query=f"jar {i}", k=1), timeout=10).timings.worker_id
                       for i in range(6)}
                back = {w for w in ids if w.startswith(index + "-") and w != victim}
                time.sleep(0.5)
            assert back, "the replacement worker never served through the proxy"
    finally:
        server.kill()
