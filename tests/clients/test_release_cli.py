"""`recserve release` outcomes and exit codes: refusals publish nothing and move nothing.

These tests replace the export step with a copy of an already exported encoder (the real
export and its gate run in test_release_e2e.py); everything after it is real.
"""

from __future__ import annotations

import os

import pytest

from clients import cli
from clients.release import deploy, pipeline
from clients.release.outcome import DeployFailed
from clients.release.publish import PublishDir
from tests.clients.release_support import ServerThread, build_release_bundle, bundle_version, \
    copy_encoder_step, last_json_line, make_release_data


@pytest.fixture(scope="module")
def release_data(tmp_path_factory):
    return make_release_data(tmp_path_factory.mktemp("release-data"))


@pytest.fixture
def exported(tiny_onnx_dir, monkeypatch):
    monkeypatch.setattr(pipeline, "export_step", copy_encoder_step(tiny_onnx_dir))


def release(capsys, publish, data, *extra: str, catalog=None) -> tuple[int, dict]:
    code = cli.main(["release", "--model", "default", "--catalog", str(catalog or data.catalog),
                     "--interactions", str(data.interactions), "--publish-dir", str(publish),
                     "--quiet", *extra])
    outcome = last_json_line(capsys.readouterr().out)
    assert outcome["exit_code"] == code
    return code, outcome


def staging_left(publish) -> list[str]:
    return [p.name for p in publish.iterdir() if p.name.startswith(".staging-")]


def test_a_worse_candidate_is_refused_unless_forced(exported, release_data, tmp_path, capsys):
    publish = tmp_path / "pub"
    code, first = release(capsys, publish, release_data)
    assert code == 0 and first["release"] == "v1"

    # same encoder, but the catalog's titles no longer describe its items
    code, refused = release(capsys, publish, release_data, catalog=release_data.scrambled_catalog)
    assert code == 4, refused
    assert refused["status"] == "quality_refused" and refused["quality"]["worse"] is True
    assert refused["quality"]["current_release"] == "v1"
    assert refused["quality"]["regression"] > 0.05
    assert PublishDir(publish).release_names() == ["v1"]  # nothing published
    assert os.readlink(publish / "current") == "v1" and staging_left(publish) == []

    code, forced = release(capsys, publish, release_data, "--force",
                           catalog=release_data.scrambled_catalog)
    assert code == 0 and forced["release"] == "v2" and forced["forced"] is True
    assert forced["quality"]["worse"] is True
    assert os.readlink(publish / "current") == "v2"
    # a looser threshold accepts the same drop without --force
    code, loose = release(capsys, publish, release_data, "--max-regression", "1.0")
    assert code == 0 and loose["release"] == "v3"
    assert [h["status"] for h in PublishDir(publish).history()] == [
        "published", "quality_refused", "published", "published"]


def test_a_failed_verification_gate_exits_3_and_publishes_nothing(release_data, tmp_path, capsys,
                                                                  monkeypatch):
    import export.encoder_export
    from export.verification import GateFailed

    def failing_export(model, out, config, gate, console=None):
        raise GateFailed("int8 export failed the verification gate: mean_cosine 0.9 < 0.99")

    monkeypatch.setattr(export.encoder_export, "export_encoder", failing_export)
    publish = tmp_path / "pub"
    code, outcome = release(capsys, publish, release_data)
    assert code == 3 and outcome["status"] == "verification_failed"
    assert "mean_cosine" in outcome["error"]
    assert PublishDir(publish).release_names() == [] and not (publish / "current").exists()
    assert staging_left(publish) == []


def test_bad_input_exits_2_before_any_work(release_data, tmp_path, capsys, monkeypatch, dead_target):
    def no_export(*args):
        raise AssertionError("the export must not start")

    monkeypatch.setattr(pipeline, "export_step", no_export)
    publish = tmp_path / "pub"
    code, outcome = release(capsys, publish, release_data, catalog=tmp_path / "missing.csv")
    assert code == 2 and "no such file" in outcome["error"]
    assert not publish.exists()

    code, outcome = release(capsys, publish, release_data, "--target", dead_target,
                            "--deadline-ms", "500")
    assert code == 2 and "does not answer GetInfo" in outcome["error"]

    with PublishDir(publish).lock():
        code, outcome = release(capsys, publish, release_data)
    assert code == 2 and "another release" in outcome["error"]


def test_a_rollback_that_cannot_restore_the_server_exits_6_and_says_where_things_are(
        exported, tiny_onnx_dir, release_data, tmp_path, capsys, monkeypatch):
    # the server serves a bundle from outside the publish directory: after the first release
    # switched it, there is no earlier release to put back
    outside = build_release_bundle(tiny_onnx_dir, release_data.catalog, release_data.interactions,
                                   tmp_path / "outside")
    publish = tmp_path / "pub"
    server = ServerThread(outside, tmp_path / "live", publish).start()

    def failing_smoke_test(client, expected_version, smoke):
        raise DeployFailed("forced smoke-test failure")

    monkeypatch.setattr(deploy, "smoke_test", failing_smoke_test)
    try:
        code, outcome = release(capsys, publish, release_data, "--target", server.target)
    finally:
        server.stop()
    assert code == 6 and outcome["status"] == "rollback_failed"
    assert "forced smoke-test failure" in outcome["error"] and "no previous release" in outcome["error"]
    assert outcome["current"] is None and not (publish / "current").exists()
    assert outcome["served_version"] == bundle_version(publish / "v1")
    assert outcome["served_before"] == bundle_version(outside)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["release", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--catalog", "--interactions", "--publish-dir", "--target", "--force",
                   "--max-regression"):
        assert option in text


def test_the_documented_exit_codes_are_the_ones_the_command_uses():
    import re
    from pathlib import Path

    from clients.release import outcome

    doc = (Path(__file__).parents[2] / "docs" / "RELEASE.md").read_text()
    table = doc.split("## Exit codes", 1)[1].split("##", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d) \|", table, flags=re.MULTILINE)}
    used = {value for name, value in vars(outcome).items() if name.startswith("EXIT_")}
    assert documented == used == {0, 2, 3, 4, 5, 6}
    errors = [outcome.BadInput, outcome.VerificationRefused, outcome.QualityRefused,
              outcome.DeployFailed, outcome.RollbackFailed]
    assert sorted(e.exit_code for e in errors) == [2, 3, 4, 5, 6]
