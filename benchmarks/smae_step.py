"""SMAE pre-training step time against a `starbucks-srl` fine-tuning step: what sizes the `starbucks` pre-training
budget of the default suite.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/smae_step.py --data-dir ../shared/data

A step is forward + backward + AdamW (MiniLM, train mode): SMAE on 32 sentences of the default pre-training corpus
(64 tokens max, MLM + MAE at the six targets, and the MLM-only variant), starbucks-srl on 32 SNLI triplets (64
tokens max). The variants run round-robin on their own model copies, so load on a shared machine hits them alike;
medians and the ratio to starbucks-srl are printed, with the stage times they imply for the default budgets.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import replace
from functools import partial

import torch

from bench.data.corpus import load_local_corpus
from bench.data.pairs import load_triplets
from bench.hub import Backbone, load_model
from bench.losses import base_loss
from bench.smae import SMAEModel, mlm_head_for, tokenize
from bench.suites import default
from bench.train import TextCollate
from methods import METHODS
from methods.starbucks import smae_objective
from methods.starbucks_srl import default_targets


def timed_step(model, optimizer, objective, batch, generator) -> float:
    t0 = time.perf_counter()
    objective(model, batch, generator).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per variant (after 2 warm-up steps)")
    args = parser.parse_args()

    encoder, tokenizer = load_model(Backbone("minilm"))
    num_layers, hidden = encoder.config.num_hidden_layers, encoder.config.hidden_size
    targets = default_targets(num_layers, hidden)
    starbucks = METHODS.get("starbucks")()
    params = starbucks.Params()
    head, _ = mlm_head_for(Backbone("minilm"), encoder)

    class Recording(SMAEModel):  # smae_objective counts steps by, and records per-pair losses on, the model
        loss_log = ()

        def record(self, losses) -> None:
            pass

    smae_model = Recording(encoder, head).train()
    srl = starbucks.jobs(params, num_layers, hidden, base_loss("triplets"), "mean")[0].objective
    mask_args = (tokenizer.mask_token_id, len(tokenizer), 0)
    variants = {  # name -> (model, objective, batches)
        "starbucks-srl (32 triplets)": (copy.deepcopy(encoder).train(), srl, "triplets"),
        "SMAE MLM+MAE (32 sentences)": (smae_model, smae_objective(targets, params, *mask_args), "sentences"),
        "SMAE MLM only": (copy.deepcopy(smae_model), smae_objective(targets, replace(params, mae=False), *mask_args),
                          "sentences"),
    }
    bs, n = params.pretrain_batch_size, args.steps + 2
    sentences = load_local_corpus(args.data_dir)
    triplets = load_triplets(args.data_dir)
    collate = {"triplets": TextCollate(tokenizer, 64),
               "sentences": partial(tokenize, tokenizer, max_length=params.pretrain_max_seq_len)}
    data = {"triplets": [collate["triplets"]([(t, None) for t in triplets[i * bs:(i + 1) * bs]]) for i in range(n)],
            "sentences": [collate["sentences"](sentences[i * bs:(i + 1) * bs]) for i in range(n)]}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, (m, _, _) in variants.items()}
    times = {name: [] for name in variants}
    generator = torch.Generator().manual_seed(0)
    for i in range(n):
        for name, (model, objective, kind) in variants.items():
            seconds = timed_step(model, optimizers[name], objective, data[kind][i], generator)
            if i >= 2:
                times[name].append(seconds)
    print(f"MiniLM {num_layers}x{hidden}, targets {' '.join(f'({t.layer},{t.dim})' for t in targets)}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps:")
    base = statistics.median(times["starbucks-srl (32 triplets)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:30s} {median * 1000:8.0f} ms/step  {median / base:5.2f}x starbucks-srl")
    smae = statistics.median(times["SMAE MLM+MAE (32 sentences)"])
    steps = default().budget.steps
    print(f"default suite: SMAE {params.pretrain_steps} steps ~ {params.pretrain_steps * smae / 60:.1f} min, "
          f"fine-tuning {steps} steps ~ {steps * base / 60:.1f} min at these speeds")


if __name__ == "__main__":
    main()
