"""How sure is a number, as pure statistics on arrays and frames: bootstrap distributions and confidence intervals,
paired tests between two methods on the same examples, the two-level (seeds, then examples) bootstrap and
Benjamini-Hochberg q-values. No files and no prose: bench/report/significance.py reads the stored per-example values
(pair similarities for STS, per-query metrics for retrieval) into every cell's statistics with these functions, and
bench/report/notes.py words them under the tables.

Why by hand rather than calling scipy.stats.bootstrap / permutation_test per cell: a report has hundreds of cells,
and scipy resamples examples independently where STS pairs share sentences (`Resampling`). A resample is held as
per-example *counts* (how often each example was drawn, or a pair's weight under the sentence bootstrap), so a mean
is one matrix product and a Spearman correlation is a weighted correlation of ranks computed in O(n) from one sort
of the original values, instead of re-sorting every resample; a task's cells are scored chunk by chunk of resamples
together (`bootstrap_distributions`), so the gold's ranks are computed once per chunk. tests/test_stats.py and
tests/test_stats_sentences.py check them against scipy on the same resamples.

Two sources of chance. The per-example intervals and tests treat the examples (pairs, queries) as the random
draw and the trained checkpoints as fixed: with several seeds, a cell's statistic is the mean over seeds, resampled
with the same examples for every seed. With two or more seeds the two-level bootstrap resamples the seeds too
(seeds, then examples), so its intervals and tests also count how much another training run would move the score.
A table marks many cells at once: its marks are Benjamini-Hochberg q-values (false discovery rate) over the family
of tests the table shows, never per-cell p-values.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import false_discovery_control

from bench import BenchError

# The names tables print; a reader must be able to look the test up by this name.
PAIRED_BOOTSTRAP = "paired bootstrap test"
SIGN_FLIP = "paired sign-flip permutation test"
TWO_LEVEL = "two-level bootstrap test (seeds, then examples)"
BH = "Benjamini-Hochberg"
N_BOOT = 10_000  # resamples of every interval and test (p floor 1 / 10,001), as the sign-flip test's permutations
_CHUNK_ELEMENTS = 500_000  # resample rows are drawn in chunks of about this many counts (memory and cache bound)
_CACHED_ELEMENTS = 10_000_000  # resamples up to this size are kept for the next cell of the task (80 MB)
_PREPARED_BYTES = 16 * _CACHED_ELEMENTS  # the gold's part of Spearman on those resamples (two floats per count)
# How a bootstrap replicate draws the examples, as notes name it: STS pairs or retrieval queries independently, or
# the distinct sentences of an STS set whose pairs share them
PAIRS, QUERIES, SENTENCES = "pairs", "queries", "sentences"

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (per-example values, counts (B, n)) -> (B,)


def resample_counts(n: int, n_boot: int, seed: int) -> tuple[np.ndarray, ...]:
    """Bootstrap resamples of n examples as count matrices (rows sum to n), in chunks of rows.

    The indices are drawn exactly as scipy.stats.bootstrap draws them (`rng.integers(0, n, (B, n))` from
    `default_rng(seed)`; chunked draws continue the same stream), so a test can compare on the same resamples.
    Every cell of a task shares them (and so the gold ranks): the last result is kept.
    """
    return _resample_counts(n, n_boot, seed)


@functools.lru_cache(maxsize=1)
def _resample_counts(n: int, n_boot: int, seed: int) -> tuple[np.ndarray, ...]:
    return tuple(_draw_counts(n, n_boot, seed))


def _draw_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        idx = rng.integers(0, n, (b, n))
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)
        counts.flags.writeable = False  # shared between cells
        yield counts


@dataclass(frozen=True, eq=False)
class Resampling:
    """What a bootstrap replicate draws, for n examples. PAIRS or QUERIES: the examples, independently.
    SENTENCES (STS sets whose pairs share sentences): the distinct sentences, with replacement; a pair then counts
    as often as the product of its two sentences' counts (the vertex bootstrap of dyadic data: Snijders & Borgatti
    1999, "Non-parametric standard errors and tests for network statistics"). Pairs that share a sentence share its
    random effect, so drawing them as independent understates the variance (tests/test_stats_sentences.py
    simulates it); drawing the sentences keeps each sentence's pairs together."""

    kind: str
    n: int
    left: np.ndarray | None = None  # SENTENCES: each pair's two sentences, indices 0..m-1
    right: np.ndarray | None = None
    fallback: str = ""  # why examples are drawn independently where their identities would allow better

    def chunks(self, n_boot: int, seed: int) -> Iterable[np.ndarray]:
        """Weights (b, n) per chunk of resamples: how often each example counts in each."""
        if self.kind != SENTENCES:
            return resample_counts(self.n, n_boot, seed) if self.n * n_boot <= _CACHED_ELEMENTS else \
                _draw_counts(self.n, n_boot, seed)
        m = int(max(self.left.max(), self.right.max())) + 1
        return (c[:, self.left] * c[:, self.right] for c in _draw_counts(m, n_boot, seed))

    def key(self) -> tuple:
        """Equal keys: the same resamples."""
        ids = b"" if self.left is None else self.left.tobytes() + b"|" + self.right.tobytes()
        return self.kind, self.n, ids

    def label(self) -> str:
        return self.kind + (f" ({self.fallback})" if self.fallback else "")


