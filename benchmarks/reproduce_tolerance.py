"""How far the reference suite's rows move between runs that should agree, against `bench reproduce`'s tolerances.

A correctness measurement, not a timing: the reference suite (bench/reproduce.py `reference_specs`, training
included, each run with a fresh cache) is rerun under conditions that change float summation but not the
experiment, and every row is compared with the base run (2 threads, the suite's own batches):
- threads-1, threads-4: torch, OpenMP and MKL thread counts (how reductions and GEMMs split their work);
- eval-batch-16, eval-batch-100: other evaluation batch sizes (other padding, other GEMM shapes);
- split-encode: every text set encoded as two interleaved halves, each sorted by length (every batch holds other
  texts next to each other).
Training batches, data order and seeds are the spec's and stay as they are. Each variant runs in its own process.
Prints, per metric and precision (training rows together, relative to the row), the largest change, where it was,
the tolerance now in bench/drift.py, and the tolerance the measurement suggests (MARGIN x the largest change,
one significant digit up; a quantized row never below its fp32 row; a row that never moved gets its fp32
tolerance); then, for the base run, how far apart every pair of training methods is in units of tolerance.

    nice -n 10 .venv/bin/python benchmarks/reproduce_tolerance.py --data-dir ../shared/data
        [--variants threads-1,threads-4,eval-batch-16,eval-batch-100,split-encode] [--methods full,mrl,...]
        [--out DIR]  (keeps every variant's results there; default: a temporary folder)
        [--base results]  (compare with the committed reference instead of rerunning the base: one run fewer)
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.drift import EXACT_METRICS, MARGIN, is_quality, method_pairs, tolerance
from bench.reproduce import reference_specs, rerun
from bench.results import load_results

BASE = "threads-2"
VARIANTS = ("threads-1", "threads-4", "eval-batch-16", "eval-batch-100", "split-encode")
KEY = ["method", "task", "layer", "dim", "precision", "split", "metric", "step"]  # not run_id: batch sizes change it
TRAINING = ("training rows", "relative")


def threads(variant: str) -> int:
    return int(variant.split("-")[1]) if variant.startswith("threads-") else 2


def run_variant(variant: str, methods: tuple[str, ...] | None, data_dir: Path, out: Path) -> None:
    """In this process: the reference specs under one variant, into out."""
    import torch

    torch.set_num_threads(threads(variant))
    specs = reference_specs(methods)
    if variant.startswith("eval-batch-"):
        size = int(variant.rsplit("-", 1)[1])
        specs = [replace(s, eval=replace(s.eval, batch_size=size)) for s in specs]
    if variant == "split-encode":
        _encode_in_two_halves()
    rerun(specs, data_dir, out, "cpu")


def _encode_in_two_halves() -> None:
    """Patch Encoder.encode: texts 0, 2, 4, ... and 1, 3, 5, ... are encoded separately, then interleaved."""
    from bench.encoder import Encoded, Encoder

    original = Encoder.encode

    def encode(self, texts, batch_size=64, *, out_path=None, desc="encode", layers=None, max_dim=None, out=None):
        halves = [np.arange(0, len(texts), 2), np.arange(1, len(texts), 2)]
        parts = [original(self, replace(texts, items=[texts.items[i] for i in half]), batch_size, desc=desc,
                          layers=layers, max_dim=max_dim) for half in halves if len(half)]
        result = np.empty(parts[0].vectors.shape[:1] + (len(texts),) + parts[0].vectors.shape[2:],
                          dtype=parts[0].vectors.dtype)
        for half, part in zip(halves, parts):
            result[:, half] = part.vectors
        timed = [part.layer_seconds for part in parts]
        seconds = None if None in timed else np.sum(timed, axis=0).tolist()
        if out is None:
            return Encoded(result, seconds)
        out[...] = result
        return Encoded(out, seconds)

    Encoder.encode = encode


def run_all_variants(variants: list[str], methods: str | None, data_dir: Path, out: Path,
                     base: Path | None = None) -> dict[str, pd.DataFrame]:
    """Each variant's rows; the base run's too, or, given `base`, the reference runs in that folder (made with
    this machine's default threads and the suite's batches, which is what the base run is)."""
    frames = {}
    if base is not None:
        ids = {s.run_id for s in reference_specs(None if methods is None else tuple(methods.split(",")))}
        reference = load_results(base)
        frames[BASE] = reference[reference["run_id"].isin(ids)]
    for variant in ([] if base is not None else [BASE]) + variants:
        n = str(threads(variant))
        env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "BENCH_QUIET": "1"}
        command = [sys.executable, __file__, "--one", variant, "--data-dir", str(data_dir), "--out",
                   str(out / variant)] + (["--methods", methods] if methods else [])
        print(f"running {variant} ...", flush=True)
        subprocess.run(command, env=env, check=True)
        frames[variant] = load_results(out / variant)
    return frames


def group_of(metric: str, precision: str, split: str) -> tuple[str, str] | None:
    """Which tolerance a row is measured for: (metric, precision) of a quality row, TRAINING for training rows,
    (metric, "exact") for sizes and flags; None for cost rows (never compared)."""
    if tolerance(metric, precision, split) is None:
        return None
    if is_quality(metric, precision, split):
        return metric, precision
    if "bytes" in metric or metric in EXACT_METRICS:
        return metric, "exact"
    return TRAINING


def largest_changes(frames: dict[str, pd.DataFrame]) -> dict[tuple, tuple[float, str]]:
    """Per group: the largest change from the base run over every variant (training rows: relative to the base
    row), and where it was."""
    base = frames[BASE]
    worst: dict[tuple, tuple[float, str]] = defaultdict(lambda: (0.0, ""))
    for variant, frame in frames.items():
        if variant == BASE:
            continue
        both = base.merge(frame, on=KEY, suffixes=("", "_v"))
        for row in both.itertuples(index=False):
            group = group_of(row.metric, row.precision, row.split)
            if group is None:
                continue
            both_nan = math.isnan(row.score) and math.isnan(row.score_v)
            change = 0.0 if both_nan else abs(row.score_v - row.score)
            if math.isnan(change):  # NaN on one side only
                change = math.inf
            if group == TRAINING:
                change /= max(abs(row.score), 1e-12)
            if change > worst[group][0]:
                where = f"{variant}: {row.method} {row.task} l{row.layer} d{row.dim} {row.metric} step {row.step}"
                worst[group] = (change, where)
    return worst


def round_up(x: float) -> float:
    """One significant digit, up: 0.00037 -> 0.0004."""
    if x <= 0:
        return 0.0
    scale = 10 ** math.floor(math.log10(x))
    return math.ceil(round(x / scale, 6)) * scale


def suggestions(worst: dict[tuple, tuple[float, str]]) -> dict[tuple, float]:
    """MARGIN x the largest change, rounded up; quantized rows never below the same metric's fp32 suggestion, and
    a group that never moved gets that fp32 suggestion (exact groups stay 0)."""
    out = {group: round_up(MARGIN * change) for group, (change, _) in worst.items()}
    for (metric, precision) in list(out):
        if precision not in ("fp32", "exact", "relative") and (metric, "fp32") in out:
            out[(metric, precision)] = max(out[(metric, precision)], out[(metric, "fp32")])
    return out


def print_tolerances(worst: dict, suggested: dict, base: str, variants: list[str]) -> None:
    print(f"\nlargest change from {base} over {', '.join(variants)} (suggested: margin {MARGIN}x)")
    print(f"{'metric':<26} {'precision':<15} {'max |change|':>13} {'tolerance now':>16} {'suggested':>10}  where")
    for group in sorted(worst, key=lambda g: (g == TRAINING, g[1] == "exact", g)):
        metric, precision = group
        change, where = worst[group]
        now = (tolerance("loss", "fp32", "train") if group == TRAINING
               else tolerance(metric, "fp32" if precision == "exact" else precision))
        now_text = f"{now.relative:g} rel" if group == TRAINING else str(now)
        print(f"{metric:<26} {precision:<15} {change:>13.3g} {now_text:>16} {suggested[group]:>10g}  {where}")


def print_pairs(frame: pd.DataFrame) -> None:
    pairs = method_pairs(frame[frame["backbone"] == "tiny-random-bert"])
    print("\nevery pair of training methods in the base: the fp32 quality row where they differ most, in units of "
          "tolerance")
    with pd.option_context("display.width", 250, "display.max_rows", None, "display.float_format",
                           lambda v: f"{v:.4f}"):
        print(pairs.drop(columns=["backbone", "precision"]).sort_values("margin").to_string(index=False))
    print(f"{int(pairs['differs'].sum())} of {len(pairs)} pairs differ beyond tolerance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--methods", default=None, help="only these reference methods (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="keep each variant's results here")
    parser.add_argument("--base", type=Path, default=None,
                        help="compare with the reference runs in this folder (e.g. results) instead of a base run")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    methods = None if args.methods is None else tuple(args.methods.split(","))
    if args.one:
        run_variant(args.one, methods, args.data_dir.resolve(), args.out)
        return
    with tempfile.TemporaryDirectory(prefix="reproduce-tolerance-") as tmp:
        out = args.out or Path(tmp)
        frames = run_all_variants(args.variants.split(","), args.methods, args.data_dir.resolve(), out, args.base)
        worst = largest_changes(frames)
        base = f"the reference in {args.base} (2 threads)" if args.base else f"the {BASE} run"
        print_tolerances(worst, suggestions(worst), base, args.variants.split(","))
        if (frames[BASE]["backbone"] == "tiny-random-bert").any():
            print_pairs(frames[BASE])


if __name__ == "__main__":
    main()
