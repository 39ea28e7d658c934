"""The cold-items protocol on a toy case: cold items leave training and histories alike."""

from __future__ import annotations

import numpy as np

from tests.train.test_eval_protocol import _events
from train.evaluation.protocol import cold_item_split


def test_cold_items_never_train_and_never_appear_in_histories():
    events = _events({
        "a": [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)],
        "b": [(1, 1.0), (2, 2.0), (4, 3.0)],
        "c": [(3, 1.0), (0, 2.0)],
        "d": [(4, 1.0), (5, 2.0), (1, 3.0)],
    })
    cases = cold_item_split(events, share=0.5, seed=3)  # 3 of the 6 bought items
    cold = np.setdiff1d(np.arange(6), events.labels[cases.training_events])
    assert len(cold) == 3 or len(cold) == 4  # 3 made cold (+ an item bought only last)
    for history in cases.histories:
        assert not np.isin(history, cold).any()
    last = events.starts[1:] - 1
    assert not cases.training_events[last].any()  # every last event is held out
    made_cold = np.isin(events.labels, cold) & ~np.isin(np.arange(len(events.labels)), last)
    assert not cases.training_events[made_cold].any()
    # A target is cold exactly when no training event has it.
    seen = np.isin(cases.targets, events.labels[cases.training_events])
    assert (cases.groups["cold_items"] == ~seen).all()
    again = cold_item_split(events, share=0.5, seed=3)
    assert again.targets.tolist() == cases.targets.tolist()  # seeded, reproducible
