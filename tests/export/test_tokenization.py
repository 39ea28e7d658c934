import numpy as np

from export.tokenization import bucket_length, pad_batch, plan_batches


def test_bucket_length_picks_smallest_fitting_bucket():
    assert bucket_length(1) == 8
    assert bucket_length(8) == 8
    assert bucket_length(9) == 16
    assert bucket_length(10_000) == 512


def test_plan_batches_respects_budget_size_and_buckets():
    lengths = [3, 40, 5, 7, 60, 12, 2, 9]
    batches = plan_batches(lengths, max_batch_tokens=16, max_batch_size=3)
    seen = sorted(p for positions, _ in batches for p in positions)
    assert seen == list(range(len(lengths)))
    for positions, seq_len in batches:
        assert len(positions) <= 3
        assert len(positions) * seq_len <= 16 or len(positions) == 1
        assert all(bucket_length(lengths[p]) == seq_len for p in positions)


def test_pad_batch_masks_padding():
    feeds = pad_batch([np.array([101, 7, 102]), np.array([101, 102])], 8)
    assert feeds["input_ids"].shape == (2, 8)
    assert feeds["attention_mask"].sum(axis=1).tolist() == [3, 2]
    assert feeds["input_ids"].dtype == np.int64
