"""A small real bundle (tiny encoder, real demo catalog sample) and running servers over it."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from protos import recommender_pb2_grpc
from tests.server.serve_process import free_port


def _take_sample(catalog: Path, interactions: Path, out: Path, n_items: int = 400) -> tuple[Path, Path]:
    """The first n_items of the demo catalog and the interactions on them (fast to embed)."""
    out.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if catalog.suffix == ".gz" else open
    with opener(catalog, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [row for _, row in zip(range(n_items), reader)]
        fields = reader.fieldnames
    keep = {row["item_id"] for row in rows}
    small_catalog = out / "catalog.csv"
    with open(small_catalog, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    opener = gzip.open if interactions.suffix == ".gz" else open
    with opener(interactions, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        events = [row for row in reader if row["item_id"] in keep]
        fields = reader.fieldnames
    small_events = out / "interactions.csv"
    with open(small_events, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(events)
    return small_catalog, small_events


@pytest.fixture(scope="session")
def small_bundle(tiny_onnx_dir, tmp_path_factory) -> Path:
    """A complete bundle: tiny fp32 encoder over 400 real Online Retail items and their events."""
    from export.build import build_bundle
    from export.demo import demo_catalog_path, demo_interactions_path

    work = tmp_path_factory.mktemp("small-bundle")
    catalog, events = _take_sample(Path(demo_catalog_path()), Path(demo_interactions_path()), work / "data")
    out = work / "bundle"
    build_bundle(tiny_onnx_dir, catalog, events, out, progress=False)
    return out


@pytest.fixture(scope="session")
def bundle_manifest(small_bundle) -> dict:
    return json.loads((small_bundle / "manifest.json").read_text())


@pytest.fixture
async def running_server(small_bundle, tmp_path):
    """(server, stub) for a real server on a free port, with its own empty live directory (no
    test sees another's writes); stopped after the test."""
    from server.live.config import LiveConfig
    from server.service.app import AllConfigs, ServerConfig, create_server

    configs = AllConfigs(server=ServerConfig(metrics_port=0), live=LiveConfig(directory=str(tmp_path / "live")))
    server, port = await create_server(small_bundle, "127.0.0.1:0", configs)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, recommender_pb2_grpc.RecommenderStub(channel), channel
    finally:
        await channel.close()
        await server.stop()


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    """URI of a Milvus Lite gRPC server in its own process, one per test module (a fresh
    address: no pymilvus connection cached by an earlier module is reused), stopped after it.

    Its output goes to a file, not a pipe: a pipe nobody drains could fill with the server's logs
    and then block the server mid-session."""
    port = free_port()
    data = tmp_path_factory.mktemp("milvus-data")
    log_path = data.with_name(data.name + ".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data),
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while "listening" not in log_path.read_text():  # the server prints its address once it listens
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"Milvus Lite did not start: {log_path.read_text()[-2000:]!r}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
        proc.terminate()
        proc.wait(timeout=30)
