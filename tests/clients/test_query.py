"""`recserve query` through the console script, against the fake server."""

from __future__ import annotations

import json

import pytest

from clients.cli import main


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns when not on a terminal


def test_text_query_prints_a_table_with_reasons(fake_server, capsys):
    code = main(["query", "--target", fake_server.target, "--text", "white metal lantern",
                 "--k", "3", "--explain"])
    out = capsys.readouterr().out
    assert code == 0
    assert "THING 0 FOR WHITE METAL LANTERN" in out and "ITEM-2" in out and "ITEM-3" not in out
    assert "often bought with ITEM-100" in out
    assert "co_occurrence" in out
    assert "encode 2.0" in out  # the server's per-stage timings are shown


def test_history_and_user_are_sent_as_given(fake_server, capsys):
    code = main(["query", "--target", fake_server.target, "--history", "85123A, 71053,84406B",
                 "--user", "17850", "--json"])
    assert code == 0
    sent = fake_server.behaviour.requests[0]
    assert list(sent.history) == ["85123A", "71053", "84406B"] and sent.user_id == "17850"
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["items"]) == 10 and shown["timings"]["rank_us"] == 400


def test_nothing_to_recommend_for_is_a_usage_error(fake_server, capsys):
    assert main(["query", "--target", fake_server.target]) == 2
    assert "give --text" in capsys.readouterr().err


def test_unreachable_server_is_one_line_and_exit_1(dead_target, capsys):
    code = main(["query", "--target", dead_target, "--text", "mug", "--deadline-ms", "300"])
    err = capsys.readouterr().err
    assert code == 1
    assert "UNAVAILABLE" in err and len(err.strip().splitlines()) == 1
