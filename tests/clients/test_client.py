"""The sync client over real gRPC against the fake server: typed results, retries, deadlines."""

from __future__ import annotations

import random
import shutil
import subprocess
import time

import grpc
import numpy as np
import pytest

from clients import errors
from clients.client import RecommenderClient
from clients.options import ClientOptions, RetryPolicy
from clients.results import Interaction, Item, ItemFilter
from protos import recommender_pb2 as pb
from tests.clients.conftest import FAKE_VERSION, Behaviour, FakeServer

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def client_for(server: FakeServer, **options) -> RecommenderClient:
    options.setdefault("retry", FAST_RETRY)
    return RecommenderClient(options=ClientOptions(target=server.target, **options))


def test_recommend_returns_typed_items_timings_and_sends_every_field(fake_server):
    with client_for(fake_server) as client:
        result = client.recommend(
            "white metal lantern", history=["85123A", "71053"], k=3, explain=True, diversity=0.3,
            filter=ItemFilter(attribute_equals={"country": "UK"}, attribute_in={"band": ["a", "b"]},
                              exclude_item_ids=["22423"], exclude_interacted=True),
        )
    assert result.item_ids == ["ITEM-0", "ITEM-1", "ITEM-2"]
    assert result.items[0].title == "THING 0 FOR WHITE METAL LANTERN"
    assert result.items[0].score > result.items[1].score
    assert result.items[0].reason == "often bought with ITEM-100"
    assert result.items[0].contributions[0].feature == "co_occurrence"
    assert result.bundle_version == FAKE_VERSION
    assert result.timings.stages() == {"queue": 100, "encode": 2000, "retrieve": 300,
                                       "rank": 400, "total": 2800}
    assert result.latency_s > 0
    sent = fake_server.behaviour.requests[0]
    assert list(sent.history) == ["85123A", "71053"]  # order kept: most recent last
    assert (sent.k, sent.explain) == (3, True)
    assert sent.diversity == pytest.approx(0.3)
    assert dict(sent.filter.attribute_equals) == {"country": "UK"}
    assert list(sent.filter.attribute_in["band"].values) == ["a", "b"]
    assert list(sent.filter.exclude_item_ids) == ["22423"] and sent.filter.exclude_interacted


def test_raw_returns_the_protobuf(fake_server):
    with client_for(fake_server) as client:
        response = client.recommend(user_id="17850", raw=True)
    assert isinstance(response, pb.RecommendResponse) and len(response.items) == 10


def test_request_mistakes_are_caught_before_sending(fake_server):
    with client_for(fake_server) as client:
        with pytest.raises(ValueError, match="at least one"):
            client.recommend()
        with pytest.raises(ValueError, match="k must be"):
            client.recommend("lantern", k=0)
    assert fake_server.behaviour.calls == []


def test_unavailable_is_retried_until_it_succeeds(fake_server):
    fake_server.behaviour.fail_first = 2
    with client_for(fake_server) as client:
        result = client.recommend("lantern")
    assert len(result.items) == 10
    assert len(fake_server.behaviour.calls) == 3


def test_retries_stop_at_max_attempts_with_a_typed_error(fake_server):
    fake_server.behaviour.fail_first = 10
    with client_for(fake_server, retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01)) as client:
        with pytest.raises(errors.Unavailable) as caught:
            client.recommend("lantern")
    assert caught.value.attempts == 3
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert isinstance(caught.value, grpc.RpcError)
    assert len(fake_server.behaviour.calls) == 3


@pytest.mark.parametrize("code, error", [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.Overloaded),
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    (grpc.StatusCode.INTERNAL, errors.RecommenderError),
])
def test_other_codes_are_not_retried(fake_server, code, error):
    fake_server.behaviour.fail_first, fake_server.behaviour.fail_code = 1, code
    with client_for(fake_server) as client:
        with pytest.raises(error) as caught:
            client.recommend("lantern")
    assert caught.value.code() == code and caught.value.attempts == 1
    assert len(fake_server.behaviour.calls) == 1


def test_writes_are_retried_with_one_request_id_per_logical_call(fake_server):
    fake_server.behaviour.fail_first = 1
    with client_for(fake_server) as client:
        assert client.record_interactions([Interaction("17850", "71053")]).applied == 1
        client.upsert_items([Item("X1", "RED MUG")])
    requests = fake_server.behaviour.requests
    assert [c[0] for c in fake_server.behaviour.calls] == ["RecordInteractions"] * 2 + ["UpsertItems"]
    assert requests[0].request_id and requests[0].request_id == requests[1].request_id  # the retry
    assert requests[2].request_id != requests[0].request_id  # a new call, a new key


