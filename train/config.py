"""TrainingConfig: every knob of `recserve train`, from the CLI, RECSERVE_TRAIN_*, or [train].

Defaults are sized so the shipped MiniLM fine-tunes on the Online Retail data on a 2-core
CPU in minutes; on a GPU raise pairs_per_epoch and epochs (docs/TRAINING.md).
"""

from __future__ import annotations

from pydantic import Field

from export.settings import RecserveSettings, settings_config

FULL_LEARNING_RATE = 2e-5
LORA_LEARNING_RATE = 2e-4


class TrainingConfig(RecserveSettings):
    model_config = settings_config("train")

    epochs: int = Field(2, ge=1)
    """Passes of pairs_per_epoch training pairs each; validation runs before and after each."""
    batch_size: int = Field(32, ge=2)
    """Pairs per step; every other pair's item is a negative (in-batch negatives)."""
    learning_rate: float | None = Field(None, gt=0)
    """AdamW learning rate; None: 2e-5 for full fine-tuning, 2e-4 with LoRA."""
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the steps over which the learning rate warms up linearly (then decays)."""
    loss_scale: float = Field(20.0, gt=0)
    """Inverse temperature of the contrastive loss (sentence-transformers' default)."""
    pairs_per_epoch: int = Field(1024, ge=0)
    """Training pairs per epoch, consecutive slices of the shuffled pool; 0: the whole pool."""
    pairs_per_user: int = Field(50, ge=1)
    """Most training pairs taken from one user, so heavy buyers do not drown the rest."""
    history_items: int = Field(5, ge=1)
    """Most recent distinct history items in a query text (training draws 1..this many)."""
    max_length: int = Field(128, ge=8)
    """Token limit while training (the saved model keeps the base model's own limit)."""
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    """Latest share of all events that forms the validation period (ignored with split_time)."""
    split_time: float | None = None
    """Epoch seconds where the validation period starts; None: from validation_fraction."""
    validation_pairs: int = Field(1000, ge=2)
    """Most validation pairs (a seeded sample of the validation period's pairs)."""
    validation_pairs_per_user: int = Field(2, ge=1)
    """Most validation pairs from one user, so the metric is spread over many users."""
    recall_k: int = Field(10, ge=1)
    """k of the per-epoch Recall@k / NDCG@k."""
    history_half_life_events: float = Field(10.0, gt=0)
    """Recency half-life (events) of the item-vector validation query; the server's default."""
    item_query_history: int = Field(50, ge=1)
    """History length of the item-vector validation query (the server keeps 50 events)."""
    item_pairs_per_item: int = Field(3, ge=0)
    """Item -> co-interacted item pairs added per item (its strongest partners); 0: none."""
    item_pair_share: float = Field(0.5, ge=0, lt=1)
    """Share of the training pool that is item pairs (cycled when there are fewer): the
    server queries the index with item vectors, so the item side gets half the steps."""
    item_pair_window: int = Field(5, ge=1)
    """Items at most this many positions apart in a user's sequence are co-interacted
    (the build's co-occurrence window)."""
    item_pair_min_users: int = Field(2, ge=1)
    """Distinct users who must have co-interacted two items before they make a pair."""
    group_by_length: bool = True
    """Batch pairs of about the same query length together (a batch pads to its longest
    query); False: batches in the pool's shuffled order."""
    hard_negatives: bool = False
    """Add one mined hard negative per pair, mined with the current encoder each epoch."""
    hard_negative_skip: int = Field(10, ge=0)
    """Nearest ranks never used as hard negatives (likely items the user would buy too)."""
    hard_negative_span: int = Field(40, ge=1)
    """Hard negatives are drawn from ranks skip..skip+span of the current encoder."""
    lora: bool = False
    """Train LoRA adapters (peft) instead of all weights; merged into the saved model."""
    lora_rank: int = Field(16, ge=1)
    """LoRA rank r."""
    lora_alpha: float = Field(32.0, gt=0)
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] | None = None
    """Module names LoRA wraps; None: peft's default for the architecture."""
    device: str = "cpu"
    """torch device to train on (cpu, cuda, cuda:1, ...)."""
    threads: int = Field(0, ge=0)
    """torch CPU threads; 0: the CPUs this process may use. On a machine other jobs keep
    busy, 1 can be several times faster than 2 (threads wait on each other)."""
    seed: int = 0
    """Seed of pair sampling, tie-breaking, negatives and torch."""

    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return LORA_LEARNING_RATE if self.lora else FULL_LEARNING_RATE
