"""LoRA (peft) on the encoder's transformer, merged back before saving.

The adapter is injected in place into the Hugging Face model inside the sentence-
transformers Transformer module, so the module's forward is unchanged. Before saving, the
low-rank updates are merged into the weights and the adapter layers removed: the output
is an ordinary model folder that `recserve export` takes, with no peft needed to load it.
"""

from __future__ import annotations

from typing import Sequence


def _transformer_model(model):
    module = model[0]
    # sentence-transformers 5 names it `model` (auto_model is a read-only alias); 3.x/4.x `auto_model`.
    return module.model if hasattr(module, "model") else module.auto_model


def add_lora(model, *, rank: int, alpha: float, dropout: float,
             target_modules: Sequence[str] | None = None):
    """Freeze the encoder and add trainable LoRA layers; returns the handle `merge_lora` takes."""
    try:
        from peft import LoraConfig, LoraModel
    except ImportError as exc:  # optional extra
        from export.errors import InvalidInput

        raise InvalidInput("--lora needs peft: pip install 'recserve[train]'") from exc
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(target_modules) if target_modules else None)
    # None target_modules: peft's default for the architecture (query/value for BERT).
    return LoraModel(_transformer_model(model), config, "default")


def merge_lora(handle) -> None:
    """Fold the LoRA updates into the base weights and drop the adapter layers (in place)."""
    handle.merge_and_unload()


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
