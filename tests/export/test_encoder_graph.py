"""The contract graph: inputs, output, pooling and normalisation as the source model does them."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.bundle import sha256_file
from export.encoder_graph import (
    export_graph, inspect_encoder, weights_digest, write_tokenizer,
)
from export.errors import InvalidInput
from export.fusion import fuse_transformer
from export.tokenization import TextTokenizer, pad_batch

TEXTS = ["white hanging heart t-light holder", "mug", "jumbo bag red retrospot " * 12]


def run_graph(path, tokenizer_dir, texts, seq_len=128):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = pad_batch(TextTokenizer(tokenizer_dir, 128).encode(texts), seq_len)
    names = [i.name for i in session.get_inputs()]
    return session.run(["sentence_embedding"], {n: feeds[n] for n in names})[0]


@pytest.fixture(scope="module")
def tiny_graph(tiny_encoder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("graph") / "model.onnx"
    source = inspect_encoder(tiny_encoder_dir)
    return source, out, export_graph(source, out)


def test_graph_honours_the_encoder_contract(tiny_graph, tiny_encoder_dir):
    from sentence_transformers import SentenceTransformer

    source, path, dim = tiny_graph
    assert (source.library, source.pooling, source.normalizes) == ("sentence_transformers", "mean", True)
    assert dim == 32
    graph = onnx.load(str(path)).graph
    assert {i.name for i in graph.input} >= {"input_ids", "attention_mask"}
    for tensor in graph.input:
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert all(d.dim_param for d in tensor.type.tensor_type.shape.dim)  # batch, seq dynamic
    [output] = graph.output
    assert output.name == "sentence_embedding"
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    shape = output.type.tensor_type.shape.dim
    assert shape[0].dim_param and shape[1].dim_value == 32
    assert "ReduceL2" not in {n.op_type for n in graph.node}
    got = run_graph(path, tiny_encoder_dir, TEXTS)
    want = SentenceTransformer(str(tiny_encoder_dir), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * want).sum(axis=1).min() > 0.99999


def test_ort_fuses_attention_layer_norms_and_gelu(tiny_graph, tiny_encoder_dir, tmp_path):
    source, path, _ = tiny_graph
    fused_path = tmp_path / "fused.onnx"
    fused = fuse_transformer(path, fused_path, model_type=source.model_type,
                             num_heads=source.num_heads, hidden_size=source.hidden_size)
    # 2 layers: one attention, two skip-layer-norms and one gelu each, one embedding LN.
    assert fused["Attention"] == 2
    assert fused["SkipLayerNormalization"] == 4
    assert fused.get("BiasGelu", 0) + fused.get("Gelu", 0) + fused.get("FastGelu", 0) == 2
    assert fused["EmbedLayerNormalization"] == 1
    op_types = {n.op_type for n in onnx.load(str(fused_path)).graph.node}
    assert "Softmax" not in op_types and "Erf" not in op_types  # really replaced
    np.testing.assert_allclose(run_graph(fused_path, tiny_encoder_dir, TEXTS),
                               run_graph(path, tiny_encoder_dir, TEXTS), atol=1e-5)
    # Padding to a longer bucket must not change the vectors (the mask reaches Attention).
    np.testing.assert_allclose(run_graph(fused_path, tiny_encoder_dir, TEXTS[:2], seq_len=96),
                               run_graph(fused_path, tiny_encoder_dir, TEXTS[:2], seq_len=16),
                               atol=1e-5)


def test_unknown_architectures_are_copied_unfused(tiny_graph, tmp_path):
    _, path, _ = tiny_graph
    assert fuse_transformer(path, tmp_path / "f.onnx", model_type="some-new-arch",
                            num_heads=4, hidden_size=32) == {}
    assert sha256_file(tmp_path / "f.onnx") == sha256_file(path)


def test_cls_pooling_without_normalize_gets_normalised_in_graph(tiny_encoder_dir, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(tiny_encoder_dir.parent / "hf"), max_seq_length=64)
    pooling = models.Pooling(32, pooling_mode="cls")
    st_dir = tmp_path / "cls-model"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(st_dir))
    source = inspect_encoder(st_dir)
    assert (source.pooling, source.normalizes, source.default_max_length) == ("cls", False, 64)
    export_graph(source, tmp_path / "model.onnx")
    got = run_graph(tmp_path / "model.onnx", st_dir, TEXTS)
    want = SentenceTransformer(str(st_dir), device="cpu").encode(TEXTS)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * want).sum(axis=1).min() > 0.99999


def test_plain_hugging_face_folder_is_mean_pooled(tiny_encoder_dir, tmp_path):
    from export.verification import reference_embeddings

    source = inspect_encoder(tiny_encoder_dir.parent / "hf")
    assert (source.library, source.pooling, source.normalizes) == ("transformers", "mean", True)
    export_graph(source, tmp_path / "model.onnx")
    got = run_graph(tmp_path / "model.onnx", source.path, TEXTS)
    want = reference_embeddings(source, TEXTS, 128)
    assert (got * want).sum(axis=1).min() > 0.99999


def test_decoders_and_broken_folders_are_not_encoders(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = tmp_path / "gpt"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(gpt)
    with pytest.raises(InvalidInput, match="not a text encoder"):
        inspect_encoder(gpt)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="no usable model config"):
        inspect_encoder(broken)


def test_tokenizer_truncates_at_the_export_max_length(tiny_encoder_dir, tmp_path):
    from tokenizers import Tokenizer

    write_tokenizer(inspect_encoder(tiny_encoder_dir), tmp_path / "tok", max_length=48)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert tokenizer.truncation["max_length"] == 48
    encodings = tokenizer.encode_batch(["mug", "red " * 200])
    assert [len(e.ids) for e in encodings] == [48, 48]  # padded to the longest, not a fixed size
    assert sum(encodings[0].attention_mask) == 3
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 48


def test_weights_digest_of_a_single_file_is_its_sha256(tiny_encoder_dir):
    digest, files = weights_digest(tiny_encoder_dir)
    assert list(files) == ["model.safetensors"]
    assert digest == sha256_file(tiny_encoder_dir / "model.safetensors")
