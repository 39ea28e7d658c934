import numpy as np
import pytest

from export.verification import (
    GateFailed, VerificationGate, agreement_table, gate_failures, measure_agreement,
    overlap_at_k, top_k_neighbours,
)


def unit_rows(n, dim, seed):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_vectors_agree_perfectly():
    ref = unit_rows(200, 16, 0)
    agreement = measure_agreement(ref, ref.copy(), ["product"] * 150 + ["query"] * 50)
    assert agreement.probes == 200
    assert agreement.mean_cosine == pytest.approx(1.0, abs=1e-6)
    assert agreement.max_abs_diff == 0.0
    assert agreement.overlap_at_10 == 1.0
    assert agreement.by_kind["query"]["probes"] == 50


def test_noise_lowers_cosine_and_overlap_and_p1_sees_the_worst_rows():
    ref = unit_rows(300, 16, 1)
    noisy = ref.copy()
    noisy[:6] += 0.8 * unit_rows(6, 16, 2)  # 2% of rows badly off, the rest exact
    agreement = measure_agreement(ref, noisy)
    assert agreement.mean_cosine > 0.98
    assert agreement.p1_cosine < 0.9  # the 1st percentile catches the bad 2%
    assert agreement.min_cosine <= agreement.p1_cosine
    assert agreement.max_abs_diff > 0.1
    assert 0.9 < agreement.overlap_at_10 < 1.0


def test_top_k_excludes_self_and_orders_by_similarity():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
    neighbours = top_k_neighbours(vectors, 2, block=3)  # block < n: the blocked path
    assert neighbours[0].tolist() == [1, 3]
    assert all(i not in row for i, row in enumerate(neighbours.tolist()))
    moved = vectors.copy()
    moved[1] = [0.0, 1.0]  # row 0's nearest neighbour is now row 3, not row 1
    assert overlap_at_k(vectors, moved, k=1) < 1.0
    assert overlap_at_k(vectors, vectors[:, ::-1].copy(), k=2) == 1.0  # an isometry changes nothing


def test_gate_defaults_match_the_issue_and_failures_are_readable():
    gate = VerificationGate()
    assert gate.minimums("int8") == {"mean_cosine": 0.99, "p1_cosine": 0.97, "overlap_at_10": 0.85}
    assert gate.minimums("fp32") == {"mean_cosine": 0.99999}
    assert gate.minimums("fp16") == {"mean_cosine": 0.9995}
    ref = unit_rows(100, 8, 3)
    agreement = measure_agreement(ref, unit_rows(100, 8, 4))  # unrelated vectors
    failures = gate_failures(agreement, gate.minimums("int8"))
    assert len(failures) == 3 and failures[0].startswith("mean cosine")
    assert gate_failures(measure_agreement(ref, ref), gate.minimums("int8")) == []
    assert GateFailed("x").exit_code == 3


def test_gate_reads_environment(monkeypatch):
    from export.settings import load_settings

    monkeypatch.setenv("RECSERVE_VERIFICATION_INT8_MIN_OVERLAP_AT_10", "0.9")
    assert load_settings(VerificationGate).minimums("int8")["overlap_at_10"] == 0.9


def test_table_shows_every_metric_and_verdict():
    from rich.console import Console

    ref = unit_rows(50, 8, 5)
    agreement = measure_agreement(ref, ref, ["query"] * 50)
    console = Console(width=120, record=True)
    console.print(agreement_table(agreement, {"mean_cosine": 0.99}, "verification"))
    text = console.export_text()
    for label in ("mean cosine", "p1 cosine", "max abs diff", "overlap at 10", "query (50)"):
        assert label in text
    assert "pass" in text and ">= 0.99" in text
