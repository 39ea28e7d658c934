"""`recserve export` end to end on the tiny encoder: bundle, gate, and every refusal."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from clients.cli import main
from export.bundle import read_manifest, sha256_file
from export.encoder_export import export_encoder, resolve_precision
from export.errors import InvalidInput

TEXTS = ["white hanging heart t-light holder", "mug", "regency cakestand 3 tier " * 9]


def export(model, out, *options):
    return main(["export", "--model", str(model), "--out", str(out), *options])


@pytest.fixture(scope="module")
def int8_bundle(tiny_encoder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "tiny-int8"
    assert export(tiny_encoder_dir, out, "--precision", "int8") == 0
    return out


def plain_ort_vectors(bundle, texts):
    """What any ONNX Runtime user gets from the bundle's model file and tokenizer alone."""
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer" / "tokenizer.json"))
    encodings = tokenizer.encode_batch(texts)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    [out] = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    return out


def test_int8_export_is_a_verified_checksummed_bundle(int8_bundle, tiny_encoder_dir):
    manifest = read_manifest(int8_bundle)  # verifies every file's sha256
    assert {"model.onnx", "model.onnx.data", "tokenizer/tokenizer.json"} <= set(manifest["files"])
    model = manifest["model"]
    assert (model["dim"], model["max_length"], model["pooling"]) == (32, 128, "mean")
    assert model["sha256"] == sha256_file(tiny_encoder_dir / "model.safetensors")
    assert model["source"] == str(tiny_encoder_dir)
    assert manifest["precision"] == "int8"
    assert manifest["quantization"]["weight_type"] in ("s8", "u8")
    assert manifest["quantization"]["per_channel"] is True
    assert manifest["fusion"]["Attention"] == 2
    verification = manifest["verification"]
    assert verification["passed"] and verification["probes"] >= 1000
    assert verification["gate"] == {"mean_cosine": 0.99, "p1_cosine": 0.97, "overlap_at_10": 0.85}
    assert verification["mean_cosine"] >= 0.99
    assert set(verification["by_kind"]) == {"product", "query", "description"}
    # The weights are beside the graph (ONNX external data), readable by whoever serves them.
    data = int8_bundle / "model.onnx.data"
    assert data.stat().st_size > 4 * (int8_bundle / "model.onnx").stat().st_size
    assert data.stat().st_mode & 0o444 == 0o444
    # Nothing but the bundle itself was left in the output's parent folder.
    assert [p.name for p in int8_bundle.parent.iterdir()] == [int8_bundle.name]


def test_any_ort_user_gets_the_vectors_from_model_and_tokenizer(int8_bundle, tiny_encoder_dir):
    from sentence_transformers import SentenceTransformer

    got = plain_ort_vectors(int8_bundle, TEXTS)
    want = SentenceTransformer(str(tiny_encoder_dir), device="cpu").encode(TEXTS)
    assert got.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert (got * want).sum(axis=1).min() > 0.99


def test_sessions_map_the_weights_file_instead_of_copying_it(int8_bundle):
    """Shared pages between the processes that serve a bundle (export/model_files.py)."""
    from export.runtime import EncoderRuntime

    runtime = EncoderRuntime(int8_bundle / "model.onnx")
    ones = np.ones((2, 8), np.int64)
    assert runtime.run({"input_ids": ones, "attention_mask": ones, "token_type_ids": 0 * ones}).shape == (2, 32)
    maps = Path("/proc/self/maps").read_text()
    assert str((int8_bundle / "model.onnx.data").resolve()) in maps
    del runtime


def test_fp32_export_at_a_shorter_max_length(tiny_encoder_dir, tmp_path, capsys):
    out = tmp_path / "fp32"
    assert export(tiny_encoder_dir, out, "--precision", "fp32", "--max-length", "48") == 0
    manifest = read_manifest(out)
    assert manifest["model"]["max_length"] == 48
    assert manifest["verification"]["mean_cosine"] >= 0.99999
    tokenizer = json.loads((out / "tokenizer" / "tokenizer.json").read_text())
    assert tokenizer["truncation"]["max_length"] == 48
    captured = capsys.readouterr()
    assert '"precision": "fp32"' in captured.out
    assert "mean cosine" in captured.err and "fusions: " in captured.err


def test_failing_gate_exits_3_and_leaves_nothing(tiny_encoder_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSERVE_VERIFICATION_FP32_MIN_MEAN_COSINE", "1.01")  # unreachable
    assert export(tiny_encoder_dir, tmp_path / "out", "--precision", "fp32") == 3
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "failed the verification gate" in last_line and "mean cosine" in last_line
    assert list(tmp_path.iterdir()) == []


def _gpt2(path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing-model", "does not exist"),
    ("not-an-encoder", "not a text encoder"),
    ("unknown-precision", "unknown precision 'int4'"),
    ("unwritable-output", "cannot write under"),
    ("non-empty-output", "already exists and is not empty"),
    ("max-length-too-long", "max length 100000 is outside"),
    ("bad-environment", "invalid export setting int8_target"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    case, message, tiny_encoder_dir, tmp_path, monkeypatch, capsys,
):
    model, out, options = tiny_encoder_dir, tmp_path / "out", []
    if case == "missing-model":
        model = tmp_path / "nowhere"
    elif case == "not-an-encoder":
        model = _gpt2(tmp_path / "gpt2")
    elif case == "unknown-precision":
        options = ["--precision", "int4"]
    elif case == "unwritable-output":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "out"
    elif case == "non-empty-output":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "max-length-too-long":
        options = ["--max-length", "100000"]
    elif case == "bad-environment":
        monkeypatch.setenv("RECSERVE_EXPORT_INT8_TARGET", "z80")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert export(model, out, *options) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recserve export: error:"), lines
    assert message in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_auto_precision_and_api_overrides(tiny_encoder_dir, tmp_path):
    assert resolve_precision("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "fp16"
    assert resolve_precision("auto", ["CPUExecutionProvider"]) == "int8"
    assert resolve_precision("fp32", ["CUDAExecutionProvider"]) == "fp32"
    with pytest.raises(InvalidInput, match="precision"):
        export_encoder(tiny_encoder_dir, tmp_path / "out", precision="int4")
    assert list(tmp_path.iterdir()) == []
