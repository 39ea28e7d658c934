import numpy as np
import pytest

from export.errors import BundleError, InvalidInput
from export.hnsw_index import (EF_LADDER, build_index, choose_ef, exact_kth_scores, load_index,
                               measure_recall, recall_at_k, save_index, stored_dim)


def clustered(n, dim=32, clusters=20, seed=0):
    """Unit vectors around a few centres: near neighbours are close, as in real catalogs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force_recall(index, vectors, queries, k=10, own=None):
    """recall@k by set overlap with exact search; own[i]: query i's own label, not counted."""
    scores = queries @ vectors.T
    if own is not None:
        scores[np.arange(len(queries)), own] = -np.inf
    truth = np.argsort(-scores, axis=1)[:, :k]
    found, _ = index.knn_query(queries, k=k + (own is not None))
    if own is not None:
        found = [[label for label in row if label != o][:k] for row, o in zip(found, own)]
    return np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])


@pytest.fixture(scope="module")
def data():
    vectors = clustered(3300)  # the last 300 are queries the index never saw
    # Hard settings (tiny M and ef_construction) so that ef really matters.
    index = build_index(vectors[:3000], np.arange(3000), m=6, ef_construction=16, threads=1)
    return vectors[:3000], index, vectors[3000:]


def test_choose_ef_picks_the_smallest_ef_reaching_the_target(data):
    vectors, index, _ = data
    ef, recall = choose_ef(index, vectors, target_recall=0.98, sample=1000)
    assert recall >= 0.98 and ef > EF_LADDER[0]  # the smallest ef would not have done
    assert index.ef == ef
    picked = np.sort(np.random.default_rng(0).choice(3000, 1000, replace=False))
    queries = vectors[picked]
    kth = exact_kth_scores(vectors, queries, 10, exclude=picked)
    previous = EF_LADDER[EF_LADDER.index(ef) - 1]
    assert measure_recall(index, queries, kth, 10, previous, exclude=picked) < 0.98
    index.set_ef(ef)
    assert brute_force_recall(index, vectors, queries, own=picked) >= 0.98  # independent check


def test_unknown_queries_also_reach_good_recall(data):
    vectors, index, unseen = data
    ef, _ = choose_ef(index, vectors)
    index.set_ef(ef)
    assert brute_force_recall(index, vectors, unseen) >= 0.95


def test_labels_save_and_load_round_trip(tmp_path):
    vectors = clustered(500)
    labels = np.arange(500) * 7 + 3  # labels need not be positions
    index = build_index(vectors, labels, m=16, ef_construction=100)
    index.set_ef(50)
    found, _ = index.knn_query(vectors[:20], k=5)
    assert (found[:, 0] == labels[:20]).all()
    save_index(index, tmp_path / "index.hnsw")
    assert stored_dim(tmp_path / "index.hnsw") == 32
    loaded = load_index(tmp_path / "index.hnsw", dim=32, ef=50, max_elements=1000)
    assert loaded.ef == 50  # hnswlib does not persist ef; load_index must set it
    assert loaded.get_max_elements() == 1000 and loaded.get_current_count() == 500
    assert (loaded.knn_query(vectors[:20], k=5)[0] == found).all()
    np.testing.assert_allclose(loaded.get_items([labels[3]])[0], vectors[3], atol=1e-6)


def test_load_refuses_wrong_dim_and_garbage(tmp_path):
    index = build_index(clustered(50, dim=16), np.arange(50))
    save_index(index, tmp_path / "index.hnsw")
    with pytest.raises(BundleError, match="16-dim"):
        load_index(tmp_path / "index.hnsw", dim=32, ef=10)
    (tmp_path / "bad.hnsw").write_bytes(b"\x00" * 10)
    with pytest.raises(BundleError):
        load_index(tmp_path / "bad.hnsw", dim=16, ef=10)
    with pytest.raises(BundleError, match="no HNSW index"):
        load_index(tmp_path / "missing.hnsw", dim=16, ef=10)


def test_recall_counts_ties_with_the_kth_item_as_hits():
    kth = np.array([0.9], dtype=np.float32)
    # returned: scores 1.0, 0.95, 0.9 (tied with the k-th: a duplicate item), 0.8
    distances = 1.0 - np.array([[1.0, 0.95, 0.9, 0.8]], dtype=np.float32)
    assert recall_at_k(distances, kth) == pytest.approx(0.75)


def test_tiny_and_invalid_inputs():
    vectors = clustered(5)
    index = build_index(vectors, np.arange(5))
    ef, recall = choose_ef(index, vectors, k=10)  # fewer items than k
    assert recall == 1.0 and ef >= 4
    with pytest.raises(InvalidInput):
        build_index(vectors, np.arange(4))
    with pytest.raises(InvalidInput):
        choose_ef(index, vectors[:0])


def test_the_default_build_gives_the_same_graph_from_the_same_vectors(tmp_path):
    """One build thread (BuildConfig's default): a rebuilt bundle has the same index file, so
    the same candidates and the same fitted ranker."""
    from export.build import BuildConfig

    vectors = clustered(2000, seed=3)
    paths = []
    for name in ("a", "b"):
        index = build_index(vectors, np.arange(2000), m=8, ef_construction=40,
                            threads=BuildConfig().threads)
        save_index(index, tmp_path / name)
        paths.append(tmp_path / name)
    assert paths[0].read_bytes() == paths[1].read_bytes()
