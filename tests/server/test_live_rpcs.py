"""Live writes over real gRPC against a real server (port 0, tiny encoder, real bundle)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.live.config import LiveConfig
from server.service.app import AllConfigs, ServerConfig, create_server


async def start(bundle, live_dir, **live):
    configs = AllConfigs(server=ServerConfig(metrics_port=-1),
                         live=LiveConfig(directory=str(live_dir), **live))
    server, port = await create_server(bundle, "127.0.0.1:0", configs)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, pb_grpc.RecommenderStub(channel), channel


@pytest.fixture
async def live_server(small_bundle, tmp_path):
    server, stub, channel = await start(small_bundle, tmp_path / "live")
    try:
        yield server, stub
    finally:
        await channel.close()
        await server.stop()


def items(prefix: str, n: int, group: str) -> list[pb.Item]:
    return [pb.Item(item_id=f"{prefix}{i}", title=f"{prefix} lantern {i}", text="hand blown glass",
                    attributes={"group": group}) for i in range(n)]


async def ids_in_group(stub, group: str, k: int = 50, **request) -> list[str]:
    response = await stub.Recommend(pb.RecommendRequest(
        query=request.pop("query", "glass lantern"), k=k,
        filter=pb.Filter(attribute_equals={"group": group}), **request))
    return [i.item_id for i in response.items]


async def info(stub) -> pb.GetInfoResponse:
    return await stub.GetInfo(pb.GetInfoRequest())


async def test_an_upserted_item_is_recommended_as_soon_as_the_write_returns(live_server):
    server, stub = live_server
    before = await info(stub)
    written = await stub.UpsertItems(pb.UpsertItemsRequest(items=items("NEW", 3, "g1")))
    assert written.applied == 3 and written.sequence == before.last_applied_sequence + 1
    assert sorted(await ids_in_group(stub, "g1")) == ["NEW0", "NEW1", "NEW2"]
    after = await info(stub)
    assert after.live_items == before.live_items + 3
    assert after.last_applied_sequence == written.sequence
    # the item was embedded from the bundle's item-text template: its own text finds it
    response = await stub.Embed(pb.EmbedRequest(texts=["NEW lantern 1. hand blown glass | group: g1"]))
    label = server.state.bundle.catalog.label_of["NEW1"]
    stored = server.state.bundle.index.vectors[label]
    assert abs(sum(a * b for a, b in zip(response.embeddings[0].values, stored)) - 1.0) < 1e-4


async def test_a_bad_batch_is_refused_whole_and_names_its_entries(live_server):
    _, stub = live_server
    before = await info(stub)
    batch = items("OK", 2, "g2") + [pb.Item(item_id="EMPTY", title=" ", text="")]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpsertItems(pb.UpsertItemsRequest(items=batch))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[2] ('EMPTY'): empty title and text" in refused.value.details()
    events = [pb.Interaction(user_id="u", item_id="NOPE", event="click"),
              pb.Interaction(user_id="u", item_id="ALSO-NOPE", event="purchase")]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.RecordInteractions(pb.RecordInteractionsRequest(events=events))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0] ('u', 'NOPE')" in refused.value.details() and "ALSO-NOPE" in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DeleteItems(pb.DeleteItemsRequest(item_ids=["OK0", "NOPE"]))
    assert "item_ids[0] ('OK0'): unknown" in refused.value.details()
    assert await ids_in_group(stub, "g2") == []
    assert (await info(stub)).last_applied_sequence == before.last_applied_sequence  # nothing logged


async def test_a_deleted_item_never_appears_once_delete_returns_under_concurrent_reads(live_server):
    _, stub = live_server
    await stub.UpsertItems(pb.UpsertItemsRequest(items=items("DEL", 20, "g3")))
    deleted_at: dict[str, float] = {}
    seen: list[tuple[float, list[str]]] = []
    done = asyncio.Event()

    async def reader():
        while not done.is_set():
            started = time.monotonic()
            seen.append((started, await ids_in_group(stub, "g3")))

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    for i in range(20):
        await stub.DeleteItems(pb.DeleteItemsRequest(item_ids=[f"DEL{i}"]))
        deleted_at[f"DEL{i}"] = time.monotonic()
        await asyncio.sleep(0.01)
    done.set()
    await asyncio.gather(*readers)
    late = [(t, i) for t, ids in seen for i in ids if i in deleted_at and t > deleted_at[i]]
    assert late == []
    assert len(seen) > 40 and any(ids for _, ids in seen)  # reads really overlapped the deletes
    assert await ids_in_group(stub, "g3") == []


async def test_interactions_shape_the_next_recommendation_for_that_user(live_server):
    server, stub = live_server
    await stub.UpsertItems(pb.UpsertItemsRequest(items=items("IX", 4, "g4")))
    events = [pb.Interaction(user_id="fresh-user", item_id="IX0", event="click"),
              pb.Interaction(user_id="fresh-user", item_id="IX1", event="purchase"),
              pb.Interaction(user_id="fresh-user", item_id="IX2", event="not_interested")]
    written = await stub.RecordInteractions(pb.RecordInteractionsRequest(events=events))
    assert written.applied == 3
    user = server.state.bundle.users.get("fresh-user")
    catalog = server.state.bundle.catalog
    assert [catalog.item_ids[label] for label in user.labels] == ["IX0", "IX1"]
    # not_interested suppresses IX2 for this user; exclude_interacted drops IX0 and IX1
    assert sorted(await ids_in_group(stub, "g4", user_id="fresh-user", query="")) == ["IX0", "IX1", "IX3"]
    response = await stub.Recommend(pb.RecommendRequest(
        user_id="fresh-user", k=10, filter=pb.Filter(attribute_equals={"group": "g4"}, exclude_interacted=True)))
    assert [i.item_id for i in response.items] == ["IX3"]
    assert "IX2" in await ids_in_group(stub, "g4", user_id="someone-else")
    assert server.state.bundle.tables.popularity[catalog.label_of["IX1"]] > 0  # online popularity


async def test_writes_survive_a_restart(small_bundle, tmp_path):
    server, stub, channel = await start(small_bundle, tmp_path / "live", snapshot_after_writes=2)
    await stub.UpsertItems(pb.UpsertItemsRequest(items=items("KEEP", 3, "g5")))
    await stub.DeleteItems(pb.DeleteItemsRequest(item_ids=["KEEP1"]))
    await stub.RecordInteractions(pb.RecordInteractionsRequest(
        events=[pb.Interaction(user_id="returning", item_id="KEEP2", event="purchase")]))
    last = (await info(stub)).last_applied_sequence
    await channel.close()
    await server.stop()
    assert list((tmp_path / "live").glob("snapshot-*"))

    server, stub, channel = await start(small_bundle, tmp_path / "live")
    try:
        assert (await info(stub)).last_applied_sequence == last
        assert sorted(await ids_in_group(stub, "g5")) == ["KEEP0", "KEEP2"]
        history = server.state.bundle.users.get("returning").labels
        assert [server.state.bundle.catalog.item_ids[label] for label in history] == ["KEEP2"]
    finally:
        await channel.close()
        await server.stop()


async def test_many_deletes_trigger_a_compaction_that_keeps_results_right(small_bundle, tmp_path):
    server, stub, channel = await start(small_bundle, tmp_path / "live", compaction_min_deleted=10)
    try:
        ids = list(server.state.bundle.catalog.item_ids)
        index = server.state.bundle.index
        stored = index.index.get_current_count()
        await stub.DeleteItems(pb.DeleteItemsRequest(item_ids=ids[: len(ids) // 3]))
        for _ in range(200):  # the rebuild runs in the background
            if index.index.get_current_count() < stored:
                break
            await asyncio.sleep(0.05)
        assert index.index.get_current_count() == index.size == len(ids) - len(ids) // 3
        assert server.live.writer.compactions == 1
        response = await stub.Recommend(pb.RecommendRequest(query="gift", k=50))
        assert len(response.items) == 50 and not {i.item_id for i in response.items} & set(ids[: len(ids) // 3])
    finally:
        await channel.close()
        await server.stop()


async def test_a_log_that_cannot_commit_refuses_the_write_and_applies_nothing(live_server, monkeypatch):
    server, stub = live_server

    def disk_full(writes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(server.live.wal, "append", disk_full)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpsertItems(pb.UpsertItemsRequest(items=items("LOST", 1, "g6")))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await ids_in_group(stub, "g6") == []
    monkeypatch.undo()
    assert (await stub.UpsertItems(pb.UpsertItemsRequest(items=items("LOST", 1, "g6")))).applied == 1


async def test_a_read_only_server_refuses_writes(small_bundle, tmp_path):
    server, stub, channel = await start(small_bundle, tmp_path / "live", enabled=False)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.DeleteItems(pb.DeleteItemsRequest(item_ids=["x"]))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert not (tmp_path / "live").exists()
    finally:
        await channel.close()
        await server.stop()


async def test_one_live_directory_serves_one_server(small_bundle, tmp_path, live_server):
    with pytest.raises(Exception, match="in use by another recserve server"):
        await start(small_bundle, tmp_path / "live")


async def test_an_upsert_larger_than_the_admission_queue_is_embedded_in_slices(live_server):
    server, stub = live_server
    n = server.configs.batcher.max_queue + 44  # more texts than the batcher admits at once
    written = await stub.UpsertItems(pb.UpsertItemsRequest(items=items("BULK", n, "g7")))
    assert written.applied == n
    assert len(await ids_in_group(stub, "g7", k=1000)) == n
