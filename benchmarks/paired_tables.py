"""Paired tests of chosen methods against one reference method, from committed results alone (no run): the tables
the closing notes of the post-hoc heads (issue 14) and the trained precision/ESE methods (issue 15) quote.

Per (task, size on the diagonal): the method's main metric, its difference from the reference on the same examples,
the two-sided paired test bench/report/significance.py runs (paired bootstrap of Spearman for STS, sign-flip
permutation of the per-query nDCG@10 for retrieval) and a Benjamini-Hochberg q-value over the tests of the printed
table (one table per precision). Single-seed runs: the tests hold the trained checkpoints fixed (see bench/stats.py).

    .venv/bin/python benchmarks/paired_tables.py --reference pretrained --methods pca,matryoshka-adaptor,bebr \
        --precisions fp32,binary [--results-dir results] [--backbone minilm]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy.stats import false_discovery_control

from bench.report.significance import cell_statistics
from bench.results import load_results
from bench.suites import MINILM_DIAGONAL


def paired_table(stats: pd.DataFrame, methods: list[str], precision: str) -> str:
    part = stats[(stats["precision"] == precision) & stats["method"].isin(methods)].copy()
    tested = part["p_value"].notna()
    part["q"] = float("nan")
    if tested.any():
        part.loc[tested, "q"] = false_discovery_control(part.loc[tested, "p_value"].to_numpy())
    sizes = sorted({(int(l), int(d)) for l, d in zip(part["layer"], part["dim"])})
    lines = ["| Method | Task | " + " | ".join(f"({l}, {d})" for l, d in sizes) + " |",
             "|:---|:---|" + "---:|" * len(sizes)]
    for (method, task), group in part.groupby(["method", "task"], sort=False):
        by_size = {(int(r.layer), int(r.dim)): r for r in group.itertuples()}
        cells = []
        for size in sizes:
            r = by_size.get(size)
            if r is None:
                cells.append("")
            elif r.method == r.reference:
                cells.append(f"{r.score:.1f}")
            elif pd.isna(r.p_value):
                cells.append(f"{r.score:.1f} (untested: {r.reason})")
            else:
                star = "*" if r.q < 0.05 else ""
                cells.append(f"{r.score:.1f} ({r.delta:+.1f}, q={r.q:.3f}{star})")
        lines.append(f"| {method} | {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--reference", required=True)
    parser.add_argument("--methods", required=True, help="comma list")
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--backbone", default="minilm")
    args = parser.parse_args()
    methods = args.methods.split(",")
    frame = load_results(args.results_dir, examples=True)
    stats = cell_statistics(frame, reference=args.reference, sizes=MINILM_DIAGONAL)
    stats = stats[stats["backbone"] == args.backbone]
    order = {m: i for i, m in enumerate(methods)}
    stats = stats.assign(_order=stats["method"].map(order)).sort_values(["_order", "task", "layer"], kind="mergesort")
    for precision in args.precisions.split(","):
        print(f"\n{precision}: score (difference from {args.reference}, BH q over this table; * q < 0.05)\n")
        print(paired_table(stats, methods, precision))


if __name__ == "__main__":
    main()
