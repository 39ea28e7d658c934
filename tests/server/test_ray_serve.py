"""A real local Ray Serve deployment of a real bundle, called over real gRPC through Ray's proxy,
answers like `recserve serve` on the same bundle."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc
from tests.server.serve_process import free_port

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_deployment(small_bundle, tmp_path_factory):
    """A channel to two replicas on half a CPU each, behind Ray Serve's gRPC proxy, applying
    one live log."""
    import ray
    from ray import serve

    from server.live.config import LiveConfig
    from server.ray_serve.app import RayServeConfig, deploy
    from server.service.app import AllConfigs

    if not ray.is_initialized():  # one local Ray per test session (ray shuts it down at exit)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    live = LiveConfig(directory=str(tmp_path_factory.mktemp("ray-live")))
    port, lock = deploy(small_bundle, AllConfigs(live=live),
                        RayServeConfig(replicas=2, replica_cpus=0.5, port=free_port(),
                                       http_port=free_port()))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    try:
        yield channel
    finally:
        channel.close()
        serve.shutdown()
        lock.close()


def _requests(facts) -> list[pb.RecommendRequest]:
    return [
        pb.RecommendRequest(query="red heart decoration", k=10),
        pb.RecommendRequest(history=facts["history"], k=8, explain=True),
        pb.RecommendRequest(user_id=facts["user"], k=5),
        pb.RecommendRequest(query="candle holder", k=6,
                            filter=pb.Filter(exclude_item_ids=facts["history"][:2])),
        pb.RecommendRequest(query="bag", k=5, diversity=0.5),
    ]


@pytest.fixture(scope="module")
def facts(small_bundle):
    from export.bundle import FEATURES_DIR
    from export.features import InteractionFeatures
    from server.served_bundle import ServedBundle

    bundle = ServedBundle.load(small_bundle)
    user = next(iter(InteractionFeatures.load(Path(small_bundle) / FEATURES_DIR).user_history))
    return {"history": list(bundle.catalog.item_ids[:4]), "user": user}


def _items(response: pb.RecommendResponse) -> list[tuple[str, float]]:
    return [(i.item_id, round(i.score, 4)) for i in response.items]


async def test_recommend_answers_equal_those_of_recserve_serve(ray_deployment, running_server, facts):
    _, local, _ = running_server
    ray_stub = recommender_pb2_grpc.RecommenderStub(ray_deployment)
    for request in _requests(facts):
        expected = await local.Recommend(request, timeout=30)
        got = ray_stub.Recommend(request, timeout=30)
        assert _items(got) == _items(expected) and len(got.items) == request.k
        assert got.bundle_version == expected.bundle_version


def test_both_replicas_answer_and_errors_keep_their_codes(ray_deployment, facts):
    stub = recommender_pb2_grpc.RecommenderStub(ray_deployment)
    workers = {stub.Recommend(pb.RecommendRequest(query=f"gift {i}", k=3), timeout=30).timings.worker_id
               for i in range(40)}
    assert len(workers) == 2  # two replica processes
    with pytest.raises(grpc.RpcError) as invalid:
        stub.Recommend(pb.RecommendRequest(query="x", k=100000), timeout=30)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unknown:
        stub.DeleteItems(pb.DeleteItemsRequest(item_ids=["no-such-item"]), timeout=30)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = stub.GetInfo(pb.GetInfoRequest(), timeout=30)
    assert info.live_items > 0 and info.bundle_version


def test_a_live_upsert_is_recommendable_from_every_replica_within_a_second(ray_deployment):
    import time

    stub = recommender_pb2_grpc.RecommenderStub(ray_deployment)
    item = pb.Item(item_id="ray-live-1", title="zebra striped umbrella", attributes={"ray": "yes"})
    written = stub.UpsertItems(pb.UpsertItemsRequest(items=[item]), timeout=30)
    started = time.monotonic()
    seen_by: dict[str, float] = {}
    while len(seen_by) < 2 and time.monotonic() - started < 1.0:
        answer = stub.Recommend(pb.RecommendRequest(
            query=item.title, k=3, filter=pb.Filter(attribute_equals={"ray": "yes"})), timeout=30)
        if [i.item_id for i in answer.items] == ["ray-live-1"]:
            seen_by.setdefault(answer.timings.worker_id, time.monotonic() - started)
    assert len(seen_by) == 2, seen_by  # both replicas applied the log within 1 s
    for _ in range(10):  # read-your-writes on whichever replica answers
        answer = stub.Recommend(pb.RecommendRequest(query=item.title, k=1, min_sequence=written.sequence,
                                                    filter=pb.Filter(attribute_equals={"ray": "yes"})))
        assert [i.item_id for i in answer.items] == ["ray-live-1"]


def test_health_and_reflection_answer_through_the_proxy(ray_deployment):
    health = health_pb2_grpc.HealthStub(ray_deployment)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
        health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(ray_deployment)
    answer = next(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30))
    services = {s.name for s in answer.list_services_response.service}
    assert "recserve.v1.Recommender" in services


def test_the_python_client_works_against_the_proxy_as_it_is(ray_deployment):
    from clients.client import RecommenderClient

    client = RecommenderClient(channel=ray_deployment)
    assert client.health() == "SERVING"
    assert len(client.recommend("heart shaped candle", k=3).items) == 3


def test_killing_a_replica_under_load_leaves_only_retried_unavailable(ray_deployment):
    """Last in this module: it leaves Ray replacing the killed replica. A read in flight on
    the killed replica is sent again by the ingress to the other one (server/ray_serve/ingress.py):
    callers see at most UNAVAILABLE, and every call succeeds within its retries."""
    import threading
    import time

    import ray

    stub = recommender_pb2_grpc.RecommenderStub(ray_deployment)
    codes: list[grpc.StatusCode] = []  # every status seen, retried or not
    failed: list[grpc.StatusCode] = []  # calls that did not succeed in the end
    answered: list[int] = []
    stop_at = time.monotonic() + 6

    def caller(i: int) -> None:
        while time.monotonic() < stop_at:
            for attempt in range(4):  # retry UNAVAILABLE, as clients/client.py does
                try:
                    stub.Recommend(pb.RecommendRequest(query=f"lamp {i}", k=3), timeout=30)
                    answered.append(1)
                    break
                except grpc.RpcError as exc:
                    codes.append(exc.code())
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 3:
                        failed.append(exc.code())
                        break  # and keep calling
                    time.sleep(0.1)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    replicas = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if "Recommender" in a["name"] and a["namespace"] == "serve")
    ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
    for t in threads:
        t.join()
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}, codes
    assert failed == []
    assert len(answered) > 20
