"""train/ranker/boosting.py: the trees' capacity follows the data, up to the serving-cost caps."""

from train.ranker.boosting import MAX_LEAVES, data_derived_params


def test_leaves_follow_the_positives_up_to_the_cap():
    def leaves(positives: int, **cap) -> int:
        return data_derived_params(rows=100_000, positives=positives, seed=0, threads=1, **cap)["num_leaves"]

    assert leaves(50) == 7  # few positives: small trees
    assert leaves(500) == 20  # one leaf per 25 positives
    assert leaves(10_000) == MAX_LEAVES == 31  # LightGBM's default, the serving-cost cap
    assert leaves(10_000, max_leaves=63) == 63
    assert leaves(50, max_leaves=4) == 4  # a cap below the floor wins


def test_a_leaf_speaks_for_many_rows():
    params = data_derived_params(rows=1_000_000, positives=10_000, seed=0, threads=1)
    assert params["min_data_in_leaf"] == 5_000
    assert data_derived_params(rows=1_000, positives=100, seed=0, threads=1)["min_data_in_leaf"] == 20
