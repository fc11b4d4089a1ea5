"""Training step time of `starbucks-srl` (every target, one forward pass per column) against `full` on the same
batches, and against the naive way (one forward pass per target).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_step.py --data-dir ../shared/data

A step is forward + backward + AdamW on 32 SNLI triplets (MiniLM, 64 tokens max, train mode). The variants run
round-robin on the same batches (each on its own copy of the model), so load changes on a shared machine hit them
alike; medians and their ratios to `full` are printed. Goal: starbucks-srl <= 1.05x full.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from bench.data.pairs import load_triplets
from bench.hub import Backbone, load_model
from bench.losses import at, base_loss, embed_columns
from bench.train import TextCollate
from methods import METHODS
from methods.starbucks_srl import default_targets


def naive_objective(targets, loss, pooling):
    """Starbucks' loss computed with a fresh forward pass for every target: what the one-pass version saves."""
    def objective(model, batch, generator):
        total = 0.0
        for target in targets:
            columns = embed_columns(model, batch, pooling)  # the repeated forward pass
            total = total + loss(at(columns, target.layer, target.dim), batch["labels"])
        return total

    return objective


def timed_step(model, optimizer, objective, batch, generator) -> float:
    t0 = time.perf_counter()
    objective(model, batch, generator).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--steps", type=int, default=12, help="measured steps per variant (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    model, tokenizer = load_model(Backbone("minilm"))
    num_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    loss = base_loss("triplets")
    targets = default_targets(num_layers, hidden)
    srl = METHODS.get("starbucks-srl")()
    full = METHODS.get("full")()
    variants = {
        "full": full.jobs(full.Params(), num_layers, hidden, loss, "mean")[0].objective,
        "starbucks-srl": srl.jobs(srl.Params(), num_layers, hidden, loss, "mean")[0].objective,
        "naive (one forward per target)": naive_objective(targets, loss, "mean"),
    }
    models = {name: copy.deepcopy(model).train() for name in variants}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=2e-5) for name, m in models.items()}
    collate = TextCollate(tokenizer, 64)
    triplets = load_triplets(args.data_dir)
    batches = [collate([(t, None) for t in triplets[i * args.batch_size:(i + 1) * args.batch_size]])
               for i in range(args.steps + 2)]
    times = {name: [] for name in variants}
    for i, batch in enumerate(batches):
        for name, objective in variants.items():
            seconds = timed_step(models[name], optimizers[name], objective, batch, torch.Generator().manual_seed(0))
            if i >= 2:
                times[name].append(seconds)
    print(f"MiniLM {num_layers}x{hidden}, {args.batch_size} SNLI triplets per step, targets "
          f"{' '.join(f'({t.layer},{t.dim})' for t in targets)}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps:")
    base = statistics.median(times["full"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:32s} {median * 1000:8.0f} ms/step  {median / base:5.2f}x full")


if __name__ == "__main__":
    main()
