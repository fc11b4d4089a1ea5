"""One committed STS cell's 95% interval resampling pairs (as if independent) and resampling sentences: the
before/after the notes quote. Results written before sentence identities were stored get them from the task's
own loader (the same pairs in the same order: checked against the stored gold).

    .venv/bin/python benchmarks/sentence_intervals.py [--method starbucks-srl] [--task sickr] [--size 3,64]
        [--precision fp32] [--backbone minilm] [--results-dir results] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from bench.report.significance import method_cell_values
from bench.results import load_results
from bench.spec import EvalSpec
from bench.stats import (
    N_BOOT,
    PAIRS,
    Resampling,
    bootstrap_distribution,
    pair_resampling,
    percentile_ci,
    spearman_statistic,
)
from bench.tasks import TASKS


def sentence_ids(task: str, data_dir: Path, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's two sentences, as a run stores them today, from the task's loader."""
    sts = TASKS.get(task)
    stored = sts.gold(sts.load(data_dir, EvalSpec()))
    if not np.allclose(stored["gold"], gold, atol=1e-5):  # the files store float32
        raise SystemExit(f"the {task} pairs loaded from {data_dir} are not the ones the results scored")
    return stored["left_sentence"], stored["right_sentence"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="starbucks-srl")
    parser.add_argument("--task", default="sickr")
    parser.add_argument("--size", default="3,64", help="layer,dim")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BENCH_DATA_DIR", "../shared/data")))
    args = parser.parse_args()
    layer, dim = (int(x) for x in args.size.split(","))
    frame = load_results(args.results_dir, examples=True)
    entry = method_cell_values(frame, args.backbone, args.method).get((args.task, layer, dim,
                                                                                  args.precision))
    if not isinstance(entry, tuple):
        raise SystemExit(f"no per-example values for that cell: {entry}")
    values, gold, _ = entry
    left, right = sentence_ids(args.task, args.data_dir, gold)
    statistic = spearman_statistic(gold)
    sentences = pair_resampling(left, right, len(gold))
    print(f"{args.method} {args.task} ({layer},{dim}) {args.precision}, {values.shape[0]} seed(s), {len(gold)} pairs "
          f"over {int(max(left.max(), right.max())) + 1} distinct sentences; Spearman x100 95% intervals:")
    variances = []
    for label, resampling, n_boot in (("pairs, 1,000 resamples (before)", Resampling(PAIRS, len(gold)), 1000),
                                      ("pairs, 10,000 resamples", Resampling(PAIRS, len(gold)), N_BOOT),
                                      (f"{sentences.kind}, 10,000 resamples (after)", sentences, N_BOOT)):
        # as bench.report.significance.cell_statistics: the mean over seeds of each resample's statistic
        dist = np.mean([bootstrap_distribution(v, statistic, n_boot, resampling=resampling) for v in values], axis=0)
        low, high = percentile_ci(dist)
        variances.append(np.nanvar(dist))
        print(f"  {label}: [{low:.2f}, {high:.2f}], width {high - low:.2f}")
    # the candidate of benchmarks/bootstrap_coverage.py: the sentence bootstrap's variance less twice the pairs'
    corrected = 2 * 1.96 * np.sqrt(max(variances[2] - 2 * variances[1], variances[1]))
    print(f"  (candidate, not computed by bench.stats: a normal interval of variance sentences - 2 x pairs: width "
          f"{corrected:.2f})")


if __name__ == "__main__":
    main()
