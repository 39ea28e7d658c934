"""ONNX Runtime's transformer fusions (attention, skip-layer-norm, gelu, embedding layer norm).

Runs the offline transformer optimizer at opt_level 0: only the pattern fusions into
com.microsoft contrib ops, no provider-specific rewrites, so the fused file stays portable
across ORT builds and providers. The fused-op counts are reported and go into the manifest.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

# HF model types whose layers follow BERT's pattern, as ORT's "bert" fusions expect.
BERT_LIKE = {
    "bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet", "albert",
}
# Contrib ops worth reporting (the optimizer's statistics list more, mostly zero).
REPORTED_OPS = (
    "EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "Gelu", "FastGelu", "BiasGelu", "GemmFastGelu",
)


def fuse_transformer(
    src: Path, dst: Path, *, model_type: str, num_heads: int, hidden_size: int,
    for_gpu: bool = False,
) -> dict[str, int]:
    """Write the fused graph to dst; returns {fused op: count} (empty when nothing fused).

    Architectures outside BERT_LIKE are copied unchanged: ORT has no fusion rules for them
    that are safe to apply blindly.
    """
    if model_type not in BERT_LIKE:
        shutil.copyfile(src, dst)
        return {}
    from onnxruntime.transformers import optimizer

    # The optimizer logs every pattern it tried and missed at WARNING; keep the CLI readable.
    # Its modules log under their bare names too (fusion_base: "Fused Gelu: 6" at INFO, ...).
    loggers = [logging.getLogger(name) for name in (
        "onnxruntime.transformers", "fusion_base", "fusion_utils", "onnx_model", "onnx_model_bert")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        model = optimizer.optimize_model(
            str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
            opt_level=0, use_gpu=for_gpu,
        )
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    stats = model.get_fused_operator_statistics()
    model.save_model_to_file(str(dst))
    return {op: int(stats[op]) for op in REPORTED_OPS if stats.get(op)}


def describe_fusion(fused: dict[str, int]) -> str:
    """One line for people: 'Attention x6, SkipLayerNormalization x12, ...'."""
    if not fused:
        return "nothing fused"
    return ", ".join(f"{op} x{count}" for op, count in fused.items())
