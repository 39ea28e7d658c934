"""`recserve release` end to end: real export of the tiny encoder (verification gate included),
real build, the quality probe, publishing, and deploying to a real server over gRPC."""

from __future__ import annotations

import os

import pytest

from clients import cli
from clients.client import RecommenderClient
from clients.release import deploy
from clients.release.outcome import DeployFailed
from clients.release.publish import PublishDir
from tests.clients.release_support import ServerThread, bundle_version, last_json_line, \
    make_release_data


@pytest.fixture(scope="module")
def release_data(tmp_path_factory):
    return make_release_data(tmp_path_factory.mktemp("release-data"))


def release(capsys, *args: str) -> tuple[int, dict]:
    code = cli.main(["release", *args, "--quiet"])
    return code, last_json_line(capsys.readouterr().out)


def test_release_publishes_then_deploys_and_rolls_back_a_failed_deploy(
        tiny_encoder_dir, release_data, tmp_path, capsys, monkeypatch):
    publish = tmp_path / "publish"
    args = ["--model", str(tiny_encoder_dir), "--catalog", str(release_data.catalog),
            "--interactions", str(release_data.interactions), "--publish-dir", str(publish)]

    # first release: published as v1, `current` -> v1, bundle intact (checksums verified)
    code, first = release(capsys, *args)
    assert code == 0, first
    assert (first["release"], first["status"], first["previous"]) == ("v1", "published", None)
    assert os.readlink(publish / "current") == "v1"
    from export.bundle import read_manifest
    v1 = read_manifest(publish / "v1", verify=True)
    assert v1["version"] == first["bundle_version"]
    assert v1["encoder"]["verification"]["passed"] is True  # it went through the gate
    assert first["quality"]["candidate"]["cases"] > 100 and first["quality"]["current"] is None

    server = ServerThread(publish / "current", tmp_path / "live", publish).start()
    try:
        with RecommenderClient(server.target) as client:
            assert client.info().bundle_version == v1["version"]

            # second release, deployed, but its smoke test fails after the server switched:
            # the pointer goes back to v1 and the server is reloaded onto v1
            seen_during_smoke = []

            def failing_smoke_test(smoke_client, expected_version, smoke):
                seen_during_smoke.append(smoke_client.info().bundle_version)
                raise DeployFailed("forced smoke-test failure")

            monkeypatch.setattr(deploy, "smoke_test", failing_smoke_test)
            code, second = release(capsys, *args, "--target", server.target)
            assert code == 5, second
            assert second["status"] == "rolled_back" and "forced smoke-test failure" in second["error"]
            assert seen_during_smoke == [bundle_version(publish / "v2")]  # it really had switched
            assert os.readlink(publish / "current") == "v1"
            assert client.info().bundle_version == v1["version"]
            assert (second["current"], second["served_version"]) == ("v1", v1["version"])
            assert client.recommend("lantern", k=5).bundle_version == v1["version"]
            assert (publish / "v2").is_dir()  # kept for inspection, never reused
            # the second release measured against the published v1 on the same probe
            assert second["quality"]["current_release"] == "v1"
            monkeypatch.undo()

            # third release: deployed, the server serves it and answers from it
            code, third = release(capsys, *args, "--target", server.target)
            assert code == 0, third
            assert (third["release"], third["status"], third["previous"]) == ("v3", "deployed", "v1")
            assert os.readlink(publish / "current") == "v3"
            assert client.info().bundle_version == third["bundle_version"] == bundle_version(publish / "v3")
            result = client.recommend("white metal lantern", k=10)
            assert result.bundle_version == third["bundle_version"] and len(result.items) == 10
    finally:
        server.stop()

    history = PublishDir(publish).history()
    assert [(h.get("release"), h["status"]) for h in history] == [
        ("v1", "published"), ("v2", "rolled_back"), ("v3", "deployed")]
    assert not [p for p in publish.iterdir() if p.name.startswith(".staging-")]
