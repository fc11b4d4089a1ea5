"""Encode once, slice many: time of the whole layer x dim grid from one pass vs one encode vs the naive way.

    python benchmarks/grid_speed.py [--data-dir DIR] [--repeats 3] [--pairs N]

Prints, for STS-B test on the default backbone (all-MiniLM-L6-v2): (a) one plain encode at full size (last layer
only), (b) the whole grid (every layer x every dim, fp32) from one all-layer pass plus scoring, (c) the naive way:
a truly truncated model re-encodes for every cell. Goal: (b) <= 1.1x (a). Medians over --repeats (naive: once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

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
from bench.tasks import TASKS
from methods import Checkpoint

SPEC = resolve_eval(EvalSpec(precisions=("fp32",)), Backbone("minilm"))  # MiniLM's own pooling (mean)


def plain_encode(encoder: Encoder, texts: list[str], spec: EvalSpec = SPEC) -> np.ndarray:
    """What a user would do without elastic evaluation: last layer only, same batching and pooling."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), encoder.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), spec.batch_size):
            idx = order[start:start + spec.batch_size]
            batch = encoder.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=spec.max_seq_len, return_tensors="pt")
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
    args = parser.parse_args()
    os.environ.setdefault("BENCH_QUIET", "1")
    torch.manual_seed(0)
    pairs = load_stsb(resolve_data_dir(args.data_dir), "test").head(args.pairs)
    task = TASKS.get("stsb")
    texts = task.texts(pairs, SPEC)["sentences"][0]
    encoder = Encoder.named("minilm", device="cpu")
    plain_encode(encoder, texts[:64])  # warm-up
    one = timed(lambda: plain_encode(encoder, texts), args.repeats)
    whole = timed(lambda: evaluate_grid(encoder, Checkpoint("minilm", "minilm"), task, pairs, SPEC), args.repeats)
    naive = naive_grid(task, pairs, texts)
    cells = len(grid(6, 384, SPEC))
    print(f"STS-B test, {len(pairs)} pairs / {len(texts)} distinct sentences, all-MiniLM-L6-v2 on "
          f"{torch.get_num_threads()} CPU threads, {cells} cells (every layer x {SPEC.dims or 'default dims'})")
    print(f"one full-size encode (last layer only):   {one:7.2f} s   1.00x")
    print(f"whole grid from one all-layer pass:       {whole:7.2f} s   {whole / one:.2f}x   (goal <= 1.10x)")
    print(f"naive: re-encode per cell (truncated):    {naive:7.2f} s   {naive / one:.2f}x")


if __name__ == "__main__":
    main()