def pair_resampling(left: np.ndarray | None, right: np.ndarray | None, n: int) -> Resampling:
    """STS: the sentence bootstrap where pairs share a sentence (identity: stored per pair), else the pairs."""
    if left is None or right is None:
        return Resampling(PAIRS, n, fallback="no sentence identities stored: a run from before they were")
    _, index = np.unique(np.r_[left, right], return_inverse=True)
    if index.max() + 1 == 2 * n:
        return Resampling(PAIRS, n)  # every sentence in one pair only: the pairs are the independent units
    return Resampling(SENTENCES, n, index[:n], index[n:])


def mean_statistic(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The weighted mean of per-example values (retrieval: the score is the mean over queries)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a sentence resample may weigh every example 0: NaN
        return counts @ values / counts.sum(axis=1)


def weighted_ranks(x: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (scipy.stats.rankdata 'average', 1-based) each original example would get inside each resample,
    where example i occurs counts[:, i] times, and per resample the tie term sum(t^3 - t) over its groups of equal
    values (copies of one example tie too)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    distinct = len(starts) == len(x)
    in_group = counts[:, order] if distinct else np.add.reduceat(counts[:, order], starts, axis=1)
    group_rank = np.cumsum(in_group, axis=1) - (in_group - 1) / 2
    ranks = np.empty_like(counts)
    if not distinct:  # back from groups to their members
        group_rank = group_rank[:, np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(x)]))]
    ranks[:, order] = group_rank
    return ranks, (in_group ** 3 - in_group).sum(axis=1)


def _tie_groups(x: np.ndarray) -> sparse.csr_matrix:
    """(groups, n): row g sums the examples of the g-th smallest distinct value of x."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    return sparse.csr_matrix((np.ones(len(x)), (group, order)), shape=(group[-1] + 1, len(x)))


def _prepare_gold(gold: np.ndarray, counts: np.ndarray) -> dict:
    """Per chunk of resamples, what every cell's Spearman needs of the gold: weights and weight x gold rank
    side by side as (n, 2b) (so one sparse product sums both per tie group of a cell), and the gold's tie term."""
    gold_ranks, gold_ties = weighted_ranks(gold, counts)
    b = len(counts)
    both = np.empty((counts.shape[1], 2 * b))
    both[:, :b], both[:, b:] = counts.T, (counts * gold_ranks).T
    return dict(both=both, b=b, n=counts.sum(axis=1), gold_ties=gold_ties, weighted_gold=both[:, b:].sum(axis=0))


