"""`recserve export` as a function: encoder folder -> verified encoder part of a bundle.

Steps: export the contract graph (encoder_graph) -> ORT transformer fusions (fusion) ->
int8 / fp16 / fp32 (precision) -> the verification gate against PyTorch fp32 on the probe
set (verification) -> manifest. Everything is written into a BundleWriter's temporary
directory and renamed into place only after the gate passes, so a failure at any step
leaves nothing that looks deployable.

The manifest it writes (besides format_version, version, created_at and files, which BundleWriter
adds); the bundle build copies it, less `files`, into the bundle manifest's `encoder`:

    model {file, tokenizer, inputs, output, dim, max_length, pooling, normalized,
           source (model folder), sha256 (of its weights), weight_files, library, model_type}
    precision            "fp32" | "int8" | "fp16"
    quantization         the int8 scheme (target CPU, weight type, reduce_range, ...) or null
    quantized_ops        {MatMulInteger: n, QAttention: n} for int8
    fp16_fp32_nodes      nodes kept in fp32 (pooling tail) for fp16
    fusion               {fused op: count}
    verification         {probes, mean_cosine, p1_cosine, min_cosine, max_abs_diff,
                          overlap_at_10, by_kind, gate {metric: minimum}, passed, provider,
                          reference}
    tool_versions
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Literal

import onnxruntime as ort
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from export import encoder_graph, fusion, precision as lower
from export.bundle import MODEL_FILE, TOKENIZER_DIR, BundleWriter
from export.embedding import embed_texts
from export.errors import InvalidInput
from export.model_files import externalize_weights
from export.onnx_export import resolve_model_path
from export.probes import build_probe_set
from export.runtime import EncoderRuntime, RuntimeConfig
from export.settings import RecserveSettings, load_settings, settings_config
from export.tokenization import TextTokenizer
from export.verification import (
    GateFailed, VerificationGate, agreement_table, gate_failures, measure_agreement,
    reference_embeddings,
)

Precision = Literal["auto", "fp32", "int8", "fp16"]
PRECISIONS = ("auto", "fp32", "int8", "fp16")
_TOOLS = ("onnxruntime", "onnx", "optimum-onnx", "torch", "transformers", "sentence-transformers")


class ExportConfig(RecserveSettings):
    """How `recserve export` turns an encoder folder into the encoder part of a bundle."""

    model_config = settings_config("export")

    precision: Precision = "auto"
    """auto (fp16 when a CUDA provider is available, else int8), fp32, int8 or fp16."""
    max_length: int = 0
    """Token limit of the exported encoder; 0 = the model's own (sentence-transformers' max_seq_length)."""
    int8_target: lower.Int8Target = "this-cpu"
    """CPU family the int8 weights are chosen for: this-cpu (detected), vnni, avx512, avx2, arm64."""
    fuse: bool = True
    """Apply ONNX Runtime's transformer fusions (attention, skip-layer-norm, gelu)."""


