"""Retrieval over a real hnswlib index of clustered random vectors."""

from __future__ import annotations

import hnswlib
import numpy as np
import pytest

from server.retrieval.filters import AttributePostings, ItemFilter, allowed_mask
from server.retrieval.interests import Interest, history_interests, recency_weights
from server.retrieval.retriever import RetrievalConfig, Retriever
from server.retrieval.vector_index import VectorIndex

DIM, N = 16, 3000


def clustered(n: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, DIM))
    assignment = rng.integers(0, clusters, n)
    vectors = centers[assignment] + 0.3 * rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), assignment


@pytest.fixture(scope="module")
def world():
    vectors, cluster = clustered(N, 8)
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=N + 100, M=16, ef_construction=100)
    index.add_items(vectors, np.arange(N))
    attrs = [{"colour": ["red", "blue", "green"][i % 3], "rare": "yes" if i % 500 == 0 else "no"}
             for i in range(N)]
    return vectors, cluster, VectorIndex(index, default_ef=64), AttributePostings(attrs), attrs


def test_knn_matches_exact_search(world):
    vectors, _, index, _, _ = world
    queries = vectors[:50]
    labels, _ = index.knn(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, exact)])
    assert recall >= 0.95


def test_filters_always_return_k_matching_items(world):
    vectors, _, index, postings, attrs = world
    retriever = Retriever(index, postings, RetrievalConfig(candidates=20))
    interest = [Interest(vectors[0], 1.0, "query")]
    # selective filter -> exact path; broad filter -> HNSW over-fetch path
    for item_filter in (ItemFilter(attribute_equals={"rare": "yes"}),
                        ItemFilter(attribute_in={"colour": ("red", "blue")}),
                        ItemFilter(attribute_equals={"colour": "green"}, exclude_labels=(2, 5, 8))):
        got = retriever.retrieve(interest, 5, item_filter).labels
        mask = allowed_mask(item_filter, postings, index.present)
        assert len(got) >= min(5, mask.sum())
        assert all(mask[label] for label in got)
    assert set(retriever.retrieve(interest, 5, ItemFilter(attribute_equals={"rare": "yes"})).labels) \
        == set(range(0, N, 500))


def test_filter_matching_nothing_returns_nothing(world):
    vectors, _, index, postings, _ = world
    retriever = Retriever(index, postings, RetrievalConfig())
    got = retriever.retrieve([Interest(vectors[0], 1.0, "query")], 5,
                             ItemFilter(attribute_equals={"colour": "purple"}))
    assert len(got.labels) == 0


def test_history_with_two_tastes_yields_two_interests_and_both_are_retrieved(world):
    vectors, cluster, index, postings, _ = world
    a = np.flatnonzero(cluster == 1)[:3]
    b = np.flatnonzero(cluster == 5)[:3]
    history = np.concatenate([a, b])
    interests = history_interests(vectors[history], max_interests=4)
    assert len(interests) == 2
    assert abs(sum(i.weight for i in interests) - 1.0) < 1e-6
    got = Retriever(index, postings, RetrievalConfig(candidates=40)).retrieve(interests, 10, ItemFilter())
    clusters_found = set(cluster[got.labels].tolist())
    assert {1, 5} <= clusters_found


def test_recency_weights_halve_every_half_life():
    w = recency_weights(5, half_life_events=2)
    assert w[-1] == 1.0 and abs(w[-3] - 0.5) < 1e-6


def test_deleted_items_are_never_returned_and_added_items_are(world):
    vectors, _, _, postings, _ = world
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=200, M=16, ef_construction=100)
    index.add_items(vectors[:100], np.arange(100))
    served = VectorIndex(index, default_ef=50)
    served.delete(np.array([0, 1, 2]))
    labels, _ = served.knn(vectors[:3], 10)
    assert not set(labels.ravel().tolist()) & {0, 1, 2}
    new = vectors[500:600]
    served.add(new, np.arange(100, 200))
    labels, sims = served.knn(new[:5], 1)
    assert labels.ravel().tolist() == list(range(100, 105))
    assert served.size == 197
