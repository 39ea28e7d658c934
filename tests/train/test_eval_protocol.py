"""Evaluation metrics and protocols on a toy case computed by hand."""

from __future__ import annotations

import math

import numpy as np

from train.data import EventSequences
from train.evaluation.metrics import summarise_groups, target_positions
from train.evaluation.protocol import leave_last_out, time_split


def _events(sequences: dict[str, list[tuple[int, float]]]) -> EventSequences:
    """EventSequences from {user: [(label, time), ...]} already in order."""
    users = sorted(sequences)
    labels = [label for u in users for label, _ in sequences[u]]
    stamps = [t for u in users for _, t in sequences[u]]
    starts = np.cumsum([0] + [len(sequences[u]) for u in users])
    return EventSequences(users, starts.astype(np.int64), np.asarray(labels, np.int64),
                          np.asarray(stamps, np.float64))


TOY = _events({
    "a": [(0, 1.0), (1, 2.0), (2, 5.0), (3, 6.0)],
    "b": [(1, 1.0), (4, 7.0)],
    "c": [(2, 3.0)],
    "d": [(5, 6.0), (0, 8.0)],
})


def test_metrics_by_hand():
    ranked = [[3, 1, 2], [9, 8, 7], [4, 5, 6], [0]]
    positions = target_positions(ranked, [2, 7, 4, 5])
    assert positions.tolist() == [2, 2, 0, -1]
    groups = {"first_two": np.array([True, True, False, False])}
    summary = summarise_groups(positions, groups, recall_ks=(1, 3), ndcg_ks=(3,))
    assert summary["all"]["cases"] == 4
    assert summary["all"]["recall@1"] == 0.25 and summary["all"]["recall@3"] == 0.75
    assert math.isclose(summary["all"]["ndcg@3"], (0.5 + 0.5 + 1.0 + 0.0) / 4)  # 1/log2(4) = .5
    assert summary["first_two"] == {"cases": 2, "recall@1": 0.0, "recall@3": 1.0, "ndcg@3": 0.5}


def test_leave_last_out_by_hand():
    cases = leave_last_out(TOY)
    assert [TOY.user_ids[u] for u in cases.users] == ["a", "b", "d"]  # c has one event
    assert [h.tolist() for h in cases.histories] == [[0, 1, 2], [1], [5]]
    assert cases.targets.tolist() == [3, 4, 0]
    # training = everything but the three held-out last events
    assert cases.training_events.tolist() == [True, True, True, False, True, False, True,
                                              True, False]
    assert cases.groups["warm_items"].tolist() == [False, False, True]  # 3, 4 only held out
    assert cases.groups["cold_items"].tolist() == [True, True, False]
    assert cases.groups["new_users"].tolist() == [False, True, True]


def test_time_split_by_hand():
    cases = time_split(TOY, cutoff=5.0)
    # a: history 0, 1 (before t=5), target 2 (at t=5); b: history 1, target 4;
    # c: nothing after; d: nothing before
    assert [TOY.user_ids[u] for u in cases.users] == ["a", "b"]
    assert [h.tolist() for h in cases.histories] == [[0, 1], [1]]
    assert cases.targets.tolist() == [2, 4]
    assert cases.training_events.tolist() == [True, True, False, False, True, False, True,
                                              False, False]
    assert cases.groups["warm_items"].tolist() == [True, False]  # 2 bought by c at t=3
    assert cases.groups["new_users"].tolist() == [True, True]
