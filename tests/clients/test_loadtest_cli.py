"""`recserve loadtest` end to end: worker processes, real gRPC, the fake server; checks the
report's consistency with what the server saw (never speed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.cli import main
from protos import recommender_pb2 as pb

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def loadtest(server, out, *extra) -> tuple[int, dict]:
    code = main(["loadtest", "--target", server.target, "--warmup", "0", "--out", str(out), *extra])
    report_file = out / "report.json"
    return code, json.loads(report_file.read_text()) if report_file.exists() else {}


def assert_consistent(phase: dict) -> None:
    assert phase["ok"] + phase["errors"] == phase["calls"] > 0
    assert sum(phase["errors_by_code"].values()) == phase["errors"]
    assert sum(k["calls"] for k in phase["by_kind"].values()) == phase["calls"]
    lat = phase["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert phase["service_latency_ms"]["p50"] <= lat["p50"]
    assert phase["throughput_ok"] <= phase["sent_rate"] + 1e-9


def test_open_loop_report_matches_what_the_server_saw(fake_server, tmp_path, capsys):
    fake_server.behaviour.latency_s = 0.002
    fake_server.behaviour.overload_every = 20
    code, report = loadtest(fake_server, tmp_path, "--rate", "150", "--duration", "2",
                            "--workers", "2", "--deadline-ms", "2000")
    assert code == 0
    (phase,) = report["phases"]
    assert_consistent(phase)
    assert phase["calls"] == fake_server.behaviour.recommends  # every call counted, none invented
    assert phase["errors_by_code"] == {"RESOURCE_EXHAUSTED": fake_server.behaviour.recommends // 20}
    assert phase["offered_rate"] == 150 and phase["scheduled_rate"] == pytest.approx(150, rel=0.3)
    assert phase["server_timings_ms"]["encode"]["p50"] == 2.0
    assert phase["server_timings_ms"]["total"]["p99"] == 2.8
    assert phase["generator"]["workers"] == 2
    assert report["server"]["bundle_version"] == "fake-20240101"
    assert report["workload"]["mix"] == pytest.approx({"text": 0.5, "user": 0.25, "history": 0.25},
                                                      abs=1e-3)
    assert set(phase["by_kind"]) == {"text", "user", "history"}
    assert (tmp_path / "latency_over_time.png").read_bytes()[:8] == PNG_MAGIC
    records = np.load(tmp_path / "records.npz")
    assert len(records["0_code"]) == phase["calls"]
    assert int((records["0_code"] != 0).sum()) == phase["errors"]
    out = capsys.readouterr().out
    assert "p99.9 ms" in out and "RESOURCE_EXHAUSTED" in out and "encode" in out


def test_closed_loop(fake_server, tmp_path):
    fake_server.behaviour.latency_s = 0.01
    code, report = loadtest(fake_server, tmp_path, "--concurrency", "4", "--duration", "1.5",
                            "--workers", "2")
    assert code == 0
    (phase,) = report["phases"]
    assert_consistent(phase)
    assert phase["mode"] == "closed" and phase["concurrency"] == 4 and phase["offered_rate"] is None
    assert phase["calls"] == fake_server.behaviour.recommends
    assert phase["errors"] == 0
    assert phase["sent_rate"] <= 4 / 0.01  # C callers cannot beat C / latency


def test_ramp_finds_the_max_sustainable_rate(fake_server, tmp_path, capsys):
    code, report = loadtest(fake_server, tmp_path, "--ramp", "50:100:50", "--duration", "1",
                            "--workers", "1", "--p99-target-ms", "1000",
                            "--late-ms", "250")  # a noisy shared machine must not fail a step
    assert code == 0
    assert [p["offered_rate"] for p in report["phases"]] == [50, 100]
    for phase in report["phases"]:
        assert_consistent(phase)
        assert phase["sustained"] is True
    assert report["ramp"]["max_sustainable_rate"] == 100
    assert sum(p["calls"] for p in report["phases"]) == fake_server.behaviour.recommends
    assert (tmp_path / "latency_vs_rate.png").read_bytes()[:8] == PNG_MAGIC
    assert "Max sustainable rate: 100/s" in capsys.readouterr().out


def test_custom_workload_file_and_mix(fake_server, tmp_path):
    workload = tmp_path / "w.jsonl"
    workload.write_text('{"query": "red mug", "k": 3}\n{"history": ["85123A", "71053"], "weight": 2}\n')
    code, report = loadtest(fake_server, tmp_path / "out", "--rate", "100", "--duration", "1",
                            "--workers", "1", "--workload", str(workload), "--mix", "text=1")
    assert code == 0
    assert set(report["phases"][0]["by_kind"]) == {"text"}
    sent = [r for r in fake_server.behaviour.requests if isinstance(r, pb.RecommendRequest)]
    assert len(sent) == report["phases"][0]["calls"]
    assert {r.query for r in sent} == {"red mug"} and all(r.k == 3 for r in sent)


def test_no_successful_call_still_reports_and_exits_1(fake_server, tmp_path, capsys):
    fake_server.behaviour.overload_every = 1  # every Recommend refused
    code, report = loadtest(fake_server, tmp_path, "--rate", "50", "--duration", "0.5", "--workers", "1")
    assert code == 1
    (phase,) = report["phases"]
    assert phase["ok"] == 0 and phase["errors_by_code"] == {"RESOURCE_EXHAUSTED": phase["calls"]}
    assert phase["error_details"] == {"RESOURCE_EXHAUSTED": {"queue full": phase["calls"]}}
    assert phase["latency_ms"]["p50"] is None
    assert (tmp_path / "latency_over_time.png").exists()
    assert "no call succeeded" in capsys.readouterr().out


def test_workload_built_from_the_retail_csv(fake_server, tmp_path):
    from tests.clients.test_workload import write_retail_csv

    source = write_retail_csv(tmp_path / "online_retail.csv.gz")
    code, report = loadtest(fake_server, tmp_path / "out", "--rate", "60", "--duration", "0.5",
                            "--workers", "1", "--source", str(source))
    assert code == 0
    assert report["workload"]["source"].startswith("Online Retail (online_retail.csv.gz")
    users = {r.user_id for r in fake_server.behaviour.requests if isinstance(r, pb.RecommendRequest)}
    assert users <= {"", "17850", "13047"}


def test_unreachable_server_stops_before_starting(dead_target, tmp_path, capsys):
    code = main(["loadtest", "--target", dead_target, "--rate", "10", "--out", str(tmp_path),
                 "--deadline-ms", "300"])
    assert code == 1
    assert "cannot reach" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("flags", [["--ramp", "100:50:10"], ["--rate", "-5"],
                                   ["--rate", "10", "--mix", "video=1"],
                                   ["--rate", "10", "--workload", "/nonexistent.jsonl"],
                                   ["--rate", "10", "--catalog", "catalog.csv"]])
def test_usage_mistakes_exit_2(fake_server, tmp_path, flags):
    assert main(["loadtest", "--target", fake_server.target, "--out", str(tmp_path), *flags]) == 2
    assert fake_server.behaviour.calls == []
