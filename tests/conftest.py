"""Shared fixtures: a tiny randomly initialised sentence encoder, exported once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tiny_sentence_encoder(out_dir: Path, *, hidden: int = 32, layers: int = 2) -> Path:
    """A random BERT (MiniLM's vocabulary and tokenizer) saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from export.onnx_export import default_model_path

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(default_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=hidden * 2, max_position_embeddings=128,
    )
    hf_dir = out_dir / "hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=128)
    pooling = models.Pooling(hidden, pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    st_dir = out_dir / "sentence-encoder"
    model.save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """Folder of a tiny random sentence-transformers encoder (hidden 32, 2 layers)."""
    return make_tiny_sentence_encoder(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_onnx_dir(tiny_encoder_dir, tmp_path_factory) -> Path:
    """The tiny encoder exported to fp32 ONNX: model.onnx + tokenizer/."""
    from export.onnx_export import export_fp32

    out = tmp_path_factory.mktemp("tiny-onnx")
    export_fp32(tiny_encoder_dir, out)
    return out
