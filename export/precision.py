"""Lower precision for the fused fp32 graph: int8 dynamic quantization (CPU) or fp16 (GPU).

int8: the weight type must suit the CPU that will run the model. ONNX Runtime's u8s8 int8
GEMM on AVX2/AVX512 without VNNI multiplies with vpmaddubsw, whose 16-bit intermediate
sums saturate with full-range signed weights; VNNI (vpdpbusd) accumulates in 32 bits and
is exact. So: VNNI -> s8 weights; AVX512 without VNNI -> s8 with reduce_range (7-bit
weights cannot saturate); AVX2 -> u8 weights (u8u8 kernels widen to 16 bits first); Arm
-> s8 (sdot/udot are exact). Weights are quantized per channel (per output column):
MiniLM's per-tensor int8 loses several hundredths of cosine, per-channel does not.

fp16: the whole encoder in half precision with float32 inputs and outputs kept, and the
pooling + normalisation tail in float32 (a masked sum over up to 512 tokens is where fp16
loses most).
"""

from __future__ import annotations

import contextlib
import logging
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal

Int8Target = Literal["this-cpu", "vnni", "avx512", "avx2", "arm64"]
_LAYER_NORMS = {"SkipLayerNormalization", "LayerNormalization", "SkipSimplifiedLayerNormalization",
                "EmbedLayerNormalization"}


@dataclass(frozen=True)
class Int8Scheme:
    """The int8 quantization chosen for a target CPU, recorded in the manifest."""

    target: str
    """CPU family the model is quantized for: vnni, avx512, avx2 or arm64."""
    weight_type: str
    """"s8" (QInt8) or "u8" (QUInt8); activations are always u8 (dynamic)."""
    reduce_range: bool
    """7-bit weights, so u8s8 products cannot saturate on CPUs without VNNI."""
    per_channel: bool
    reason: str

    def to_manifest(self) -> dict:
        return {"method": "dynamic", "activation_type": "u8", **asdict(self)}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is unavailable)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_int8_target(flags: set[str], machine: str | None = None) -> str:
    """The int8 CPU family from feature flags and the machine architecture."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2"


def choose_int8_scheme(target: Int8Target = "this-cpu", flags: set[str] | None = None) -> Int8Scheme:
    """The weight type that is exact (no saturation) on the target CPU."""
    family = detect_int8_target(cpu_flags() if flags is None else flags) \
        if target == "this-cpu" else target
    if family == "vnni":
        return Int8Scheme(family, "s8", False, True,
                          "VNNI accumulates u8*s8 in 32 bits: full-range signed weights are exact")
    if family == "avx512":
        return Int8Scheme(family, "s8", True, True,
                          "AVX512 without VNNI: u8*s8 pairs saturate int16; 7-bit weights cannot")
    if family == "arm64":
        return Int8Scheme(family, "s8", False, True, "Arm dot-product kernels are exact for s8")
    return Int8Scheme("avx2", "u8", False, True,
                      "AVX2 without VNNI: u8*s8 pairs saturate int16; u8u8 kernels do not")


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """The quantizer logs advice ('consider pre-processing') on the root logger at WARNING."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path, scheme: Int8Scheme) -> dict[str, int]:
    """Dynamic int8 quantization of MatMul and (fused) Attention weights; {op: count} after."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QInt8 if scheme.weight_type == "s8" else QuantType.QUInt8
    with _quiet_root_warnings():
        quantize_dynamic(
            src, dst, weight_type=weight_type, per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range,
            # Embedding tables stay fp32: a quantized lookup costs accuracy and saves no time.
            op_types_to_quantize=["MatMul", "Attention"],
            # Contrib ops (fused Attention, SkipLayerNorm) have no ONNX shape inference;
            # their outputs are float32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    graph = onnx.load(str(dst), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("MatMulInteger", "QAttention", "DynamicQuantizeMatMul"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def pooling_tail(graph) -> list[str]:
    """Names of the nodes downstream of the encoder's last layer norm (pooling, normalise)."""
    last = max((i for i, n in enumerate(graph.node) if n.op_type in _LAYER_NORMS), default=None)
    if last is None:
        return []
    live = set(graph.node[last].output)
    tail = []
    for node in graph.node[last + 1:]:  # nodes are topologically sorted
        if live & set(node.input):
            live.update(node.output)
            tail.append(node.name)
    return tail


def convert_fp16(src: Path, dst: Path) -> int:
    """fp16 weights and compute, float32 inputs/outputs and tail; returns fp32-kept node count."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    for i, node in enumerate(model.model.graph.node):
        node.name = node.name or f"rs_node_{i}"  # the block list works by node name
    keep_fp32 = pooling_tail(model.model.graph)
    with _quiet_root_warnings():
        model.convert_float_to_float16(keep_io_types=True, node_block_list=keep_fp32)
    model.save_model_to_file(str(dst))
    return len(keep_fp32)
