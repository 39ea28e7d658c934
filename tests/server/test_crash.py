"""A real server process under concurrent live writes, killed with SIGKILL and restarted.

The harness is tests/server/crash_harness.py (bench/crash.py runs it for >= 20 kills); here
a few rounds, with one serving process and with two workers. Each round checks
the recovered state offline and the restarted server over gRPC: every acknowledged write
present, in-doubt calls applied whole or not at all, no phantom or duplicate id, deleted ids
absent, user histories as written, recall@10 against exact search >= 0.95; then every
in-doubt call is retried with its request_id: a duplicate exactly when it had been applied.
"""

from __future__ import annotations

from tests.server.crash_harness import run_crash_test


def test_acknowledged_writes_survive_sigkill_at_random_moments(small_bundle, tmp_path):
    reports = run_crash_test(small_bundle, tmp_path, kills=3, writers=3, seed=5,
                             items_per_writer=30, min_run_s=0.3, max_run_s=1.0)
    assert [r.problems for r in reports] == [[], [], []]
    assert sum(r.acknowledged for r in reports) > 50  # the writers really wrote between kills
    assert sum(r.in_doubt for r in reports) > 0  # and some calls were cut off (then retried)
    assert all(r.recall_at_10 >= 0.95 for r in reports)
    assert reports[-1].last_applied >= sum(r.acknowledged for r in reports)


def test_two_workers_lose_no_acknowledged_write_when_one_or_all_are_killed(small_bundle, tmp_path):
    reports = run_crash_test(small_bundle, tmp_path, kills=2, writers=3, seed=11, workers=2,
                             items_per_writer=20, min_run_s=0.4, max_run_s=1.0)
    assert [r.problems for r in reports] == [[], []]
    assert sum(r.acknowledged for r in reports) > 30
    assert reports[-1].last_applied >= sum(r.acknowledged for r in reports)
