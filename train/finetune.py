"""Contrastive fine-tuning of a sentence encoder on (recent history -> next item) pairs.

sentence-transformers' MultipleNegativesRankingLoss does the work (in-batch negatives, plus
a mined hard negative per pair when asked); the loop around it is a plain torch loop:
the library's Trainer would pull in `datasets` and `accelerate` for nothing this needs,
and a loop of our own shows exactly the progress and per-epoch validation asked for.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from export.cpus import usable_cpus
from export.errors import InvalidInput
from train.batches import distinct_target_batches, length_grouped_batches
from train.config import TrainingConfig
from train.data import TrainingData
from train.encoding import encode_texts
from train.negatives import mine_hard_negatives
from train.pairs import (Pair, build_pairs, co_interaction_pairs, epoch_slice, query_text,
                         validation_cutoff)
from train.queries import split_query_pairs
from train.validation import ValidationResult, validate


@dataclass
class PairSets:
    """The time split and the pairs on either side of it."""

    cutoff: float
    train_pool: list[Pair]       # targets strictly before cutoff, shuffled
    validation: list[Pair]       # targets at or after cutoff
    negative_pool: np.ndarray    # bool [n_items]: items known before the cutoff


@dataclass
class EpochRecord:
    epoch: int                   # 0: the base model, before any training step
    steps: int
    pairs: int
    train_loss: float | None
    validation: ValidationResult
    seconds: float

    def as_dict(self) -> dict:
        out = asdict(self)
        out["validation"] = self.validation.as_dict()
        return out


@dataclass
class TrainingRun:
    config: TrainingConfig
    pairs: PairSets
    epochs: list[EpochRecord] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    seconds: float = 0.0


def make_pair_sets(data: TrainingData, config: TrainingConfig,
                   query_pairs: Sequence[Pair] = ()) -> PairSets:
    """History pairs, item -> co-interacted item pairs (training side only) and natural-
    language query pairs, if given, on either side of the split; each kind is shuffled with
    its own seeded order, then they are interleaved. Validation stays history -> next item:
    that is what the server asks the encoder."""
    events = data.events
    cutoff = config.split_time if config.split_time is not None else \
        validation_cutoff(events, config.validation_fraction)
    train_pool = build_pairs(events, end=cutoff, history_items=config.history_items,
                             per_user=config.pairs_per_user, seed=config.seed,
                             random_query_length=True)
    validation = build_pairs(events, start=cutoff, history_items=config.history_items,
                             history_cap=config.item_query_history,
                             per_user=config.validation_pairs_per_user, seed=config.seed,
                             random_query_length=False)[: config.validation_pairs]
    item_pairs = co_interaction_pairs(events, end=cutoff, window=config.item_pair_window,
                                      per_item=config.item_pairs_per_item,
                                      min_users=config.item_pair_min_users, seed=config.seed)
    if item_pairs and config.item_pair_share > 0:  # the item side, mixed into the same pool
        wanted = round(len(train_pool) * config.item_pair_share / (1 - config.item_pair_share))
        cycled = [item_pairs[i % len(item_pairs)] for i in range(max(wanted, 1))]
        train_pool = _interleave(train_pool, cycled, config.seed + 1)
    if query_pairs:
        train_pool = _interleave(train_pool, split_query_pairs(list(query_pairs), end=cutoff,
                                                               seed=config.seed), config.seed)
        validation = validation + split_query_pairs(list(query_pairs), start=cutoff,
                                                    limit=config.validation_pairs, seed=config.seed)
    if len(train_pool) < 2:
        raise InvalidInput(f"only {len(train_pool)} training pairs before the split; need more "
                           "interactions or a later --split-time")
    if len(validation) < 2:
        raise InvalidInput(f"only {len(validation)} validation pairs after the split; need more "
                           "interactions or an earlier split")
    created = data.items.created_at
    # An item first listed after the split is unknown at training time: never a negative.
    negative_pool = np.isnan(created) | (created < cutoff)
    return PairSets(cutoff, train_pool, validation, negative_pool)


def _interleave(first: list[Pair], second: list[Pair], seed: int) -> list[Pair]:
    """Both lists, mixed in a seeded random order that keeps each list's own order."""
    from_second = np.zeros(len(first) + len(second), dtype=bool)
    from_second[np.random.default_rng([seed, 2]).permutation(len(from_second))[: len(second)]] = True
    a, b = iter(first), iter(second)
    return [next(b) if flag else next(a) for flag in from_second]


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _features(model, texts: Sequence[str], device: str) -> dict:
    features = model.preprocess(list(texts)) if hasattr(model, "preprocess") else model.tokenize(list(texts))
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in features.items()}


def _progress():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(),
                    transient=True)


