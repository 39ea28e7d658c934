"""Hot reload over real gRPC: swap, live writes replayed, failures keep the old bundle, SIGHUP.

Reload takes the name of a release in the server's release directory (server/release_guard.py):
each test copies the bundle it reloads into that directory first.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.live.config import LiveConfig
from server.service.app import AllConfigs, ServerConfig, create_server
from tests.server.test_live_rpcs import ids_in_group, info, items


@pytest.fixture
async def live_server(small_bundle, tmp_path):
    """A live-write server whose release directory is tmp_path/releases."""
    configs = AllConfigs(server=ServerConfig(metrics_port=-1, release_dir=str(tmp_path / "releases")),
                         live=LiveConfig(directory=str(tmp_path / "live")))
    server, port = await create_server(small_bundle, "127.0.0.1:0", configs)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, pb_grpc.RecommenderStub(channel)
    finally:
        await channel.close()
        await server.stop()


def publish(server, bundle: Path, name: str) -> str:
    """Copy a bundle into the server's release directory as release `name`; returns the name."""
    shutil.copytree(bundle, Path(server.config.release_dir) / name)
    return name


def build_sample_bundle(tiny_onnx_dir, work: Path, n_items: int, **build) -> Path:
    from export.build import build_bundle
    from export.demo import demo_catalog_path, demo_interactions_path
    from tests.server.conftest import _take_sample

    catalog, events = _take_sample(Path(demo_catalog_path()), Path(demo_interactions_path()),
                                   work / "data", n_items=n_items)
    build_bundle(tiny_onnx_dir, catalog, events, work / "bundle", progress=False, **build)
    return work / "bundle"


@pytest.fixture(scope="module")
def other_bundle(tiny_onnx_dir, tmp_path_factory) -> Path:
    """A second bundle: the same encoder over the first 300 demo items (a different version)."""
    return build_sample_bundle(tiny_onnx_dir, tmp_path_factory.mktemp("other-bundle"), 300)


async def test_reload_swaps_the_bundle_and_replays_live_writes_onto_it(live_server, other_bundle):
    server, stub = live_server
    old = (await info(stub)).bundle_version
    shared_item = server.state.bundle.catalog.item_ids[0]  # in both bundles
    await stub.UpsertItems(pb.UpsertItemsRequest(items=items("LIVE", 2, "r1")))
    await stub.DeleteItems(pb.DeleteItemsRequest(item_ids=[shared_item, "LIVE1"]))
    await stub.RecordInteractions(pb.RecordInteractionsRequest(
        events=[pb.Interaction(user_id="reloaded-user", item_id="LIVE0", event="purchase")]))

    reloaded = await stub.Reload(pb.ReloadRequest(bundle_path=publish(server, other_bundle, "v2")))
    assert reloaded.previous_version == old and reloaded.bundle_version != old
    assert reloaded.replayed_writes == 3
    now = await info(stub)
    assert now.bundle_version == reloaded.bundle_version and now.live_items == 300 + 1 - 1
    assert await ids_in_group(stub, "r1") == ["LIVE0"]
    response = await stub.Recommend(pb.RecommendRequest(query="gift", k=300))
    assert response.bundle_version == reloaded.bundle_version
    assert shared_item not in {i.item_id for i in response.items}
    history = server.state.bundle.users.get("reloaded-user").labels
    assert [server.state.bundle.catalog.item_ids[label] for label in history] == ["LIVE0"]
    # writes keep working on the new bundle, and a restart comes back to the same state
    written = await stub.UpsertItems(pb.UpsertItemsRequest(items=items("AFTER", 1, "r1")))
    assert written.sequence == now.last_applied_sequence + 1
    assert sorted(await ids_in_group(stub, "r1")) == ["AFTER0", "LIVE0"]


async def test_writes_made_before_the_new_bundle_was_built_are_not_replayed(live_server, tiny_onnx_dir, tmp_path):
    server, stub = live_server
    await stub.UpsertItems(pb.UpsertItemsRequest(items=items("OLDER", 1, "r2")))
    newer_bundle = await asyncio.to_thread(build_sample_bundle, tiny_onnx_dir, tmp_path / "newer", 200)
    await stub.UpsertItems(pb.UpsertItemsRequest(items=items("NEWER", 1, "r2")))
    reloaded = await stub.Reload(pb.ReloadRequest(bundle_path=publish(server, newer_bundle, "newer")))
    # The rule (docs/LIVE_WRITES.md): a bundle contains the writes received before its build
    # started (its catalog was exported after them); only later writes are replayed.
    assert reloaded.replayed_writes == 1
    assert await ids_in_group(stub, "r2") == ["NEWER0"]


