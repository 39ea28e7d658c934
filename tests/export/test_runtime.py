import numpy as np

from export.cpus import usable_cpus
from export.embedding import embed_texts
from export.runtime import EncoderRuntime, RuntimeConfig, select_providers
from export.tokenization import TextTokenizer


def test_onnx_matches_sentence_transformers(tiny_encoder_dir, tiny_onnx_dir):
    from sentence_transformers import SentenceTransformer

    texts = ["white hanging heart t-light holder", "a", "jumbo bag red retrospot " * 8]
    runtime = EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(provider="cpu"))
    tokenizer = TextTokenizer(tiny_onnx_dir / "tokenizer", max_length=128)
    got = embed_texts(runtime, tokenizer, texts, max_batch_tokens=16)
    want = SentenceTransformer(str(tiny_encoder_dir), device="cpu").encode(texts)
    assert got.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * want).sum(axis=1).min() > 0.99999


def test_provider_order_prefers_gpu_and_falls_back_to_cpu():
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [name for name, _ in select_providers(RuntimeConfig(), available)]
    assert chosen == available
    trt_options = select_providers(RuntimeConfig(), available)[0][1]
    assert trt_options["trt_fp16_enable"] == "True"
    assert "input_ids:1x8" in trt_options["trt_profile_min_shapes"]
    cuda_only = select_providers(RuntimeConfig(provider="cuda"), available)
    assert [n for n, _ in cuda_only] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert [n for n, _ in select_providers(RuntimeConfig(), ["CPUExecutionProvider"])] == [
        "CPUExecutionProvider"]


def test_usable_cpus_is_within_affinity():
    import os

    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_exact_int8_path_only_for_signed_weights_without_vnni():
    from export.runtime import needs_exact_int8_path

    s8 = {"weight_type": "s8"}
    assert needs_exact_int8_path(s8, {"avx2"}) is True
    assert needs_exact_int8_path(s8, {"avx2", "avx512bw"}) is True
    assert needs_exact_int8_path(s8, {"avx2", "avx512_vnni"}) is False
    assert needs_exact_int8_path({"weight_type": "u8"}, {"avx2"}) is False
    assert needs_exact_int8_path({"weight_type": "s8", "reduce_range": True}, {"avx512bw"}) is False
    assert needs_exact_int8_path(None, {"avx2"}) is False


def test_io_binding_path_gives_the_same_vectors(tiny_onnx_dir):
    from export.tokenization import pad_batch

    tokenizer = TextTokenizer(tiny_onnx_dir / "tokenizer", max_length=128)
    feeds = pad_batch(tokenizer.encode(["red lantern", "a much longer product description"]), 16)
    plain = EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(io_binding="off"))
    bound = EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(io_binding="on"))
    assert bound.io_binding and not plain.io_binding
    np.testing.assert_allclose(bound.run(feeds), plain.run(feeds), atol=1e-6)


def test_cpu_arena_setting_reaches_the_session_and_keeps_the_vectors(tiny_onnx_dir):
    from export.tokenization import pad_batch

    tokenizer = TextTokenizer(tiny_onnx_dir / "tokenizer", max_length=128)
    feeds = pad_batch(tokenizer.encode(["red lantern", "a much longer product description"]), 16)
    with_arena = EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(cpu_mem_arena=True))
    without = EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(cpu_mem_arena=False))
    assert with_arena.session.get_session_options().enable_cpu_mem_arena
    assert not without.session.get_session_options().enable_cpu_mem_arena
    np.testing.assert_allclose(without.run(feeds), with_arena.run(feeds), atol=1e-6)


def test_release_memory_shrinks_the_arena_and_the_next_batch_is_unchanged(tiny_onnx_dir):
    from export.tokenization import pad_batch

    tokenizer = TextTokenizer(tiny_onnx_dir / "tokenizer", max_length=128)
    feeds = pad_batch(tokenizer.encode(["red lantern", "a much longer product description"]), 64)
    runtime = EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(cpu_mem_arena=True))
    before = runtime.run(feeds)
    runtime.release_memory()  # a real ORT run with arena shrinkage
    np.testing.assert_allclose(runtime.run(feeds), before, atol=1e-6)
    # without the arena there is nothing to shrink: a no-op
    EncoderRuntime(tiny_onnx_dir / "model.onnx", RuntimeConfig(cpu_mem_arena=False)).release_memory()