class FineTuner:
    """Holds the model, loss and optimiser of one run; `run` does every epoch."""

    def __init__(self, model, config: TrainingConfig, data: TrainingData, pairs: PairSets) -> None:
        import torch

        try:  # sentence-transformers 5 moved the losses; 3.x/4.x keep them here
            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        except ImportError:
            from sentence_transformers.losses import MultipleNegativesRankingLoss

        self.model, self.config, self.data, self.pairs = model, config, data, pairs
        self.texts = data.items.texts
        self.loss_fn = MultipleNegativesRankingLoss(model, scale=config.loss_scale)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.effective_learning_rate())
        per_epoch = min(config.pairs_per_epoch or len(pairs.train_pool), len(pairs.train_pool))
        self.planned_steps = max(1, math.ceil(per_epoch / config.batch_size) * config.epochs)
        warmup = int(self.planned_steps * config.warmup_fraction)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: self._lr_factor(s, warmup))
        self.negative_rng = np.random.default_rng([config.seed, 1])
        self.item_vectors: np.ndarray | None = None

    def _lr_factor(self, step: int, warmup: int) -> float:
        """Linear warm-up, then linear decay to zero at the planned last step."""
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (self.planned_steps - step) / max(1, self.planned_steps - warmup))

    def validate(self, progress) -> ValidationResult:
        c = self.config
        result, self.item_vectors = validate(
            self.model, self.loss_fn, self.pairs.validation, self.texts, k=c.recall_k,
            batch_size=c.batch_size, half_life_events=c.history_half_life_events, progress=progress)
        return result

    def _negatives(self, pairs: list[Pair], progress) -> list[int] | None:
        if not self.config.hard_negatives:
            return None
        queries = encode_texts(self.model, [query_text(p, self.texts) for p in pairs],
                               batch_size=self.config.batch_size * 2, progress=progress,
                               description="mining hard negatives")
        return mine_hard_negatives(queries, self.item_vectors, pairs, self.pairs.negative_pool,
                                   skip=self.config.hard_negative_skip,
                                   span=self.config.hard_negative_span, rng=self.negative_rng)

    def train_epoch(self, epoch: int, progress) -> tuple[int, int, float]:
        """One epoch; returns (steps, pairs used, mean training loss)."""
        import torch

        c = self.config
        pairs = epoch_slice(self.pairs.train_pool, epoch - 1, c.pairs_per_epoch)
        negatives = self._negatives(pairs, progress)
        negative_of = {id(p): n for p, n in zip(pairs, negatives)} if negatives else {}
        if c.group_by_length:
            lengths = [len(query_text(p, self.texts)) for p in pairs]
            batches = length_grouped_batches(pairs, lengths, c.batch_size, seed=[c.seed, 3, epoch])
        else:
            batches = distinct_target_batches(pairs, c.batch_size)
        self.model.train()
        title = f"epoch {epoch}/{c.epochs}"
        task = progress.add_task(title, total=len(batches))
        losses: list[float] = []
        every = max(1, math.ceil(len(batches) / 10))  # without a terminal: a line per tenth
        for batch in batches:
            columns = [[query_text(p, self.texts) for p in batch], [self.texts[p.target] for p in batch]]
            if negative_of:
                columns.append([self.texts[negative_of[id(p)]] for p in batch])
            features = [_features(self.model, column, c.device) for column in columns]
            loss = self.loss_fn(features, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            status = f"{title} loss {np.mean(losses[-20:]):.4f}"
            progress.update(task, advance=1, description=status)
            if not progress.console.is_terminal and len(losses) % every == 0:
                progress.console.print(f"{status} (step {len(losses)}/{len(batches)})")  # logs
        progress.remove_task(task)
        used = sum(len(b) for b in batches)
        return len(batches), used, float(np.mean(losses)) if losses else float("nan")

    def run(self, on_epoch: Callable[[EpochRecord], None] | None = None) -> list[EpochRecord]:
        records: list[EpochRecord] = []
        with _progress() as progress:
            started = time.perf_counter()
            records.append(EpochRecord(0, 0, 0, None, self.validate(progress),
                                       time.perf_counter() - started))
            if on_epoch:
                on_epoch(records[-1])
            for epoch in range(1, self.config.epochs + 1):
                started = time.perf_counter()
                steps, used, train_loss = self.train_epoch(epoch, progress)
                record = EpochRecord(epoch, steps, used, train_loss, self.validate(progress),
                                     time.perf_counter() - started)
                records.append(record)
                if on_epoch:
                    on_epoch(record)
        return records


def fine_tune(data: TrainingData, config: TrainingConfig, base: Path, out: Path,
              on_epoch: Callable[[EpochRecord], None] | None = None,
              pairs: PairSets | None = None) -> TrainingRun:
    """Fine-tune the encoder in `base`, save an ordinary sentence-transformers folder to `out`."""
    from sentence_transformers import SentenceTransformer

    from train.lora import add_lora, merge_lora, trainable_parameters

    import torch

    started = time.perf_counter()
    torch.set_num_threads(config.threads or usable_cpus())
    _seed_everything(config.seed)
    pairs = pairs or make_pair_sets(data, config)
    model = SentenceTransformer(str(base), device=config.device)
    base_max_length = model.max_seq_length
    model.max_seq_length = min(config.max_length, base_max_length or config.max_length)
    lora = add_lora(model, rank=config.lora_rank, alpha=config.lora_alpha,
                    dropout=config.lora_dropout, target_modules=config.lora_target_modules) \
        if config.lora else None
    run = TrainingRun(config, pairs)
    run.trainable_parameters, run.total_parameters = trainable_parameters(model)
    run.epochs = FineTuner(model, config, data, pairs).run(on_epoch)
    if lora is not None:
        merge_lora(lora)
    model.max_seq_length = base_max_length  # the export's limit stays the base model's
    model.save(str(out))
    run.seconds = time.perf_counter() - started
    return run