def one_line(exc: ValidationError) -> str:
    """A settings validation error as one readable line."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or exc.title
    return f"invalid {exc.title} setting {where}: {error['msg']} (got {error.get('input')!r})"


def resolve_precision(requested: str, available: list[str] | None = None) -> str:
    """auto -> fp16 with a CUDA provider, else int8; other values unchanged."""
    if requested not in PRECISIONS:
        raise InvalidInput(f"unknown precision {requested!r} (choose from {', '.join(PRECISIONS)})")
    if requested != "auto":
        return requested
    available = ort.get_available_providers() if available is None else available
    return "fp16" if "CUDAExecutionProvider" in available else "int8"


def _tool_versions() -> dict[str, str]:
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, transient=False,
    )


def _verification_provider(chosen: str) -> str:
    """int8 and fp32 are for CPU; fp16 is checked on CUDA when there is one."""
    if chosen == "fp16" and "CUDAExecutionProvider" in ort.get_available_providers():
        return "cuda"
    return "cpu"


def export_encoder(
    model: str | Path,
    out: str | Path,
    config: ExportConfig | None = None,
    gate: VerificationGate | None = None,
    *,
    console: Console | None = None,
    **overrides,
) -> dict:
    """Export, fuse, lower, verify and write the encoder bundle at out; returns the manifest.

    `overrides` set ExportConfig fields (`precision="int8"`). Raises InvalidInput for
    unusable arguments and GateFailed when the export disagrees with the PyTorch model
    beyond the gate; in both cases nothing is left at out.
    """
    try:
        if config is None:
            config = load_settings(ExportConfig, **overrides)
        elif overrides:
            config = ExportConfig(**{**config.model_dump(), **overrides})
        gate = gate or load_settings(VerificationGate)
    except ValidationError as exc:
        raise InvalidInput(one_line(exc)) from exc
    console = console or Console(stderr=True)
    chosen = resolve_precision(config.precision)
    source = encoder_graph.inspect_encoder(resolve_model_path(model))
    max_length = config.max_length or source.default_max_length
    if not 2 <= max_length <= source.max_length_limit:
        raise InvalidInput(
            f"max length {max_length} is outside 2..{source.max_length_limit} for {source.path}")
    scheme = lower.choose_int8_scheme(config.int8_target) if chosen == "int8" else None
    source_manifest = _source_manifest(source)

    with BundleWriter(out) as writer, tempfile.TemporaryDirectory() as work_dir, \
            _progress(console) as progress:
        work = Path(work_dir)
        step = progress.add_task(f"export {source.model_type} to ONNX (fp32)", total=None)
        dim = encoder_graph.export_graph(source, work / "exported.onnx")
        encoder_graph.write_tokenizer(source, writer.path / TOKENIZER_DIR, max_length)
        progress.update(step, total=1, completed=1)

        fused: dict[str, int] = {}
        if config.fuse:
            step = progress.add_task("fuse transformer ops", total=None)
            fused = fusion.fuse_transformer(
                work / "exported.onnx", work / "fused.onnx", model_type=source.model_type,
                num_heads=source.num_heads, hidden_size=source.hidden_size,
                for_gpu=chosen == "fp16")
            progress.update(step, total=1, completed=1)
        else:
            shutil.copyfile(work / "exported.onnx", work / "fused.onnx")
        console.print(f"fusions: {fusion.describe_fusion(fused)}")

        step = progress.add_task(f"lower to {chosen}", total=None)
        model_path = writer.path / MODEL_FILE
        quantized, fp32_nodes = _lower(chosen, work / "fused.onnx", model_path, scheme, console)
        externalize_weights(model_path)  # shared between the processes that serve it
        progress.update(step, total=1, completed=1)

        probes = build_probe_set(writer.path / TOKENIZER_DIR, max_length)
        reference, candidate, runtime = _embed_probes(
            source, model_path, writer.path / TOKENIZER_DIR, [p.text for p in probes],
            max_length, chosen, scheme, progress)
        input_names, runtime_provider = list(runtime.input_names), runtime.provider
        del runtime

        agreement = measure_agreement(reference, candidate, [p.kind for p in probes])
        minimums = gate.minimums(chosen)
        failures = gate_failures(agreement, minimums)
        progress.stop()
        console.print(agreement_table(
            agreement, minimums, f"verification: {chosen} vs PyTorch fp32, {len(probes)} probes"))
        if chosen == "fp16" and runtime_provider != "CUDAExecutionProvider":
            console.print("[yellow]note: fp16 was verified on the CPU provider, which computes "
                          "most ops in fp32: this checks the fp16 weights, not GPU fp16 arithmetic")
        if failures:
            raise GateFailed(f"{chosen} export failed the verification gate: " + "; ".join(failures))

        manifest = {
            "model": {
                "file": MODEL_FILE,
                "tokenizer": TOKENIZER_DIR,
                "inputs": input_names,
                "output": encoder_graph.OUTPUT,
                "dim": dim,
                "max_length": max_length,
                "pooling": source.pooling,
                "normalized": "by the model" if source.normalizes else "added at export",
                **source_manifest,
            },
            "precision": chosen,
            "quantization": scheme.to_manifest() if scheme else None,
            "quantized_ops": quantized,
            "fp16_fp32_nodes": fp32_nodes,
            "fusion": fused,
            "verification": {
                **agreement.to_manifest(), "gate": minimums, "passed": True,
                "provider": runtime_provider, "reference": "PyTorch fp32 on CPU",
            },
            "tool_versions": _tool_versions(),
        }
        return writer.commit(manifest)


def _lower(chosen: str, fused: Path, model_path: Path, scheme, console: Console):
    """Write model_path at the chosen precision; (quantized op counts, fp32-kept node count)."""
    if chosen == "int8":
        quantized = lower.quantize_int8(fused, model_path, scheme)
        console.print(f"int8: {scheme.weight_type} weights for {scheme.target}"
                      f"{', reduce-range' if scheme.reduce_range else ''} ({scheme.reason})")
        return quantized, None
    if chosen == "fp16":
        return {}, lower.convert_fp16(fused, model_path)
    shutil.copyfile(fused, model_path)
    return {}, None


def _embed_probes(source, model_path, tokenizer_dir, texts, max_length, chosen, scheme, progress):
    """(PyTorch fp32 vectors, the export's vectors, its runtime), with progress bars."""
    step = progress.add_task("reference vectors (PyTorch fp32)", total=len(texts))
    reference = reference_embeddings(
        source, texts, max_length, on_batch=lambda n: progress.advance(step, n))
    # The session options serving will use for this model (the int8 scheme decides them).
    runtime = EncoderRuntime(model_path, RuntimeConfig(provider=_verification_provider(chosen)),
                             quantization=scheme.to_manifest() if scheme else None)
    step = progress.add_task(f"export's vectors ({runtime.provider})", total=len(texts))
    candidate = embed_texts(runtime, TextTokenizer(tokenizer_dir, max_length), texts,
                            on_batch=lambda n: progress.advance(step, n))
    return reference, candidate, runtime


def _source_manifest(source: encoder_graph.EncoderSource) -> dict:
    """Provenance: `source` is the model folder, `sha256` the digest of its weights."""
    digest, files = encoder_graph.weights_digest(source.path)
    return {
        "source": str(source.path), "sha256": digest, "weight_files": files,
        "library": source.library, "model_type": source.model_type,
    }
