"""int8 scheme per CPU, dynamic quantization and fp16 conversion of the fused graph."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.encoder_graph import export_graph, inspect_encoder
from export.fusion import fuse_transformer
from export.precision import (
    choose_int8_scheme, convert_fp16, cpu_flags, detect_int8_target, pooling_tail, quantize_int8,
)
from export.tokenization import TextTokenizer, pad_batch

TEXTS = ["white hanging heart t-light holder", "mug", "set of 3 cake tins pantry design"]


@pytest.fixture(scope="module")
def fused_graph(tiny_encoder_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("lower")
    source = inspect_encoder(tiny_encoder_dir)
    export_graph(source, work / "exported.onnx")
    fuse_transformer(work / "exported.onnx", work / "fused.onnx", model_type=source.model_type,
                     num_heads=source.num_heads, hidden_size=source.hidden_size)
    return work / "fused.onnx"


def vectors(path, tokenizer_dir):
    options = ort.SessionOptions()
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = pad_batch(TextTokenizer(tokenizer_dir, 64).encode(TEXTS), 16)
    out = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    assert len(out) == 1 and out[0].dtype == np.float32
    return out[0]


def test_weight_type_follows_the_cpu():
    vnni = choose_int8_scheme(flags={"avx2", "avx512bw", "avx512_vnni"})
    assert (vnni.target, vnni.weight_type, vnni.reduce_range) == ("vnni", "s8", False)
    avx512 = choose_int8_scheme(flags={"avx2", "avx512f", "avx512bw"})
    assert (avx512.target, avx512.weight_type, avx512.reduce_range) == ("avx512", "s8", True)
    avx2 = choose_int8_scheme(flags={"avx2", "fma"})
    assert (avx2.target, avx2.weight_type, avx2.reduce_range) == ("avx2", "u8", False)
    assert choose_int8_scheme(flags={"avx_vnni", "avx2"}).target == "vnni"  # client-class VNNI
    assert choose_int8_scheme("avx2", flags={"avx512_vnni"}).weight_type == "u8"  # explicit wins
    assert detect_int8_target(set(), machine="aarch64") == "arm64"
    assert all(s.per_channel for s in (vnni, avx512, avx2))
    manifest = vnni.to_manifest()
    assert manifest["method"] == "dynamic" and manifest["reason"]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512bw\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512bw"}
    assert cpu_flags(tmp_path / "missing") == set()
    assert choose_int8_scheme().target == detect_int8_target(cpu_flags())


@pytest.mark.parametrize("flags", [{"avx512_vnni"}, {"avx2"}, {"avx512bw"}], ids=["s8", "u8", "s8-7bit"])
def test_int8_quantizes_matmuls_and_attention_not_embeddings(fused_graph, tiny_encoder_dir, tmp_path, flags):
    scheme = choose_int8_scheme(flags=flags)
    out = tmp_path / "int8.onnx"
    counts = quantize_int8(fused_graph, out, scheme)
    assert counts == {"MatMulInteger": 6, "QAttention": 2}  # 3 MatMuls + 1 Attention per layer
    model = onnx.load(str(out))
    op_types = {n.op_type for n in model.graph.node}
    assert "QEmbedLayerNormalization" not in op_types and "EmbedLayerNormalization" in op_types
    weight_dtype = onnx.TensorProto.INT8 if scheme.weight_type == "s8" else onnx.TensorProto.UINT8
    initializers = {t.name: t for t in model.graph.initializer}
    for node in (n for n in model.graph.node if n.op_type == "MatMulInteger"):
        assert initializers[node.input[1]].data_type == weight_dtype
    if scheme.reduce_range:  # 7-bit weights: |w| <= 63 (s8)
        weights = onnx.numpy_helper.to_array(initializers[next(
            n.input[1] for n in model.graph.node if n.op_type == "MatMulInteger")])
        assert np.abs(weights.astype(np.int32)).max() <= 64
    cosine = (vectors(out, tiny_encoder_dir) * vectors(fused_graph, tiny_encoder_dir)).sum(axis=1)
    assert cosine.min() > 0.99


def test_fp16_keeps_float32_io_and_the_pooling_tail(fused_graph, tiny_encoder_dir, tmp_path):
    tail = pooling_tail(onnx.load(str(fused_graph)).graph)
    assert tail  # pooling and normalisation follow the last layer norm
    out = tmp_path / "fp16.onnx"
    assert convert_fp16(fused_graph, out) == len(tail)
    model = onnx.load(str(out))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    half = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(half) >= 6  # the layers' weights
    reduce_sums = [n for n in model.graph.node if n.op_type == "ReduceSum"]
    assert reduce_sums and all(n.name in tail for n in reduce_sums)  # pooling stays fp32
    cosine = (vectors(out, tiny_encoder_dir) * vectors(fused_graph, tiny_encoder_dir)).sum(axis=1)
    assert cosine.min() > 0.999
