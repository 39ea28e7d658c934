"""The history adapter learns where histories lead in the content space, and carries that to
items nobody has bought (train/history_adapter.py)."""

from __future__ import annotations

import numpy as np

from server.retrieval.interests import Interest, mapped
from train.data import EventSequences
from train.history_adapter import AdapterFitConfig, fit_history_adapter

GROUPS, PER_GROUP, DIM = 4, 12, 32


def _catalog(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Items in GROUPS content clusters: [n, DIM] unit vectors and each item's group."""
    centres = rng.normal(size=(GROUPS, DIM))
    group = np.repeat(np.arange(GROUPS), PER_GROUP)
    vectors = centres[group] + 0.6 * rng.normal(size=(len(group), DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), group


def _sequences(rng: np.random.Generator, group: np.ndarray, bought: np.ndarray,
               users: int = 400, length: int = 8) -> EventSequences:
    """Customers who buy an item of group g next buy one of group g + 1 (only `bought` items)."""
    by_group = [np.flatnonzero((group == g) & bought) for g in range(GROUPS)]
    labels, stamps, starts = [], [], [0]
    for _ in range(users):
        g = int(rng.integers(GROUPS))
        for step in range(length):
            labels.append(int(rng.choice(by_group[(g + step) % GROUPS])))
            stamps.append(float(step))
        starts.append(len(labels))
    return EventSequences(user_ids=[f"u{u}" for u in range(users)],
                          labels=np.asarray(labels, np.int64),
                          timestamps=np.asarray(stamps, np.float64),
                          starts=np.asarray(starts, np.int64))


def _next_group_share(vectors, group, cold, matrix, k: int = 3) -> float:
    """Share of each item's top-k cold items (by its mapped vector) in the group bought next."""
    hits = []
    for item in range(len(vectors)):
        [interest] = mapped([Interest(vectors[item], 1.0, "history")], matrix)
        scores = np.where(cold, vectors @ interest.vector, -np.inf)
        top = np.argsort(-scores)[:k]
        hits.extend(group[top] == (group[item] + 1) % GROUPS)
    return float(np.mean(hits))


def test_adapter_moves_histories_toward_the_next_group_and_reaches_cold_items():
    rng = np.random.default_rng(0)
    vectors, group = _catalog(rng)
    cold = np.zeros(len(group), bool)
    cold[[g * PER_GROUP for g in range(GROUPS)] + [g * PER_GROUP + 1 for g in range(GROUPS)]] = True
    events = _sequences(rng, group, ~cold)
    fitted = fit_history_adapter(vectors, events, config=AdapterFitConfig(batch=256, seed=0))
    assert fitted.info["kept"] and fitted.matrix is not None
    assert fitted.matrix.shape == (DIM, DIM) and fitted.matrix.dtype == np.float32
    assert fitted.info["held_out_loss"] < fitted.info["identity_held_out_loss"]
    # cold items were in no event: they are reached through their content alone
    stock = _next_group_share(vectors, group, cold, None)
    adapted = _next_group_share(vectors, group, cold, fitted.matrix)
    # chance is 0.25 (2 of the 8 cold items are in the next group); the stock vectors prefer
    # the item's own group
    assert stock < 0.25 and adapted > 0.5 and adapted > 3 * stock, (stock, adapted)


def test_adapter_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    vectors, group = _catalog(rng)
    events = _sequences(rng, group, np.ones(len(group), bool), users=200)
    config = AdapterFitConfig(batch=256, max_epochs=3, seed=3)
    first = fit_history_adapter(vectors, events, config=config)
    second = fit_history_adapter(vectors, events, config=config)
    np.testing.assert_array_equal(first.matrix, second.matrix)


def test_too_few_steps_keep_the_stock_interests():
    rng = np.random.default_rng(2)
    vectors, group = _catalog(rng)
    events = _sequences(rng, group, np.ones(len(group), bool), users=3)
    fitted = fit_history_adapter(vectors, events)
    assert fitted.matrix is None and not fitted.info["kept"]
    interests = [Interest(vectors[0], 1.0, "history")]
    assert mapped(interests, fitted.matrix) is interests


def test_only_steps_before_the_end_are_learned_from():
    rng = np.random.default_rng(3)
    vectors, group = _catalog(rng)
    events = _sequences(rng, group, np.ones(len(group), bool), users=50, length=8)
    from train.history_adapter import history_examples

    queries, targets = history_examples(vectors, events, end=4.0, config=AdapterFitConfig())
    assert len(targets) == 50 * 3  # steps 1..3 of each user; steps from t = 4 are held back
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
