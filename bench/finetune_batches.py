"""Fine-tuning step time with and without length-grouped batches (train/batches.py).

    python bench/finetune_batches.py --catalog C --interactions I [--steps 30 --rounds 2]

The same training pairs in both (the first `--steps` x batch-size pairs of `recserve
train`'s shuffled pool with the default config), batched both ways; the same model state at
the start of each measurement (reloaded), one torch thread, grouped and ungrouped runs
alternating. Reports
seconds per step (median over rounds) and the padded query tokens per batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--interactions", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from export.onnx_export import default_model_path
    from train.batches import distinct_target_batches, length_grouped_batches
    from train.config import TrainingConfig
    from train.data import load_training_data
    from train.finetune import FineTuner, make_pair_sets
    from train.pairs import epoch_slice, query_text

    torch.set_num_threads(1)
    config = TrainingConfig()
    data = load_training_data(args.catalog, args.interactions)
    pairs = make_pair_sets(data, config)
    texts = data.items.texts
    chosen = epoch_slice(pairs.train_pool, 0, args.steps * config.batch_size)  # both plans: these pairs
    lengths = [len(query_text(p, texts)) for p in chosen]
    plans = {"grouped": length_grouped_batches(chosen, lengths, config.batch_size, seed=[0, 3, 1]),
             "ungrouped": distinct_target_batches(chosen, config.batch_size)}
    results: dict[str, dict] = {name: {"seconds_per_step": []} for name in plans}
    for _ in range(args.rounds):
        for name, batches in plans.items():
            model = SentenceTransformer(str(default_model_path()), device="cpu")
            model.max_seq_length = config.max_length
            tuner = FineTuner(model, config, data, pairs)
            model.train()
            tokenize = getattr(model, "preprocess", None) or model.tokenize
            padded = []
            started = time.perf_counter()
            for batch in batches:
                queries = [query_text(p, texts) for p in batch]
                features = [tokenize(queries), tokenize([texts[p.target] for p in batch])]
                padded.append(int(np.prod(features[0]["input_ids"].shape)))
                loss = tuner.loss_fn(features, None)
                loss.backward()
                tuner.optimizer.step()
                tuner.optimizer.zero_grad(set_to_none=True)
            results[name]["seconds_per_step"].append((time.perf_counter() - started) / len(batches))
            results[name]["padded_query_tokens_per_batch"] = float(np.mean(padded))
    for name, r in results.items():
        r["median_seconds_per_step"] = statistics.median(r["seconds_per_step"])
    ratio = results["ungrouped"]["median_seconds_per_step"] / results["grouped"]["median_seconds_per_step"]
    print(json.dumps({"pairs": len(chosen), "batches": {n: len(b) for n, b in plans.items()},
                      "rounds": args.rounds, "results": results,
                      "speedup": round(ratio, 2)}, indent=1))


if __name__ == "__main__":
    main()
