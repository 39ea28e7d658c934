"""The shipped all-MiniLM-L6-v2 exported in fp32 and int8: the gate and the ONNX contract."""

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from clients.cli import main
from export.bundle import read_manifest

pytestmark = pytest.mark.real_model

# Lengths from one token to past the tokenizer file's own 128-token truncation (the export
# pins it to the model's 256), so a user with the tokenizer alone gets the model's vectors.
TEXTS = ["mug", "WHITE HANGING HEART T-LIGHT HOLDER", "gift for mum",
         "Hand-painted enamel mug with a red retrospot pattern. " * 14]


@pytest.fixture(scope="module")
def sentence_model():
    from sentence_transformers import SentenceTransformer

    from export.onnx_export import default_model_path

    return SentenceTransformer(str(default_model_path()), device="cpu")


@pytest.fixture(scope="module", params=["fp32", "int8"])
def exported(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm") / request.param
    assert main(["export", "--model", "default", "--out", str(out),
                 "--precision", request.param]) == 0
    return request.param, out


def test_gate_passes_and_is_recorded(exported):
    precision, bundle = exported
    manifest = read_manifest(bundle)
    verification = manifest["verification"]
    assert manifest["precision"] == precision and verification["passed"]
    assert verification["probes"] >= 1000
    assert manifest["model"]["dim"] == 384 and manifest["model"]["max_length"] == 256
    assert manifest["fusion"] == {"EmbedLayerNormalization": 1, "Attention": 6,
                                  "SkipLayerNormalization": 12, "BiasGelu": 6}
    if precision == "fp32":
        assert verification["mean_cosine"] >= 0.99999
        assert verification["overlap_at_10"] >= 0.99
    else:
        assert verification["mean_cosine"] >= 0.99
        assert verification["p1_cosine"] >= 0.97
        assert verification["overlap_at_10"] >= 0.85
        assert manifest["quantized_ops"] == {"MatMulInteger": 18, "QAttention": 6}


def test_onnx_contract_with_a_plain_session(exported, sentence_model):
    precision, bundle = exported
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert {"input_ids", "attention_mask"} <= set(inputs) <= {"input_ids", "attention_mask",
                                                              "token_type_ids"}
    for tensor in inputs.values():
        assert tensor.type == "tensor(int64)"
        assert all(isinstance(d, str) for d in tensor.shape)  # dynamic batch and sequence
    [output] = session.get_outputs()
    assert output.name == "sentence_embedding" and output.type == "tensor(float)"
    assert isinstance(output.shape[0], str) and output.shape[1] == 384

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer" / "tokenizer.json"))
    encodings = tokenizer.encode_batch(TEXTS)
    assert 128 < len(encodings[-1].ids) <= 256
    feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
             "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
    [got] = session.run(None, {name: feeds[name] for name in inputs})
    want = sentence_model.encode(TEXTS)
    assert got.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cosine = (got * want).sum(axis=1)
    assert cosine.min() > (0.99999 if precision == "fp32" else 0.97), cosine
    # Batch of one, unpadded: the same vector as inside the padded batch. int8 only nearly:
    # dynamic quantization scales activations per tensor, so batch-mates shift it slightly.
    length = sum(encodings[0].attention_mask)
    [alone] = session.run(None, {name: feeds[name][:1, :length] for name in inputs})
    if precision == "fp32":
        np.testing.assert_allclose(alone[0], got[0], atol=1e-5)
    else:
        assert float(alone[0] @ got[0]) > 0.99
