"""Encode once, slice many: time of the whole layer x dim grid from one pass vs one encode vs the naive way.

    python benchmarks/grid_speed.py [--data-dir DIR] [--repeats 3] [--pairs N] [--task stsb|scifact] [--no-naive]

Prints, for STS-B test (or SciFact) on the default backbone (all-MiniLM-L6-v2): (a) one plain encode at full size
(last layer only), (b) the whole grid (every layer x every dim, fp32) from one all-layer pass plus scoring, (c) the
naive way: a truly truncated model re-encodes for every cell (STS-B only). Goal: (b) <= 1.1x (a). Medians over
--repeats (naive: once). Then the grid's scoring cost at more precisions (issue 24): the all-layer pass plus the
scoring of every cell at fp32,int8,binary (the default suite's scorable set before the compressions) and at the
compression suite's precisions (bench/suites.COMPRESSIONS: every one the task can score but pq32), each against (a).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.data import resolve_data_dir
from bench.data.sts import load_stsb
from bench.encoder import Encoder
from bench.evaluate import evaluate_grid, grid
from bench.hub import Backbone
from bench.pooling import pool
from bench.serving import resolve_eval
from bench.spec import EvalSpec
from bench.suites import COMPRESSIONS, DEFAULT_DOC_LEN, MINILM_DIMS
from bench.tasks import TASKS
from methods import Checkpoint

SPEC = resolve_eval(EvalSpec(precisions=("fp32",)), Backbone("minilm"))  # MiniLM's own pooling (mean)


def plain_encode(encoder: Encoder, texts: list[str], spec: EvalSpec = SPEC, max_length: int | None = None) -> np.ndarray:
    """What a user would do without elastic evaluation: last layer only, same batching and pooling."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), encoder.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), spec.batch_size):
            idx = order[start:start + spec.batch_size]
            batch = encoder.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=max_length or spec.max_seq_len, return_tensors="pt")
            out[idx] = pool(encoder.model(**batch).last_hidden_state, batch["attention_mask"], spec.pooling).numpy()
    return out


def naive_grid(task, pairs, texts: list[str]) -> float:
    """Every cell from its own truly truncated model (first `layer` blocks), re-encoding each time."""
    t0 = time.perf_counter()
    aux = task.prepare(pairs, {"sentences": (texts, SPEC.max_seq_len)})
    for cell in grid(6, 384, SPEC):
        model = Encoder.named("minilm", device="cpu", num_layers=cell.layer)
        vectors = model.vectors(texts, SPEC.max_seq_len, SPEC.batch_size)[-1:]
        arrays = {"sentences": np.broadcast_to(vectors, (cell.layer, *vectors.shape[1:]))}
        task.score_cell(pairs, arrays, aux, cell.layer, cell.dim, "fp32", SPEC)
    return time.perf_counter() - t0


def scoring_costs(encoder: Encoder, task, data, repeats: int) -> tuple[float, dict[str, float]]:
    """The all-layer pass's seconds, and per precision of the compression suite (bench/suites.COMPRESSIONS: every
    one the task can score but pq32, which cannot split 16 dims) the grid's scoring seconds at that precision alone
    (medians over `repeats`), the encodings cached after the first call so each later call times the scoring."""
    with tempfile.TemporaryDirectory() as cache:
        def run(precisions):
            spec = replace(SPEC, precisions=precisions, dims=MINILM_DIMS, max_doc_len=DEFAULT_DOC_LEN)
            rows, _ = evaluate_grid(encoder, Checkpoint("minilm", "minilm"), task, data, spec, Path(cache))
            return {r["metric"]: r["score"] for r in rows if "layer" not in r}
        encode = run(("fp32",))["encode_seconds"]  # the first call encodes every layer once
        return encode, {p: statistics.median(run((p,))["grid_eval_seconds"] for _ in range(repeats))
                        for p in COMPRESSIONS if p in task.meta.precisions}


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=None, help="a slice of STS-B test (default: all 1,379)")
    parser.add_argument("--task", default="stsb", choices=("stsb", "scifact"))
    parser.add_argument("--no-naive", action="store_true", help="skip (c), the re-encode per cell")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_QUIET", "1")
    torch.manual_seed(0)
    task = TASKS.get(args.task)
    data_dir = resolve_data_dir(args.data_dir)
    data = load_stsb(data_dir, "test").head(args.pairs) if args.task == "stsb" else task.load(data_dir, SPEC)
    text_sets = list(task.texts(data, replace(SPEC, max_doc_len=DEFAULT_DOC_LEN)).values())
    texts = [t for items, _ in text_sets for t in items]
    encoder = Encoder.named("minilm", device="cpu")
    plain_encode(encoder, texts[:64])  # warm-up
    one = timed(lambda: [plain_encode(encoder, items, max_length=n) for items, n in text_sets], args.repeats)
    cells = len(grid(6, 384, SPEC))
    print(f"{args.task}: {len(texts)} texts, all-MiniLM-L6-v2 on {torch.get_num_threads()} CPU threads, {cells} cells "
          f"(every layer x {SPEC.dims or 'default dims'})")
    print(f"one full-size encode (last layer only):   {one:7.2f} s   1.00x")
    if args.task == "stsb":
        whole = timed(lambda: evaluate_grid(encoder, Checkpoint("minilm", "minilm"), task, data, SPEC), args.repeats)
        print(f"whole grid from one all-layer pass:       {whole:7.2f} s   {whole / one:.2f}x   (goal <= 1.10x)")
        if not args.no_naive:
            naive = naive_grid(task, data, texts)
            print(f"naive: re-encode per cell (truncated):    {naive:7.2f} s   {naive / one:.2f}x")
    encode, costs = scoring_costs(encoder, task, data, args.repeats)
    print(f"all-layer pass ({encode:.2f} s), then scoring the {len(MINILM_DIMS) * 6} cells of the default suite's grid "
          f"(dims {','.join(map(str, MINILM_DIMS))}), one precision at a time:")
    for precision, seconds in costs.items():
        print(f"  {precision:<20} score {seconds:7.2f} s   {seconds / one:5.2f}x one encode")
    before = sum(costs[p] for p in ("fp32", "int8", "binary"))
    print(f"pass + scoring at fp32,int8,binary:           {(encode + before) / one:5.2f}x one encode")
    print(f"pass + scoring at all {len(costs)} precisions:           {(encode + sum(costs.values())) / one:5.2f}x one encode")
    no_pq = sum(s for p, s in costs.items() if not p.startswith("pq"))
    print(f"pass + scoring at all but pq (k-means per cell): {(encode + no_pq) / one:5.2f}x one encode")

if __name__ == "__main__":
    main()
