"""Deploying published releases to a real server over gRPC, and rolling them back."""

from __future__ import annotations

import os
import shutil

import pytest

from clients.client import RecommenderClient
from clients.release.deploy import Deployer, DeployTimeouts, SmokeTest
from clients.release.outcome import DeployFailed, RollbackFailed
from clients.release.publish import PublishDir
from tests.clients.release_support import ServerThread, build_release_bundle, bundle_version, \
    make_release_data

TIMEOUTS = DeployTimeouts(reload_s=120, settle_s=10)
SMOKE = SmokeTest(("white metal lantern", "red mug"), k=10)
FAILING_SMOKE = SmokeTest(("white metal lantern",), k=1000)  # more items than the catalog has


@pytest.fixture(scope="module")
def built(tiny_onnx_dir, tmp_path_factory):
    """Two bundles from the same inputs (two versions) — what two releases would publish."""
    work = tmp_path_factory.mktemp("deploy")
    data = make_release_data(work / "data")
    return tuple(build_release_bundle(tiny_onnx_dir, data.catalog, data.interactions, work / name)
                 for name in ("a", "b"))


@pytest.fixture
def published(built, tmp_path):
    """A publish directory with v1 and v2, `current` -> v1."""
    publish = PublishDir.open(tmp_path / "pub")
    releases = [publish.publish(shutil.copytree(b, tmp_path / f"copy-{b.name}")) for b in built]
    publish.switch("v1")
    return publish, *releases


@pytest.fixture
def served(published, tmp_path):
    publish, v1, v2 = published
    server = ServerThread(publish.root / "current", tmp_path / "live", publish.root).start()
    client = RecommenderClient(server.target)
    try:
        yield publish, v1, v2, client, Deployer(client, TIMEOUTS)
    finally:
        client.close()
        server.stop()


def test_deploy_reloads_the_pointer_and_the_server_answers_from_the_new_release(served):
    publish, v1, v2, client, deployer = served
    assert deployer.served_version() == v1.bundle_version
    publish.switch("v2")
    deployer.deploy(v2.bundle_version, SMOKE)
    assert client.info().bundle_version == v2.bundle_version
    assert client.recommend("lantern", k=3).bundle_version == v2.bundle_version


def test_a_bundle_the_server_refuses_leaves_it_serving_and_the_pointer_goes_back(served):
    publish, v1, v2, client, deployer = served
    with open(v2.path / "index.hnsw", "ab") as fh:  # damaged after publishing
        fh.write(b"\0")
    publish.switch("v2")
    with pytest.raises(DeployFailed, match="checksum"):
        deployer.deploy(v2.bundle_version, SMOKE)
    assert client.info().bundle_version == v1.bundle_version  # the server kept its bundle
    assert deployer.rollback(publish, v1, served_before=v1.bundle_version) == v1.bundle_version
    assert os.readlink(publish.root / "current") == "v1"
    assert client.info().bundle_version == v1.bundle_version


def test_a_failed_smoke_test_reloads_the_previous_release(served):
    publish, v1, v2, client, deployer = served
    publish.switch("v2")
    with pytest.raises(DeployFailed, match=r"k=1000\) returned \d+ items"):
        deployer.deploy(v2.bundle_version, FAILING_SMOKE)
    assert client.info().bundle_version == v2.bundle_version  # it had switched
    assert deployer.rollback(publish, v1, served_before=v1.bundle_version) == v1.bundle_version
    assert os.readlink(publish.root / "current") == "v1"
    assert client.info().bundle_version == v1.bundle_version
    assert client.recommend("lantern", k=3).bundle_version == v1.bundle_version


def test_a_server_that_loads_something_else_fails_the_deploy(served):
    _, v1, v2, client, deployer = served
    # the pointer still names v1, so the reload brings v1 back, not the expected v2
    with pytest.raises(DeployFailed, match=f"loaded {v1.bundle_version}, not {v2.bundle_version}"):
        deployer.deploy(v2.bundle_version, SMOKE)


def test_without_a_previous_release_a_switched_server_cannot_be_rolled_back(built, tmp_path):
    outside, candidate = built  # the server serves a bundle from outside the publish directory
    publish = PublishDir.open(tmp_path / "pub")
    release = publish.publish(shutil.copytree(candidate, tmp_path / "copy"))
    publish.switch(release.name)
    server = ServerThread(outside, tmp_path / "live", publish.root).start()
    try:
        with RecommenderClient(server.target) as client:
            deployer = Deployer(client, TIMEOUTS)
            with pytest.raises(DeployFailed):
                deployer.deploy(release.bundle_version, FAILING_SMOKE)
            with pytest.raises(RollbackFailed, match="no previous release"):
                deployer.rollback(publish, None, served_before=bundle_version(outside))
            assert publish.current() is None  # the pointer is back to what it was: none
            assert client.info().bundle_version == release.bundle_version
    finally:
        server.stop()
