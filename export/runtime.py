"""The encoder runtime: one ONNX Runtime session over a bundle's model.onnx.

Provider order is chosen from config and availability: TensorRT (fp16, engine cache,
profile shapes matching the length buckets), CUDA, CPU. On CPU, intra-op threads default
to the CPUs this process may really use (affinity and cgroup quota).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import onnxruntime as ort

from export.cpus import usable_cpus
from export.errors import BundleError
from export.settings import RecserveSettings, settings_config
from export.tokenization import DEFAULT_BUCKETS

Provider = Literal["auto", "tensorrt", "cuda", "cpu"]


class RuntimeConfig(RecserveSettings):
    model_config = settings_config("runtime")

    provider: Provider = "auto"
    """Execution provider: auto picks TensorRT, then CUDA, then CPU, as available."""
    intra_op_threads: int = 0
    """ONNX Runtime intra-op threads on CPU; 0 = the CPUs this process may use."""
    trt_engine_cache_dir: str = ""
    """Where TensorRT keeps built engines; empty = <bundle>/.trt-cache is not used, a temp dir."""
    device_id: int = 0
    """GPU ordinal for the CUDA and TensorRT providers."""
    io_binding: Literal["auto", "on", "off"] = "auto"
    """ORT IO binding: auto = on for the GPU providers, off on CPU."""
    cpu_mem_arena: bool = True
    """ORT's CPU memory arena: keeps the largest batch's buffers after warm-up (+~140 MB per
    process for MiniLM at 16 x 256 tokens); off, each run allocates afresh (bench/ort_arena.py)."""
    inference_socket: str = ""
    """Unix socket of the shared inference process (`serve --inference shared` sets it for its
    workers): the encoder runs there instead of in a session of this process."""


def _trt_profile(buckets: Sequence[int], max_batch: int, names: Sequence[str]) -> dict[str, str]:
    """TensorRT optimisation profile shapes spanning the length buckets."""
    def shapes(batch: int, seq: int) -> str:
        return ",".join(f"{name}:{batch}x{seq}" for name in names)

    return {
        "trt_profile_min_shapes": shapes(1, min(buckets)),
        "trt_profile_opt_shapes": shapes(max_batch, 64 if 64 in buckets else max(buckets)),
        "trt_profile_max_shapes": shapes(max_batch, max(buckets)),
    }


def select_providers(
    config: RuntimeConfig,
    available: Sequence[str],
    input_names: Sequence[str] = ("input_ids", "attention_mask"),
    max_batch: int = 64,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
) -> list[tuple[str, dict[str, str]]]:
    """Ordered (provider, options) for ort.InferenceSession; CPU is always the last resort."""
    want = config.provider
    chosen: list[tuple[str, dict[str, str]]] = []
    if want in ("auto", "tensorrt") and "TensorrtExecutionProvider" in available:
        options = {
            "device_id": str(config.device_id),
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": config.trt_engine_cache_dir or "/tmp/recserve-trt-cache",
            **_trt_profile(buckets, max_batch, input_names),
        }
        chosen.append(("TensorrtExecutionProvider", options))
    if want in ("auto", "tensorrt", "cuda") and "CUDAExecutionProvider" in available:
        chosen.append(("CUDAExecutionProvider", {"device_id": str(config.device_id)}))
    if want in ("tensorrt", "cuda") and not chosen:
        raise BundleError(f"provider {want!r} requested but not available (have {list(available)})")
    chosen.append(("CPUExecutionProvider", {}))
    return chosen


def needs_exact_int8_path(quantization: dict | None, flags: set[str] | None = None) -> bool:
    """True for full-range signed-int8 weights on an x86 CPU without VNNI (u8s8 can saturate).

    Reduce-range (7-bit) weights cannot saturate, so they keep the fast kernels.
    """
    if not quantization or quantization.get("weight_type") != "s8" or quantization.get("reduce_range"):
        return False
    from export.precision import cpu_flags, detect_int8_target

    return detect_int8_target(cpu_flags() if flags is None else flags) in ("avx2", "avx512")


def _graph_input_names(model_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [i.name for i in graph.input]


def _arena_shrinkage() -> ort.RunOptions:
    """Run options that free the CPU arena's unused chunks at the end of the run (ORT's
    `memory.enable_memory_arena_shrinkage`; needs the arena on)."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class EncoderRuntime:
    """Runs the bundle's ONNX encoder: padded int64 inputs -> [batch, dim] float32 vectors."""

    def __init__(
        self,
        model_path: str | Path,
        config: RuntimeConfig | None = None,
        *,
        max_batch: int = 64,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        quantization: dict | None = None,
    ) -> None:
        """quantization: the encoder manifest's "quantization" section (None for fp32/fp16)."""
        config = config or RuntimeConfig()
        model_path = Path(model_path)
        if not model_path.is_file():
            raise BundleError(f"no ONNX model at {model_path}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = config.intra_op_threads or usable_cpus()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = config.cpu_mem_arena
        if needs_exact_int8_path(quantization):
            # Signed int8 weights on AVX2/AVX512 without VNNI: u8*s8 pairs saturate the 16-bit
            # intermediate (vpmaddubsw); this ORT option takes the exact, slower kernels.
            options.add_session_config_entry("session.x64quantprecision", "1")
        available = ort.get_available_providers()
        input_names = _graph_input_names(model_path) if "TensorrtExecutionProvider" in available \
            else ("input_ids", "attention_mask")
        providers = select_providers(config, available, input_names, max_batch, buckets)
        self.session = ort.InferenceSession(
            str(model_path), options,
            providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.provider = self.session.get_providers()[0]
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.threads = options.intra_op_num_threads
        # On CUDA, IO binding lets ORT copy inputs once and skips per-run output allocation.
        self.io_binding = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") \
            if config.io_binding == "auto" else config.io_binding == "on"
        self._release_options = _arena_shrinkage() \
            if config.cpu_mem_arena and self.provider == "CPUExecutionProvider" else None

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings for one padded batch; extra feed keys the model lacks are ignored."""
        if self.io_binding:
            return self._run_bound(feeds)
        inputs = {name: feeds[name] for name in self.input_names}
        return self.session.run(["sentence_embedding"], inputs)[0]

    def release_memory(self) -> None:
        """Give the CPU arena's unused buffers back to the OS: one 1 x 2-token run with arena
        shrinkage. The largest batch's buffers otherwise stay for the life of the session
        (+~90 MB for MiniLM at 16 x 256 tokens, docs/BENCHMARKS.md); the next large batch
        allocates them again."""
        if self._release_options is None:
            return
        feeds = {name: np.ones((1, 2), np.int64) for name in self.input_names}
        self.session.run(["sentence_embedding"], feeds, self._release_options)

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        binding = self.session.io_binding()
        for name in self.input_names:
            binding.bind_cpu_input(name, np.ascontiguousarray(feeds[name]))
        binding.bind_output("sentence_embedding", "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
