"""Coverage of the 95% bootstrap interval of a mean over STS-like pairs that reuse sentences heavily: resampling the
pairs as if independent (the pair bootstrap) against resampling the distinct sentences (bench.stats.Resampling,
SENTENCES). tests/test_stats_sentences.py asserts the same figures; this prints them for the notes.

Each simulated dataset: `sentences` sentences with a random effect u ~ N(0, 1); `pairs` pairs of two different
sentences drawn at random (each sentence in about 2 x pairs / sentences pairs, as SICK-R's busiest ones); a pair's
value u_left + u_right + e, e ~ N(0, 1). The true mean is 0: coverage is the share of datasets whose interval
holds 0. With 400 sentences instead of 40 (light reuse) it shows the other side: the sentence bootstrap's product
weights vary more than a pair's own draw would (variance 3, not 1), so where few sentences are shared its
intervals are wider than needed (conservative; Owen 2007, "The pigeonhole bootstrap", shows the same for
crossed designs).

    .venv/bin/python benchmarks/bootstrap_coverage.py [--datasets 200] [--resamples 500]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.stats import (
    PAIRS,
    SENTENCES,
    Resampling,
    bootstrap_distribution,
    mean_statistic,
    pair_resampling,
    percentile_ci,
)


def dataset(rng: np.random.Generator, sentences: int, pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair values and each pair's two sentences (always two different ones)."""
    effect = rng.normal(size=sentences)
    left = rng.integers(0, sentences, pairs)
    right = (left + rng.integers(1, sentences, pairs)) % sentences
    return effect[left] + effect[right] + rng.normal(size=pairs), left, right


CORRECTED = "sentences, variance-corrected"  # not what bench.stats does: a candidate, printed for comparison


def coverage(datasets: int = 200, resamples: int = 500, sentences: int = 40, pairs: int = 200,
             seed: int = 0) -> dict[str, float]:
    """Share of simulated datasets whose 95% interval of the mean holds the true mean 0: percentile intervals
    resampling pairs and resampling sentences (bench.stats), and CORRECTED, a normal interval whose variance is the
    sentence bootstrap's minus twice the pair bootstrap's (floored at the latter): under pair = sentence effects +
    noise, the product weights count each pair's own variance 3 times (E[c^2]^2 - 1 = 3) where the truth counts it
    once, so they overshoot by twice the pair bootstrap's variance (as two-way cluster-robust variances subtract
    the double-counted part: Cameron, Gelbach & Miller 2011)."""
    rng = np.random.default_rng(seed)
    held = {PAIRS: 0, SENTENCES: 0, CORRECTED: 0}
    for k in range(datasets):
        values, left, right = dataset(rng, sentences, pairs)
        by_pairs, by_sentences = (bootstrap_distribution(values, mean_statistic, resamples, k, resampling)
                                  for resampling in (Resampling(PAIRS, pairs), pair_resampling(left, right, pairs)))
        for kind, distribution in ((PAIRS, by_pairs), (SENTENCES, by_sentences)):
            low, high = percentile_ci(distribution)
            held[kind] += low <= 0 <= high
        variance = max(np.nanvar(by_sentences) - 2 * by_pairs.var(), by_pairs.var())
        held[CORRECTED] += abs(values.mean()) <= 1.96 * np.sqrt(variance)
    return {kind: n / datasets for kind, n in held.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=500)
    args = parser.parse_args()
    print(f"coverage of the 95% interval of the mean, {args.datasets} simulated datasets of 200 pairs, "
          f"{args.resamples} resamples each:")
    # heavy reuse (each sentence in about 10 pairs), then light reuse (about 1 pair per sentence): the product of
    # counts weighs a pair with variance 3 where 1 would do, so there the sentence bootstrap is conservative
    for sentences in (40, 400):
        result = coverage(args.datasets, args.resamples, sentences=sentences)
        print(f"  {sentences} sentences: " + ", ".join(f"resampling {kind} {100 * share:.1f}%"
                                                        for kind, share in result.items()))
    print(f"  ({CORRECTED}: a candidate normal interval, not what bench.stats computes)")


if __name__ == "__main__":
    main()
