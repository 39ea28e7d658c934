"""Retrieval over both backends: hnsw (a real hnswlib index, in process) and milvus (a real Milvus
Lite server, started and stopped by the `milvus_uri` fixture), on clustered random vectors."""

from __future__ import annotations

import numpy as np
import pytest

from server.retrieval.backend import FilteringBackend, RetrievalBackend
from server.retrieval.filters import AttributePostings, ItemFilter, allowed_mask
from server.retrieval.interests import Interest, history_interests, recency_weights
from server.retrieval.milvus_index import MilvusIndex
from server.retrieval.retriever import RetrievalConfig, Retriever
from tests.server.retrieval_support import N, clustered, make_backend


@pytest.fixture(scope="module", params=["hnsw", "milvus"])
def world(request):
    vectors, cluster = clustered(N, 8)
    attrs = [{"colour": ["red", "blue", "green"][i % 3], "rare": "yes" if i % 500 == 0 else "no"}
             for i in range(N)]
    uri = request.getfixturevalue("milvus_uri") if request.param == "milvus" else None
    backend = make_backend(request.param, vectors, attrs, uri, "world")
    return vectors, cluster, backend, AttributePostings(attrs), attrs


def test_both_backends_satisfy_the_interface(world):
    backend = world[2]
    assert isinstance(backend, RetrievalBackend)
    assert isinstance(backend, FilteringBackend) == isinstance(backend, MilvusIndex)


def test_knn_matches_exact_search(world):
    vectors, _, index, _, _ = world
    queries = vectors[:50]
    labels, _ = index.knn(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, exact)])
    assert recall >= 0.95


def test_filters_always_return_k_matching_items(world):
    vectors, _, index, postings, _ = world
    retriever = Retriever(index, postings, RetrievalConfig(candidates=20))
    interest = [Interest(vectors[0], 1.0, "query")]
    for item_filter in (ItemFilter(attribute_equals={"rare": "yes"}),
                        ItemFilter(attribute_in={"colour": ("red", "blue")}),
                        ItemFilter(attribute_equals={"colour": "green"}, exclude_labels=(2, 5, 8))):
        got = retriever.retrieve(interest, 5, item_filter).labels
        mask = allowed_mask(item_filter, postings, index.present)
        assert len(got) >= min(5, mask.sum())
        assert all(mask[label] for label in got)
    assert set(retriever.retrieve(interest, 5, ItemFilter(attribute_equals={"rare": "yes"})).labels) \
        == set(range(0, N, 500))


def test_exclusions_are_honoured_even_for_the_nearest_items(world):
    vectors, _, index, postings, _ = world
    nearest = index.knn(vectors[:1], 10)[0][0]
    retriever = Retriever(index, postings, RetrievalConfig(candidates=10))
    got = retriever.retrieve([Interest(vectors[0], 1.0, "query")], 10,
                             ItemFilter(exclude_labels=tuple(int(x) for x in nearest))).labels
    assert len(got) >= 10 and not set(got.tolist()) & set(nearest.tolist())


def test_filter_matching_nothing_returns_nothing(world):
    vectors, _, index, postings, _ = world
    retriever = Retriever(index, postings, RetrievalConfig())
    for item_filter in (ItemFilter(attribute_equals={"colour": "purple"}),
                        ItemFilter(attribute_in={"colour": ()})):
        assert len(retriever.retrieve([Interest(vectors[0], 1.0, "query")], 5, item_filter).labels) == 0


def test_history_with_two_tastes_yields_two_interests_and_both_are_retrieved(world):
    vectors, cluster, index, postings, _ = world
    history = np.concatenate([np.flatnonzero(cluster == 1)[:3], np.flatnonzero(cluster == 5)[:3]])
    interests = history_interests(vectors[history], max_interests=4)
    got = Retriever(index, postings, RetrievalConfig(candidates=40)).retrieve(interests, 10, ItemFilter())
    assert {1, 5} <= set(cluster[got.labels].tolist())


@pytest.mark.parametrize("kind", ["hnsw", "milvus"])
def test_live_upserts_and_deletes_are_written_through(kind, request):
    vectors, _ = clustered(600, 8, seed=1)
    attrs = [{"colour": "red"} for _ in range(100)]
    uri = request.getfixturevalue("milvus_uri") if kind == "milvus" else None
    served = make_backend(kind, vectors[:100], attrs, uri, "live")
    served.delete(np.array([0, 1, 2]))
    labels, _ = served.knn(vectors[:3], 10)
    assert not set(labels.ravel().tolist()) & {0, 1, 2}
    attrs.extend({"colour": "blue"} for _ in range(100))  # the live catalog grows first
    new = vectors[500:600]
    served.add(new, np.arange(100, 200))
    labels, _ = served.knn(new[:5], 1)
    assert labels.ravel().tolist() == list(range(100, 105))
    assert served.size == 197
    postings = AttributePostings(attrs)
    got = Retriever(served, postings, RetrievalConfig(candidates=10)).retrieve(
        [Interest(new[0], 1.0, "query")], 5, ItemFilter(attribute_equals={"colour": "blue"})).labels
    assert len(got) == 10 and all(label >= 100 for label in got)  # the new items, by their attributes
    if kind == "milvus":  # and Milvus itself holds them (another replica would see the same)
        stored = served.client.get(served.collection, ids=[0, 150], output_fields=["attrs"])
        assert [row["id"] for row in stored] == [150] and stored[0]["attrs"] == {"colour": "blue"}


def test_recency_weights_halve_every_half_life():
    w = recency_weights(5, half_life_events=2)
    assert w[-1] == 1.0 and abs(w[-3] - 0.5) < 1e-6