async def test_a_failed_reload_keeps_serving_the_old_bundle_and_says_why(live_server, other_bundle, tmp_path):
    server, stub = live_server
    old = (await info(stub)).bundle_version
    tampered = Path(server.config.release_dir) / publish(server, other_bundle, "tampered")
    with open(tampered / "index.hnsw", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    (Path(server.config.release_dir) / "empty").mkdir()
    for name, expected in (("tampered", "checksum"), ("empty", "not a bundle")):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Reload(pb.ReloadRequest(bundle_path=name))
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"still serving {old}" in failed.value.details() and expected in failed.value.details()
        assert str(tmp_path) not in failed.value.details()  # the server's paths stay on the server
    assert (await info(stub)).bundle_version == old
    assert (await stub.UpsertItems(pb.UpsertItemsRequest(items=items("STILL", 1, "r3")))).applied == 1
    assert await ids_in_group(stub, "r3") == ["STILL0"]
    assert server.state.batcher.healthy


async def test_calls_in_flight_during_a_reload_all_succeed(live_server, other_bundle):
    server, stub = live_server
    old = (await info(stub)).bundle_version
    name = publish(server, other_bundle, "v2")
    versions: list[str] = []
    stop = asyncio.Event()

    async def reader(i: int):
        n = 0
        while not stop.is_set():
            response = await stub.Recommend(pb.RecommendRequest(query=f"candle {i} {n}", k=5))
            versions.append(response.bundle_version)
            n += 1

    readers = [asyncio.create_task(reader(i)) for i in range(4)]
    await asyncio.sleep(0.2)
    first = asyncio.ensure_future(stub.Reload(pb.ReloadRequest(bundle_path=name)))
    await asyncio.sleep(0.05)  # loading a bundle takes far longer than this
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # one reload at a time
        await stub.Reload(pb.ReloadRequest(bundle_path=name))
    assert "already in progress" in refused.value.details()
    new = (await first).bundle_version
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*readers)  # any failed call would raise here
    assert set(versions) == {old, new} and versions[-1] == new


async def test_live_items_are_re_embedded_when_the_new_bundle_embeds_differently(live_server, tiny_onnx_dir, tmp_path):
    from export.item_text import item_text

    server, stub = live_server
    long_text = " ".join(f"word{i}" for i in range(200))
    await stub.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(
        item_id="LONG", title="long lantern", text=long_text, attributes={"group": "r5"})]))
    before = server.state.bundle.index.vectors[server.state.bundle.catalog.label_of["LONG"]].copy()
    # max_length 16 instead of 128: another encoder fingerprint, so the logged vector is stale
    shorter = await asyncio.to_thread(build_sample_bundle, tiny_onnx_dir, tmp_path / "short", 100, max_length=16)
    reloaded = await stub.Reload(pb.ReloadRequest(bundle_path=publish(server, shorter, "short")))
    assert reloaded.replayed_writes == 1
    bundle = server.state.bundle
    after = bundle.index.vectors[bundle.catalog.label_of["LONG"]]
    embedded = await stub.Embed(pb.EmbedRequest(texts=[item_text("long lantern", long_text, {"group": "r5"})]))
    assert abs(float(np.dot(embedded.embeddings[0].values, after)) - 1.0) < 1e-4  # the new encoder's vector
    assert float(np.dot(before, after)) < 0.9999  # not the old one


def _serve(bundle: Path, live_dir: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
         "--port", "0", "--metrics-port", "-1", "--live-dir", str(live_dir), "--log-level", "INFO"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for line in process.stdout:
        match = re.search(r"serving bundle \S+ on [\d.]+:(\d+)", line)
        if match:
            return process, int(match.group(1))
    raise AssertionError(f"server exited before serving (rc={process.wait()})")


async def test_sighup_reloads_the_bundle_the_path_now_points_to(small_bundle, other_bundle, tmp_path):
    current = tmp_path / "current"
    current.symlink_to(small_bundle)
    process, port = _serve(current, tmp_path / "live")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            old = (await info(stub)).bundle_version
            await stub.UpsertItems(pb.UpsertItemsRequest(items=items("HUP", 1, "r4")))
            current.unlink()
            current.symlink_to(other_bundle)  # the release step moves the symlink ...
            process.send_signal(signal.SIGHUP)  # ... and signals the server
            deadline = time.monotonic() + 30
            while (version := (await info(stub)).bundle_version) == old and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert version != old
            assert await ids_in_group(stub, "r4") == ["HUP0"]
            assert (await info(stub)).live_items == 301
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
