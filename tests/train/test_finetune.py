"""`recserve train` end to end on the synthetic shop with the tiny random encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clients.cli import main
from tests.train import synthetic

FAST = ["--epochs", "3", "--batch-size", "16", "--pairs-per-epoch", "256", "--lr", "1e-3",
        "--validation-fraction", "0.2", "--threads", "1"]


def _train(shop, base: Path, out: Path, *extra: str) -> int:
    catalog, interactions = shop
    return main(["train", "--catalog", str(catalog), "--interactions", str(interactions),
                 "--base", str(base), "--out", str(out), *FAST, *extra])


def _weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return synthetic.write_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="module")
def trained(shop, tiny_encoder_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "model"
    assert _train(shop, tiny_encoder_dir, out) == 0
    return out


def test_training_improves_validation_loss_and_recall(trained):
    record = json.loads((trained / "training.json").read_text())
    before, *after = record["epochs"]
    assert before["epoch"] == 0 and before["train_loss"] is None
    assert [e["epoch"] for e in after] == [1, 2, 3] and all(e["steps"] > 0 for e in after)
    assert after[-1]["validation"]["loss"] < before["validation"]["loss"]
    assert after[-1]["validation"]["recall_text"] > before["validation"]["recall_text"]
    assert record["split"]["validation_pairs"] == before["validation"]["pairs"] > 20
    assert record["item_text"]["version"] >= 1  # the template the item side was built with


def test_output_is_an_ordinary_sentence_transformers_folder(trained, tiny_encoder_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(trained), device="cpu")
    base = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    assert model.max_seq_length == base.max_seq_length  # the training limit is not kept
    vectors = model.encode(["RED CANDLE HOLDER", "BLUE COFFEE MUG"], normalize_embeddings=False)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # Normalize kept
    assert not np.allclose(vectors, base.encode(["RED CANDLE HOLDER", "BLUE COFFEE MUG"]))
    assert (trained / "tokenizer.json").is_file() and (trained / "modules.json").is_file()


def test_output_exports_to_onnx_with_the_same_vectors(trained, tmp_path):
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from export.onnx_export import export_fp32

    onnx_path = export_fp32(trained, tmp_path)
    texts = ["GREEN WALL CLOCK | family: WALL CLOCK", "PINK TABLE LAMP || BLACK PHOTO FRAME"]
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = tokenizer(texts, padding=True, return_tensors="np")
    feeds = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}
    (onnx_vectors,) = session.run(["sentence_embedding"], feeds)
    reference = SentenceTransformer(str(trained), device="cpu").encode(texts)
    assert np.allclose(onnx_vectors, reference, atol=1e-5)


def test_future_events_cannot_change_the_trained_weights(shop, tiny_encoder_dir, tmp_path):
    """Same split time, the validation period rewritten: bit-identical weights."""
    catalog, interactions = shop
    split = "2011-11-01T00:00:00Z"
    rng = np.random.default_rng(3)
    ids = [it["item_id"] for it in synthetic.items()]
    rows = [dict(r, item_id=str(rng.choice(ids))) if r["timestamp"] >= split else r
            for r in synthetic.interactions()]
    rows += [dict(r, user_id="29999") for r in rows if r["timestamp"] >= split]
    altered = synthetic.write_csv_gz(tmp_path / "altered.csv.gz", rows)
    outs = []
    for name, events in (("original", interactions), ("altered", altered)):
        out = tmp_path / name
        assert main(["train", "--catalog", str(catalog), "--interactions", str(events),
                     "--base", str(tiny_encoder_dir), "--out", str(out), *FAST, "--epochs", "2",
                     "--split-time", split, "--hard-negatives"]) == 0
        outs.append(out)
    first, second = (_weights(o) for o in outs)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    # ...while the validation figures did see the rewritten future
    records = [json.loads((o / "training.json").read_text()) for o in outs]
    assert records[0]["epochs"][-1]["validation"] != records[1]["epochs"][-1]["validation"]


def test_lora_is_merged_into_plain_weights(shop, tiny_encoder_dir, tmp_path):
    out = tmp_path / "lora"
    assert _train(shop, tiny_encoder_dir, out, "--lora", "--lora-rank", "4") == 0
    assert not (out / "adapter_config.json").exists()
    base, tuned = _weights(tiny_encoder_dir), _weights(out)
    assert tuned.keys() == base.keys()  # no lora_A / base_layer names left
    changed = {k for k in base if not np.array_equal(base[k], tuned[k])}
    # peft's default LoRA targets for BERT are the query and value projections
    assert changed and all(".query." in k or ".value." in k for k in changed)
    record = json.loads((out / "training.json").read_text())
    assert record["trainable_parameters"] < record["total_parameters"] / 5
    assert record["epochs"][-1]["validation"]["loss"] < record["epochs"][0]["validation"]["loss"]


def test_refuses_to_overwrite_without_flag(shop, tiny_encoder_dir, trained, capsys):
    assert _train(shop, tiny_encoder_dir, trained) == 2
    assert "--overwrite" in capsys.readouterr().err
