"""Reload over real gRPC loads only releases inside the release directory, and never echoes paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import pytest

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.errors import InvalidRequest, NotFound, PermissionDenied
from server.live.config import LiveConfig
from server.release_guard import ReleaseDirectory, ResolvedRelease
from server.service.app import AllConfigs, ServerConfig, create_server
from tests.server.test_reload import build_sample_bundle

ADMIN = "admin-token"
AS_ADMIN = (("authorization", f"Bearer {ADMIN}"),)


@pytest.fixture(scope="module")
def other_bundle(tiny_onnx_dir, tmp_path_factory) -> Path:
    return build_sample_bundle(tiny_onnx_dir, tmp_path_factory.mktemp("guard-bundle"), 120)


@pytest.fixture
def releases(small_bundle, other_bundle, tmp_path) -> Path:
    """A publish directory: v1 (the served bundle), v2 (another), current -> v2."""
    root = tmp_path / "releases"
    root.mkdir()
    shutil.copytree(small_bundle, root / "v1")
    shutil.copytree(other_bundle, root / "v2")
    os.symlink("v2", root / "current")
    return root


async def start(bundle: Path, tmp_path: Path, live: bool = True, **server):
    configs = AllConfigs(server=ServerConfig(metrics_port=-1, tokens=f"read+admin:{ADMIN}", **server),
                         live=LiveConfig(directory=str(tmp_path / "live"), enabled=live))
    server, port = await create_server(bundle, "127.0.0.1:0", configs)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, pb_grpc.RecommenderStub(channel)


async def reload_error(stub, name: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Reload(pb.ReloadRequest(bundle_path=name), metadata=AS_ADMIN, timeout=60)
    return refused.value


async def test_releases_load_by_name_and_the_pointer_is_followed(releases, tmp_path):
    server, channel, stub = await start(releases / "v1", tmp_path, release_dir=str(releases))
    try:
        v1 = (await stub.GetInfo(pb.GetInfoRequest(), metadata=AS_ADMIN)).bundle_version
        to_current = await stub.Reload(pb.ReloadRequest(bundle_path="current"), metadata=AS_ADMIN, timeout=60)
        assert to_current.previous_version == v1 and to_current.bundle_version != v1
        back = await stub.Reload(pb.ReloadRequest(bundle_path="v1"), metadata=AS_ADMIN, timeout=60)
        assert back.bundle_version == v1
        again = await stub.Reload(pb.ReloadRequest(), metadata=AS_ADMIN, timeout=60)  # empty = current
        assert again.bundle_version == to_current.bundle_version
        assert server.bundle_path == os.path.join(os.path.realpath(releases), "current")  # SIGHUP's target
    finally:
        await channel.close()
        await server.stop()


async def test_nothing_outside_the_release_directory_loads_and_no_path_is_echoed(
        releases, other_bundle, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(other_bundle, outside)
    os.symlink(outside, releases / "escape")  # a link out of the directory
    os.symlink("../outside", releases / "sneaky")  # a relative one
    leaky = releases / "v3"
    shutil.copytree(other_bundle, leaky)
    (leaky / "catalog.extra").symlink_to(Path.home())  # a bundle with a link out inside it
    server, channel, stub = await start(releases / "v1", tmp_path, release_dir=str(releases))
    try:
        served = (await stub.GetInfo(pb.GetInfoRequest(), metadata=AS_ADMIN)).bundle_version
        cases = [(str(outside), grpc.StatusCode.INVALID_ARGUMENT),
                 (str(releases / "v2"), grpc.StatusCode.INVALID_ARGUMENT),  # a path, even a good one
                 ("../outside", grpc.StatusCode.INVALID_ARGUMENT),
                 (str(Path.home() / ".ssh"), grpc.StatusCode.INVALID_ARGUMENT),
                 ("escape", grpc.StatusCode.PERMISSION_DENIED),
                 ("sneaky", grpc.StatusCode.PERMISSION_DENIED),
                 ("v3", grpc.StatusCode.PERMISSION_DENIED),
                 ("v9", grpc.StatusCode.NOT_FOUND)]
        for name, code in cases:
            error = await reload_error(stub, name)
            assert error.code() == code, name
            for secret in (str(tmp_path), str(Path.home()), str(outside)):
                assert secret not in error.details(), (name, error.details())
        # a path that exists and one that does not answer alike: nothing to probe with
        exists, missing = await reload_error(stub, "/etc"), await reload_error(stub, "/no/such/dir")
        assert (exists.code(), exists.details()) == (missing.code(), missing.details())
        assert (await stub.GetInfo(pb.GetInfoRequest(), metadata=AS_ADMIN)).bundle_version == served
    finally:
        await channel.close()
        await server.stop()


async def test_a_release_that_fails_to_load_is_reported_without_its_path(releases, tmp_path):
    with open(releases / "v2" / "index.hnsw", "ab") as fh:
        fh.write(b"\0")
    server, channel, stub = await start(releases / "v1", tmp_path, release_dir=str(releases))
    try:
        error = await reload_error(stub, "current")
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "checksum" in error.details() and "release current" in error.details()
        assert str(tmp_path) not in error.details()
    finally:
        await channel.close()
        await server.stop()


async def test_read_only_servers_and_servers_without_a_release_directory_refuse_reload(
        releases, tmp_path):
    server, channel, stub = await start(releases / "v1", tmp_path / "a", live=False, release_dir=str(releases))
    try:
        error = await reload_error(stub, "current")
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "read-only" in error.details()
    finally:
        await channel.close()
        await server.stop()
    server, channel, stub = await start(releases / "v1", tmp_path / "b", live=False, release_dir=str(releases),
                                        allow_reload_when_read_only=True)
    try:
        v1 = (await stub.GetInfo(pb.GetInfoRequest(), metadata=AS_ADMIN)).bundle_version
        reloaded = await stub.Reload(pb.ReloadRequest(bundle_path="current"), metadata=AS_ADMIN, timeout=60)
        assert reloaded.bundle_version != v1
    finally:
        await channel.close()
        await server.stop()
    server, channel, stub = await start(releases / "v1", tmp_path / "c")
    try:
        error = await reload_error(stub, "current")
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "--release-dir" in error.details()
    finally:
        await channel.close()
        await server.stop()


def test_names_are_checked_before_the_file_system_is_touched(tmp_path):
    guard = ReleaseDirectory(str(tmp_path))
    for name in ("..", ".", "a/b", "/abs", "v1/../..", ".hidden", "x" * 200, "current\n"):
        with pytest.raises(InvalidRequest):
            guard.resolve(name)
    with pytest.raises(NotFound):
        guard.resolve("v1")
    with pytest.raises(PermissionDenied, match="--release-dir"):
        ReleaseDirectory("").resolve("current")


def test_scrub_takes_every_absolute_path_out_of_a_message(tmp_path):
    guard = ReleaseDirectory(str(tmp_path))
    release = ResolvedRelease("v2", str(tmp_path / "v2"))
    message = (f"reload of {tmp_path}/v2 failed: {tmp_path}/v2/index.hnsw: bad header; "
               f"see {tmp_path}/other and /var/lib/x.db")
    scrubbed = guard.scrub(message, release)
    assert str(tmp_path) not in scrubbed and "/var/lib" not in scrubbed
    assert "<release v2>/index.hnsw: bad header" in scrubbed