def _spearman(groups: sparse.csr_matrix, gold: dict) -> np.ndarray:
    """Spearman x100 per resample: Pearson of average ranks. Per tie group of the values (in order): its weight w
    and the sum g of its members' weight x gold rank; the group's average rank is cumsum(w) - (w - 1) / 2, so
    sum(weight x rank x gold rank) = sum(rank_group x g). The ranks average (N + 1) / 2 and their sum of squared
    deviations is (N^3 - N - ties) / 12 (N: the resample's size), so one weighted product is left."""
    summed = groups @ gold["both"]
    b, n = gold["b"], gold["n"]
    w, g = summed[:, :b], summed[:, b:]
    cross = np.einsum("kb,kb->b", np.cumsum(w, axis=0), g) - (np.einsum("kb,kb->b", w, g) - gold["weighted_gold"]) / 2
    ties = np.einsum("kb,kb,kb->b", w, w, w) - n
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of one repeated value has no correlation: NaN
        return 1200 * (cross - n * ((n + 1) / 2) ** 2) / np.sqrt((n ** 3 - n - ties) * (n ** 3 - n - gold["gold_ties"]))


def spearman_statistic(gold: np.ndarray) -> Statistic:
    """Spearman x100 between similarities and gold on each resample of pairs (STS). Values are (n,) or
    (seeds, n); with several seeds the statistic is the mean of their correlations."""
    gold = np.asarray(gold, dtype=float)
    prepared: dict[int, tuple] = {}  # per counts object: both sides of a paired test, and every cell of a task,
    # score the same resamples, so the gold's part is computed once per chunk (held up to _PREPARED_BYTES: a
    # task's cached resamples, or the chunk that `bootstrap_distributions` scores every cell on)
    groups: dict[bytes, sparse.csr_matrix] = {}  # per values array (by content): its tie groups, for every chunk

    def statistic(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        hit = prepared.get(id(counts))
        if hit is None or hit[0] is not counts:  # the held counts object keeps its id from being reused
            if sum(entry[1]["both"].nbytes for entry in prepared.values()) + 2 * counts.nbytes > _PREPARED_BYTES:
                prepared.clear()
            hit = prepared[id(counts)] = (counts, _prepare_gold(gold, counts))
        out = []
        for row in np.atleast_2d(values):
            key = hashlib.blake2b(np.ascontiguousarray(row).data, digest_size=16).digest()
            if key not in groups:
                if len(groups) >= 1024:
                    groups.clear()
                groups[key] = _tie_groups(row)
            out.append(_spearman(groups[key], hit[1]))
        return np.mean(out, axis=0)
    return statistic


def point_estimate(values: np.ndarray, statistic: Statistic) -> float:
    """The statistic on the data itself (every example once): the score the run reported."""
    return float(statistic(values, _every_example_once(values.shape[-1]))[0])


@functools.lru_cache(maxsize=1)
def _every_example_once(n: int) -> np.ndarray:
    ones = np.ones((1, n))
    ones.flags.writeable = False
    return ones


def bootstrap_distribution(values: np.ndarray, statistic: Statistic, n_boot: int = N_BOOT, seed: int = 0,
                           resampling: Resampling | None = None) -> np.ndarray:
    """The statistic on each of n_boot resamples of the examples (last axis; default: drawn independently); the
    same seed and resampling give the same resamples, so two distributions of one task subtract into a paired one."""
    return bootstrap_distributions([values], statistic, n_boot, seed, resampling)[0]


def bootstrap_distributions(values: list[np.ndarray], statistic: Statistic, n_boot: int = N_BOOT, seed: int = 0,
                            resampling: Resampling | None = None) -> list[np.ndarray]:
    """`bootstrap_distribution` of several value arrays of one task on the same resamples, each chunk of
    resamples drawn once and scored for all of them (what a task's cells share is computed once per chunk)."""
    values = [np.asarray(v, dtype=float) for v in values]
    n = values[0].shape[-1]
    if n < 2:
        raise BenchError("a bootstrap needs at least 2 examples; evaluate on more pairs or queries")
    out: list[list[np.ndarray]] = [[] for _ in values]
    for counts in (resampling or Resampling(PAIRS, n)).chunks(n_boot, seed):
        for parts, v in zip(out, values):
            parts.append(statistic(v, counts))
    return [np.concatenate(parts) for parts in out]


def percentile_ci(distribution: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    if np.isnan(distribution).all():  # an undefined statistic (constant similarities): no interval
        return np.nan, np.nan
    low, high = np.nanquantile(distribution, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(per_example: np.ndarray, statistic: Statistic = mean_statistic, n_boot: int = N_BOOT, seed: int = 0,
                 alpha: float = 0.05, resampling: Resampling | None = None) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of the statistic, resampling examples (last axis)."""
    return percentile_ci(bootstrap_distribution(per_example, statistic, n_boot, seed, resampling), alpha)


@dataclass(frozen=True)
class PairedResult:
    delta: float  # statistic(a) - statistic(b) on the data
    p_value: float  # two-sided
    test: str  # PAIRED_BOOTSTRAP or SIGN_FLIP, as tables print it
    resamples: int


def _check_paired(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise BenchError(f"a paired test needs the same examples on both sides, got {a.shape[-1]} and "
                         f"{b.shape[-1]}; evaluate both methods with the same task slice (max_pairs / max_queries)")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, statistic: Statistic, n_boot: int = N_BOOT, seed: int = 0,
                     resampling: Resampling | None = None) -> PairedResult:
    """Paired bootstrap test of statistic(a) - statistic(b): both sides use the same resampled examples; the null
    distribution is the bootstrap distribution of the difference shifted to mean zero (Efron & Tibshirani 1993,
    ch. 16), so p = (1 + #{|delta_b - delta| >= |delta|}) / (1 + B)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    _check_paired(a, b)
    delta = point_estimate(a, statistic) - point_estimate(b, statistic)
    dist_a, dist_b = bootstrap_distributions([a, b], statistic, n_boot, seed, resampling)
    return paired_bootstrap_result(delta, dist_a - dist_b)


def paired_bootstrap_result(delta: float, deltas: np.ndarray) -> PairedResult:
    """The test from the observed difference and its bootstrap distribution (both sides on the same resamples)."""
    deltas = deltas[~np.isnan(deltas)]
    extreme = np.abs(deltas - delta) >= abs(delta) * (1 - 1e-9)  # relative slack: equal up to float noise counts
    return PairedResult(delta, float((1 + extreme.sum()) / (1 + len(deltas))), PAIRED_BOOTSTRAP, len(deltas))


def paired_sign_flip(a: np.ndarray, b: np.ndarray, n_perm: int = 10000, seed: int = 0) -> PairedResult:
    """Paired permutation test of mean(a - b): under the null each example's two values are exchangeable, so the
    sign of each difference is flipped at random; p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + n_perm)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    _check_paired(a, b)
    d = a - b
    delta = float(d.mean())
    rng = np.random.default_rng(seed)
    rows = max(1, 2_000_000 // len(d))
    extreme = 0
    for start in range(0, n_perm, rows):
        signs = rng.choice([-1.0, 1.0], size=(min(rows, n_perm - start), len(d)))
        extreme += int((np.abs(signs @ d / len(d)) >= abs(delta) * (1 - 1e-9)).sum())
    return PairedResult(delta, (1 + extreme) / (1 + n_perm), SIGN_FLIP, n_perm)


def paired_test(a: np.ndarray, b: np.ndarray, gold: np.ndarray | None = None, n_boot: int = N_BOOT,
                n_perm: int = 10000, seed: int = 0, resampling: Resampling | None = None) -> PairedResult:
    """The test tables use: with gold (STS) a paired bootstrap of the Spearman difference over resampled pairs or
    sentences (`resampling`; Spearman is not a mean over pairs, so signs cannot be flipped); without, a sign-flip
    test of per-query means."""
    if gold is not None:
        return paired_bootstrap(a, b, spearman_statistic(gold), n_boot, seed, resampling)
    return paired_sign_flip(np.mean(np.atleast_2d(a), axis=0), np.mean(np.atleast_2d(b), axis=0), n_perm, seed)


# ---- seeds: a two-level bootstrap ----

def two_level_distribution(per_seed: np.ndarray, seed: int = 0, stream: int = 1) -> np.ndarray:
    """Resample seeds, then examples: per_seed (S, B) holds each seed's statistic on example resample b (the same
    resamples for every seed: seeds and examples are crossed, every seed scores the same examples); replicate b
    draws S seeds with replacement (`default_rng([seed, stream])`) and averages their statistics on resample b.
    With S = 1 it is the per-example distribution.

    Few seeds: the mean of S values drawn with replacement from S values varies by (S - 1) / S x s^2 / S (s^2: their
    sample variance, ddof 1), not the s^2 / S an unbiased estimate gives (Efron & Tibshirani 1993, "An Introduction
    to the Bootstrap": the ideal bootstrap standard error of a mean is sqrt((n - 1) / n) s / sqrt(n)); 2 seeds would
    show half the seed variance, 3 two thirds. So each replicate's deviation from the mean over all seeds (on the
    same example resample) is scaled by sqrt(S / (S - 1)), the rescaling of Rao & Wu (1988, JASA 83: 231-241) for
    few sampled units, which restores s^2 / S. Chosen over leaving the marks to the per-example test below 3 seeds:
    that test holds the seeds fixed, which understates the variance more. With 2 seeds the replicates still take
    only 3 values per example resample: such marks say the difference held on both seeds, with the right spread."""
    s, b = per_seed.shape
    picks = np.random.default_rng([seed, stream]).integers(0, s, (b, s))
    drawn = per_seed[picks, np.arange(b)[:, None]].mean(axis=1)
    if s == 1:
        return drawn
    center = per_seed.mean(axis=0)
    return center + np.sqrt(s / (s - 1)) * (drawn - center)


def two_level_test(a: np.ndarray, b: np.ndarray, statistic: Statistic, n_boot: int = N_BOOT, seed: int = 0,
                   resampling: Resampling | None = None) -> PairedResult:
    """Paired over examples, independent over seeds: a (S_a, n) and b (S_b, n) per-example values of two methods
    on the same examples; each replicate draws each side's seeds with replacement (independent streams: seed s of
    one method is not paired with seed s of the other) and one example resample shared by both sides. The null is
    the shifted bootstrap distribution, as in `paired_bootstrap`."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    _check_paired(a, b)
    dists = bootstrap_distributions([*a, *b], statistic, n_boot, seed, resampling)
    dist_a, dist_b = np.vstack(dists[:len(a)]), np.vstack(dists[len(a):])
    delta = np.mean([point_estimate(v, statistic) for v in a]) - np.mean([point_estimate(v, statistic) for v in b])
    return two_level_result(float(delta), dist_a, dist_b, seed)


def two_level_result(delta: float, per_seed_a: np.ndarray, per_seed_b: np.ndarray, seed: int = 0) -> PairedResult:
    deltas = two_level_distribution(per_seed_a, seed, 1) - two_level_distribution(per_seed_b, seed, 2)
    return replace(paired_bootstrap_result(delta, deltas), test=TWO_LEVEL)


# ---- multiple comparisons ----

def benjamini_hochberg(stats: pd.DataFrame, family: pd.Series | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """q-values (scipy.stats.false_discovery_control, Benjamini-Hochberg) of the marking p-values within each
    family of tests, and `significant` = q < alpha: the false discovery rate over a family's marks is at most alpha.
    The marking p-value of a cell is its seed-aware test's where it has one (`marking_p`), else its per-example
    test's. `family`: a label per row (default: one family per backbone x precision); `family` and `n_tests` say
    what each q was adjusted over."""
    out = stats.copy()
    if family is None:
        family = out["backbone"] + " " + out["precision"]
    p = marking_p(out)
    tested = p.notna()
    out["family"] = pd.Series(family, index=out.index).where(tested, "")
    out["q_value"] = np.nan
    out["n_tests"] = 0
    for _, index in out[tested].groupby("family").groups.items():
        out.loc[index, "q_value"] = false_discovery_control(p[index].to_numpy(), method="bh")
        out.loc[index, "n_tests"] = len(index)
    out["significant"] = (out["q_value"] < alpha).to_numpy()
    return out


def marking_p(stats: pd.DataFrame) -> pd.Series:
    """The p-value a mark is decided on: the seed-aware test where the cell or its reference has several seeds
    (does the difference hold across training runs?), else the per-example test."""
    return stats["seed_p_value"].where(stats["seed_p_value"].notna(), stats["p_value"])


def marking_test(row) -> str:
    return row.seed_test or row.test
