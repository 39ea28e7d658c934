"""Ranker examples from time slices: which events become examples and what history each sees."""

from __future__ import annotations

import numpy as np

from train.data import EventSequences
from train.ranker.examples import window_examples

# one user: item 0 at t=1, then a basket of 1, 2, 3 at t=5, then 4 at t=9
EVENTS = EventSequences(["u"], np.asarray([0, 5]), np.asarray([0, 1, 2, 3, 4]),
                        np.asarray([1.0, 5.0, 5.0, 5.0, 9.0]))


def test_an_example_sees_everything_before_it_including_its_basket_so_far():
    got = {e.target: e.history.tolist() for e in window_examples(EVENTS, 5.0, 10.0, 10, 10, seed=0)}
    assert got == {1: [0], 2: [0, 1], 3: [0, 1, 2], 4: [0, 1, 2, 3]}
    assert {e.target for e in window_examples(EVENTS, 5.0, 6.0, 10, 10, seed=0)} == {1, 2, 3}


def test_session_start_examples_leave_out_the_events_of_their_moment():
    got = {e.target: e.history.tolist()
           for e in window_examples(EVENTS, 5.0, 10.0, 10, 10, seed=0, session_start_share=1.0)}
    assert got == {1: [0], 2: [0], 3: [0], 4: [0, 1, 2, 3]}