def test_a_caller_given_request_id_is_sent_as_is(fake_server):
    with client_for(fake_server) as client:
        client.delete_items(["X1"], request_id="order-42-delete")
    assert fake_server.behaviour.requests[0].request_id == "order-42-delete"


def test_deadline_cuts_a_slow_call(fake_server):
    fake_server.behaviour.latency_s = 2.0
    with client_for(fake_server) as client:
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded):
            client.recommend("lantern", deadline_s=0.2)
    assert time.monotonic() - started < 1.0


def test_retries_share_the_deadline(dead_target):
    slow_retry = RetryPolicy(max_attempts=50, initial_backoff_s=0.05, max_backoff_s=0.05, jitter=0)
    options = ClientOptions(target=dead_target, deadline_s=0.4, retry=slow_retry)
    with RecommenderClient(options=options) as client:
        started = time.monotonic()
        with pytest.raises(errors.Unavailable) as caught:
            client.recommend("lantern")
    elapsed = time.monotonic() - started
    assert elapsed < 0.8, "retries ran past the call's deadline"
    assert 1 < caught.value.attempts < 50


def test_auth_token_and_metadata_go_with_every_call(fake_server):
    with client_for(fake_server, auth_token="s3cret", metadata=(("x-tenant", "shop"),)) as client:
        client.recommend("lantern")
        client.info()
    for _, metadata, _ in fake_server.behaviour.calls:
        assert metadata["authorization"] == "Bearer s3cret"
        assert metadata["x-tenant"] == "shop"


def test_one_connection_is_reused_across_calls(fake_server):
    with client_for(fake_server) as client:
        for _ in range(20):
            client.recommend("lantern")
    peers = {peer for _, _, peer in fake_server.behaviour.calls}
    assert len(peers) == 1


def test_other_methods_return_typed_results(fake_server):
    with client_for(fake_server) as client:
        batch = client.recommend_batch([pb.RecommendRequest(query="a", k=2),
                                        pb.RecommendRequest(user_id="17850", k=3)])
        embeddings = client.embed(["red mug", "blue mug"])
        info = client.info()
        deleted = client.delete_items(["X1", "X2"])
        reloaded = client.reload("/bundles/2")
        health = client.health()
    assert [len(r.items) for r in batch] == [2, 3]
    assert embeddings.vectors.shape == (2, 4) and embeddings.vectors.dtype == np.float32
    assert info.bundle_version == FAKE_VERSION and info.manifest == {"format_version": 1}
    assert info.index_size == 3000 and info.execution_provider == "CPUExecutionProvider"
    assert deleted.applied == 2 and deleted.sequence == 1
    assert reloaded.bundle_version == "fake-2"
    assert health == "SERVING"


def test_backoff_grows_exponentially_is_capped_and_jittered():
    policy = RetryPolicy(initial_backoff_s=0.1, multiplier=2.0, max_backoff_s=0.5, jitter=0.5)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        draws = [policy.backoff_s(retry, rng) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in draws)
        assert max(draws) - min(draws) > ceiling * 0.3  # really spread out
    assert RetryPolicy(jitter=0).backoff_s(1) == RetryPolicy().initial_backoff_s


def test_options_from_environment_with_overrides():
    env = {"RECSERVE_CLIENT_TARGET": "recs:7000", "RECSERVE_CLIENT_DEADLINE_S": "2.5",
           "RECSERVE_CLIENT_AUTH_TOKEN": "tok", "RECSERVE_CLIENT_WAIT_FOR_READY": "true"}
    options = ClientOptions.from_env(env, deadline_s=1.0)
    assert (options.target, options.deadline_s, options.auth_token) == ("recs:7000", 1.0, "tok")
    assert options.wait_for_ready is True
    assert ("grpc.max_receive_message_length", 16 * 1024 * 1024) in options.channel_arguments()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    # openssl ships with the machine image; a missing one must fail, not skip the TLS tests.
    assert shutil.which("openssl"), "openssl is needed to make a test certificate"
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=recserve.test",
         "-addext", "subjectAltName=DNS:recserve.test",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True, capture_output=True,
    )
    return folder / "cert.pem", folder / "key.pem"


def test_tls_with_a_root_certificate(tls_files):
    cert, key = tls_files
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server = FakeServer(Behaviour(), credentials=credentials).start()
    try:
        options = ClientOptions(target=server.target, tls_root_cert=str(cert),
                                tls_server_name="recserve.test", retry=FAST_RETRY)
        with RecommenderClient(options=options) as client:
            assert client.recommend("lantern").bundle_version == FAKE_VERSION
        plain = ClientOptions(target=server.target, deadline_s=0.5, retry=FAST_RETRY)
        with RecommenderClient(options=plain) as client, pytest.raises(errors.Unavailable):
            client.recommend("lantern")  # a plaintext client cannot talk to a TLS server
    finally:
        server.stop()
