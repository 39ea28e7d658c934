"""The shared inference process (server/inference/): real subprocesses, real ONNX Runtime,
token ids and embeddings handed over in shared memory, on CPU (the GPU path is the same code
with another execution provider)."""

from __future__ import annotations

import mmap
import os
import signal
import socket
import threading

import numpy as np
import pytest

from export.runtime import EncoderRuntime, RuntimeConfig
from export.tokenization import TextTokenizer, pad_batch
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.inference import protocol as wire
from server.inference.client import RemoteEncoderRuntime
from server.inference.launcher import InferenceLauncher
from server.inference.process import InferenceProcess, _Worker
from server.workers.process import ServerProcess
from tests.server.connections import new_connection

TEXTS = ["red vintage mug", "christmas lantern with a long description " * 6, "tea", "zinc planter",
         "set of 3 cake tins pantry design", "glass star frosted t-light holder"]


@pytest.fixture(scope="module")
def model(tiny_onnx_dir):
    tokenizer = TextTokenizer(tiny_onnx_dir / "tokenizer", 128)
    local = EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(intra_op_threads=1))
    return tiny_onnx_dir / "model.onnx", tokenizer, local


def _feeds(tokenizer: TextTokenizer, texts: list[str], seq_len: int) -> dict[str, np.ndarray]:
    return pad_batch(tokenizer.encode(texts), seq_len, tokenizer.pad_id)


@pytest.fixture(scope="module")
def launcher():
    launched = InferenceLauncher(threads=1)
    launched.start()
    yield launched
    launched.stop()


def test_remote_runs_match_a_local_session_and_the_region_grows(model, launcher):
    path, tokenizer, local = model
    remote = RemoteEncoderRuntime(launcher.socket_path, path)
    assert (remote.dim, remote.input_names) == (local.dim, local.input_names)
    try:
        for texts, seq_len in ((TEXTS[:1], 16), (TEXTS, 64), (TEXTS * 100, 128), (TEXTS[2:4], 16)):
            feeds = _feeds(tokenizer, texts, seq_len)  # 600 x 128 outgrows the first 1 MiB region
            np.testing.assert_allclose(remote.run(feeds), local.run(feeds), atol=1e-5)
        assert len(remote._region) > 1 << 20
    finally:
        remote.close()


def test_concurrent_workers_each_get_their_own_rows(model, launcher):
    path, tokenizer, local = model
    clients = [RemoteEncoderRuntime(launcher.socket_path, path) for _ in range(3)]
    expected = {i: local.run(_feeds(tokenizer, TEXTS[i:i + 3], 32)) for i in range(3)}
    failures: list[str] = []

    def work(i: int) -> None:
        feeds = _feeds(tokenizer, TEXTS[i:i + 3], 32)
        for _ in range(30):
            if not np.allclose(clients[i].run(feeds), expected[i], atol=1e-5):
                failures.append(f"client {i} got rows that are not its own")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert not failures


def _ready_worker(process: InferenceProcess, key: str, feeds: dict, names: list[str], dim: int):
    """A connected worker whose request has been read: its region holds the inputs."""
    batch, seq_len = feeds[names[0]].shape
    fd = os.memfd_create("test-region")
    os.ftruncate(fd, wire.region_bytes(len(names), batch, seq_len, dim))
    region = mmap.mmap(fd, wire.region_bytes(len(names), batch, seq_len, dim))
    os.close(fd)
    for name, view in wire.input_views(memoryview(region), names, batch, seq_len).items():
        view[:] = feeds[name]
    ours, theirs = socket.socketpair()
    worker = _Worker(ours, key, region, [(batch, seq_len)])
    process.selector.register(ours, 1, worker)
    return worker, theirs


def test_requests_from_several_workers_run_as_one_merged_batch(model, tmp_path):
    path, tokenizer, local = model
    process = InferenceProcess(str(tmp_path / "unused.sock"), RuntimeConfig(intra_op_threads=1))
    key = "model"
    from server.inference.process import _Model

    process.models[key] = _Model(local, users=2)
    first, second = _feeds(tokenizer, TEXTS[:2], 32), _feeds(tokenizer, TEXTS[2:5], 32)
    w1, s1 = _ready_worker(process, key, first, local.input_names, local.dim)
    w2, s2 = _ready_worker(process, key, second, local.input_names, local.dim)
    process._run([w1, w2])
    assert (process.batches_run, process.rows_run) == (1, 5)  # one session run for both workers
    for worker, peer, feeds in ((w1, s1, first), (w2, s2, second)):
        assert wire.ANSWER.unpack(peer.recv(wire.ANSWER.size)) == (wire.OK, 0)
        out = wire.output_view(memoryview(worker.region), len(local.input_names), *feeds["input_ids"].shape,
                               local.dim)
        np.testing.assert_allclose(out, local.run(feeds), atol=1e-5)


def test_a_restarted_inference_process_is_reconnected(model, launcher):
    path, tokenizer, local = model
    remote = RemoteEncoderRuntime(launcher.socket_path, path)
    feeds = _feeds(tokenizer, TEXTS, 32)
    remote.run(feeds)
    launcher.process.send_signal(signal.SIGKILL)
    launcher.process.wait()
    launcher.start()
    try:
        np.testing.assert_allclose(remote.run(feeds), local.run(feeds), atol=1e-5)
    finally:
        remote.close()


def test_a_bad_model_is_refused_at_hello(launcher, tmp_path):
    from export.errors import BundleError

    with pytest.raises(BundleError, match="could not load"):
        RemoteEncoderRuntime(launcher.socket_path, tmp_path / "missing.onnx")


def test_two_workers_serve_through_one_inference_process(small_bundle, tmp_path):
    server = ServerProcess(small_bundle, tmp_path / "live", tmp_path / "server.log",
                           extra_args=("--workers", "2", "--inference", "shared"))
    server.start()
    try:
        seen = {}
        for _ in range(16):
            with new_connection(server.port) as channel:
                reply = pb_grpc.RecommenderStub(channel).Recommend(
                    pb.RecommendRequest(query="christmas lantern", k=5), timeout=20)
            seen[reply.timings.worker_id] = [item.item_id for item in reply.items]
        assert len(seen) == 2 and all(seen.values())
        assert len({tuple(v) for v in seen.values()}) == 1  # the same encoder answers for both
        log = server.log_text()
        assert "inference process started" in log and log.count("(shared)") == 2
    finally:
        assert server.stop() == 0
    assert "inference process" in server.log_text()
