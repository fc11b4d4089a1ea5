"""How sure is a number: bootstrap confidence intervals per cell and paired tests between methods, computed from
the per-example values stored beside each run (pair similarities for STS, per-query metrics for retrieval).

Why by hand rather than calling scipy.stats.bootstrap / permutation_test per cell: a report has hundreds of cells.
A resample is held as per-example *counts* (how often each example was drawn), so a mean is one matrix product and
a Spearman correlation is a weighted correlation of ranks computed in O(n) from one sort of the original values,
instead of re-sorting every resample. tests/test_stats.py checks both against scipy on the same resamples.

Two sources of chance. The per-example intervals and tests treat the examples (pairs, queries) as the random
draw and the trained checkpoints as fixed: with several seeds, a cell's statistic is the mean over seeds, resampled
with the same examples for every seed. With two or more seeds the two-level bootstrap resamples the seeds too
(seeds, then examples), so its intervals and tests also count how much another training run would move the score.
A table marks many cells at once: its marks are Benjamini-Hochberg q-values (false discovery rate) over the family
of tests the table shows, never per-cell p-values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from bench import BenchError
from bench.catalog import REFERENCE_PREFERENCE, main_rows, method_labels, pick_reference

# The names tables print; a reader must be able to look the test up by this name.
PAIRED_BOOTSTRAP = "paired bootstrap test"
SIGN_FLIP = "paired sign-flip permutation test"
TWO_LEVEL = "two-level bootstrap test (seeds, then examples)"
BH = "Benjamini-Hochberg"
_CHUNK_ELEMENTS = 2_000_000  # resample rows are drawn in chunks of about this many counts (memory bound)

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
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    chunks = []
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        idx = rng.integers(0, n, (b, n))
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)
        counts.flags.writeable = False  # shared between cells
        chunks.append(counts)
    return tuple(chunks)


def mean_statistic(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of per-example values (retrieval: the score is the mean over queries)."""
    return counts @ values / values.shape[-1]


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


def rank_correlation(ranks_a, ties_a, ranks_b, ties_b, counts: np.ndarray) -> np.ndarray:
    """Pearson correlation of average ranks, i.e. Spearman, per resample of size n: the ranks always average
    (n + 1) / 2 and their sum of squared deviations is (n^3 - n - ties) / 12, so one weighted product is left."""
    n = counts.sum(axis=1)
    centered = (counts * ranks_a * ranks_b).sum(axis=1) - n * ((n + 1) / 2) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of one repeated value has no correlation: NaN
        return 12 * centered / np.sqrt((n ** 3 - n - ties_a) * (n ** 3 - n - ties_b))


def spearman_statistic(gold: np.ndarray) -> Statistic:
    """Spearman x100 between similarities and gold on each resample of pairs (STS). Values are (n,) or
    (seeds, n); with several seeds the statistic is the mean of their correlations."""
    gold = np.asarray(gold, dtype=float)
    seen: dict[int, tuple] = {}  # gold ranks per counts object: both sides of a paired test, and every cell of a
    # task, score the same (cached) resamples

    def statistic(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        hit = seen.get(id(counts))
        if hit is None or hit[0] is not counts:
            if len(seen) >= 16:
                seen.clear()
            hit = seen[id(counts)] = (counts, weighted_ranks(gold, counts))
        rows = np.atleast_2d(values)
        return 100 * np.mean([rank_correlation(*weighted_ranks(v, counts), *hit[1], counts) for v in rows], axis=0)
    return statistic


def point_estimate(values: np.ndarray, statistic: Statistic) -> float:
    """The statistic on the data itself (every example once): the score the run reported."""
    return float(statistic(values, _every_example_once(values.shape[-1]))[0])


@functools.lru_cache(maxsize=1)
def _every_example_once(n: int) -> np.ndarray:
    ones = np.ones((1, n))
    ones.flags.writeable = False
    return ones


def bootstrap_distribution(values: np.ndarray, statistic: Statistic, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The statistic on each of n_boot resamples of the examples (last axis); the same seed and n give the same
    resamples, so two distributions of one task subtract into a paired one."""
    values = np.asarray(values, dtype=float)
    if values.shape[-1] < 2:
        raise BenchError("a bootstrap needs at least 2 examples; evaluate on more pairs or queries")
    return np.concatenate([statistic(values, c) for c in resample_counts(values.shape[-1], n_boot, seed)])


def percentile_ci(distribution: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    low, high = np.nanquantile(distribution, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(per_example: np.ndarray, statistic: Statistic = mean_statistic, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of the statistic, resampling examples (last axis)."""
    return percentile_ci(bootstrap_distribution(per_example, statistic, n_boot, seed), alpha)


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


def paired_bootstrap(a: np.ndarray, b: np.ndarray, statistic: Statistic, n_boot: int = 1000,
                     seed: int = 0) -> PairedResult:
    """Paired bootstrap test of statistic(a) - statistic(b): both sides use the same resampled examples; the null
    distribution is the bootstrap distribution of the difference shifted to mean zero (Efron & Tibshirani 1993,
    ch. 16), so p = (1 + #{|delta_b - delta| >= |delta|}) / (1 + B)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    _check_paired(a, b)
    delta = point_estimate(a, statistic) - point_estimate(b, statistic)
    deltas = bootstrap_distribution(a, statistic, n_boot, seed) - bootstrap_distribution(b, statistic, n_boot, seed)
    return paired_bootstrap_result(delta, deltas)


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
    rows = max(1, _CHUNK_ELEMENTS // len(d))
    extreme = 0
    for start in range(0, n_perm, rows):
        signs = rng.choice([-1.0, 1.0], size=(min(rows, n_perm - start), len(d)))
        extreme += int((np.abs(signs @ d / len(d)) >= abs(delta) * (1 - 1e-9)).sum())
    return PairedResult(delta, (1 + extreme) / (1 + n_perm), SIGN_FLIP, n_perm)


def paired_test(a: np.ndarray, b: np.ndarray, gold: np.ndarray | None = None, n_boot: int = 1000,
                n_perm: int = 10000, seed: int = 0) -> PairedResult:
    """The test tables use: with gold (STS) a paired bootstrap of the Spearman difference over resampled pairs
    (Spearman is not a mean over pairs, so signs cannot be flipped); without, a sign-flip test of per-query means."""
    if gold is not None:
        return paired_bootstrap(a, b, spearman_statistic(gold), n_boot, seed)
    return paired_sign_flip(np.mean(np.atleast_2d(a), axis=0), np.mean(np.atleast_2d(b), axis=0), n_perm, seed)


# ---- seeds: a two-level bootstrap ----

def two_level_distribution(per_seed: np.ndarray, seed: int = 0, stream: int = 1) -> np.ndarray:
    """Resample seeds, then examples: per_seed (S, B) holds each seed's statistic on example resample b (the same
    resamples for every seed: seeds and examples are crossed, every seed scores the same examples); replicate b
    draws S seeds with replacement (`default_rng([seed, stream])`) and averages their statistics on resample b.
    With S = 1 it is the per-example distribution. Few seeds understate the seed variance (2 seeds give only 3
    distinct draws, and a bootstrap of S values has (S - 1) / S of their variance): a lower bound, not a guess of
    what a third seed would do."""
    s, b = per_seed.shape
    picks = np.random.default_rng([seed, stream]).integers(0, s, (b, s))
    return per_seed[picks, np.arange(b)[:, None]].mean(axis=1)


def two_level_test(a: np.ndarray, b: np.ndarray, statistic: Statistic, n_boot: int = 1000,
                   seed: int = 0) -> PairedResult:
    """Paired over examples, independent over seeds: a (S_a, n) and b (S_b, n) per-example values of two methods
    on the same examples; each replicate draws each side's seeds with replacement (independent streams: seed s of
    one method is not paired with seed s of the other) and one example resample shared by both sides. The null is
    the shifted bootstrap distribution, as in `paired_bootstrap`."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    _check_paired(a, b)
    dist_a, dist_b = (np.vstack([bootstrap_distribution(v, statistic, n_boot, seed) for v in x]) for x in (a, b))
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


# ---- every cell of a results directory ----

STATS_COLUMNS = ["backbone", "method", "task", "layer", "dim", "precision", "metric", "n_seeds", "n_examples", "score",
                 "ci_low", "ci_high", "seed_ci_low", "seed_ci_high", "reference", "delta", "p_value", "test",
                 "seed_p_value", "seed_test", "family", "n_tests", "q_value", "significant", "reason"]


class _Untestable(Exception):
    """Why a cell has no interval or test (a missing or unreadable per-example file, seeds that disagree)."""


def _main_rows(results_dir: Path, method: str | None = None) -> pd.DataFrame:
    """The main-metric row of every evaluated cell of a task with per-example values (TaskMeta.no_intervals says
    why an mteb task has none), with its run's per-example file and the method label tables print (the method
    name, plus a config hash where two configs of one method claim the same cell). `method`: only its run files."""
    from bench.results import examples_path, read_run_file, result_files, run_name

    paths = [p for p in result_files(results_dir) if method is None or run_name(p).split("__")[0] == method]
    frames = [main_rows(read_run_file(path)).assign(examples=str(examples_path(path))) for path in paths]
    frames = [f[f["no_intervals"] == ""] for f in frames]  # tasks that store no per-example values (mteb's)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows["label"] = method_labels(rows)
    return rows


class _ExampleFiles:
    """Open per-example files once each; a missing or unreadable one is a reason, naming the file."""

    def __init__(self):
        self.open: dict[str, dict[str, np.ndarray]] = {}

    def get(self, path: str, key: str) -> np.ndarray:
        if path not in self.open:
            if not Path(path).exists():
                # the file's name, not its path: reports must not depend on how results_dir was spelled
                raise _Untestable(f"per-example file {Path(path).name} missing (delete its results file and rerun "
                                  "that run)")
            from bench.results import read_examples

            try:
                self.open[path] = read_examples(Path(path))
            except BenchError:  # damaged: a reason for this cell, not the end of the report
                raise _Untestable(f"per-example file {Path(path).name} unreadable (delete the run's files and rerun "
                                  "it)") from None
        if key not in self.open[path]:
            raise _Untestable("no per-example values stored for this cell (its run's example_cells leave it out)")
        return np.asarray(self.open[path][key], dtype=float)


def _cell_values(group: pd.DataFrame, files: _ExampleFiles) -> tuple[np.ndarray, np.ndarray | None]:
    """A cell's per-example values, (seeds, examples) in seed order: STS pair similarities (and the gold scores),
    retrieval the per-query metric."""
    first = group.iloc[0]
    sts = first["family"] == "sts"
    name = "similarity" if sts else first["metric"]
    key = f"{first['layer']}/{first['dim']}/{first['precision']}/{name}"
    ordered = group.sort_values("seed")["examples"]
    values = [files.get(p, key) for p in ordered]
    sizes = sorted({len(v) for v in values})
    if len(sizes) > 1:
        raise _Untestable(f"its seeds were evaluated on different numbers of examples ({sizes}); rerun them with the "
                          "same evaluation settings")
    if not sts:
        return np.vstack(values), None
    golds = [files.get(p, "gold") for p in ordered]
    if any(not np.array_equal(g, golds[0]) for g in golds):
        raise _Untestable("its seeds were scored against different gold pairs; rerun them with the same evaluation "
                          "settings")
    return np.vstack(values), golds[0]


def method_cell_values(results_dir: Path, backbone: str, label: str) -> dict[tuple, tuple | str]:
    """Per (task, layer, dim, precision) of one method label on one backbone: its per-example values (seeds,
    examples) and STS gold (None for retrieval), as `cell_statistics` reads them, or the reason it has none.
    Tasks that store no per-example values (mteb's) have no key."""
    rows = _main_rows(results_dir, label.split("@")[0])
    if rows.empty:
        return {}
    rows = rows[(rows["backbone"] == backbone) & (rows["label"] == label)]
    files = _ExampleFiles()
    out: dict[tuple, tuple | str] = {}
    for key, group in rows.groupby(["task", "layer", "dim", "precision"], sort=True):
        try:
            out[key] = _cell_values(group, files)
        except _Untestable as exc:
            out[key] = str(exc)
    return out


def _backbone_reference(labels: pd.Series, reference: str | None) -> str | None:
    if reference is not None:
        return reference if reference in set(labels) else None
    return pick_reference(labels)


def no_reference_reason(reference: str | None) -> str:
    if reference:
        return f"these runs have no results of the reference method {reference} on this backbone"
    return f"these runs have no reference method (one of {', '.join(REFERENCE_PREFERENCE)}) on this backbone"


def cell_statistics(results_dir: Path, reference: str | None = None, sizes=None, alpha: float = 0.05,
                    n_boot: int = 1000, n_perm: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per cell (method, task, layer, dim, precision) of the main metric:
    - the score (mean over seeds) and its percentile bootstrap (1 - alpha) CI over examples, seeds held fixed;
      with 2 or more seeds also the two-level CI (resample seeds, then examples: `two_level_distribution`);
    - a two-sided paired test against the reference method on the same cell and examples: PAIRED_BOOTSTRAP for
      STS Spearman, SIGN_FLIP for retrieval (`p_value`, `test`), and where the cell or its reference has 2 or
      more seeds the TWO_LEVEL test beside it (`seed_p_value`, `seed_test`);
    - Benjamini-Hochberg q-values over one family per backbone x precision (`benjamini_hochberg`; a report
      re-adjusts over the families it marks), `significant` = q < alpha;
    - `reason`: why a cell other than the reference's has no test (no reference method, a missing per-example
      file named, no reference cell there, a reference evaluated with other settings or on other examples).
    `sizes`: only these (layer, dim) cells (None: all). Deterministic: the same results give the same frame."""
    rows = _main_rows(results_dir)
    if rows.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    if sizes is not None:
        keep = {(int(l), int(d)) for l, d in sizes}
        rows = rows[[(l, d) in keep for l, d in zip(rows["layer"], rows["dim"])]]
    pick_reference(rows["label"], reference)  # an unknown reference is an error even where backbones differ
    # each backbone is compared with its own reference: cells of different backbones are never paired
    refs = {b: _backbone_reference(g["label"], reference) for b, g in rows.groupby("backbone")}
    files = _ExampleFiles()
    key_cols = ["backbone", "task", "label", "layer", "dim", "precision"]  # cells of a task share resamples
    groups = dict(list(rows.groupby(key_cols, sort=True)))
    cells, broken = {}, {}
    for key, group in groups.items():
        try:
            cells[key] = _cell_values(group, files)
        except _Untestable as exc:
            broken[key] = str(exc)
    by_gold: dict[bytes, Statistic] = {}  # the current task's statistic: its gold ranks serve all the task's cells
    boot: dict[tuple, tuple[float, np.ndarray]] = {}  # per cell: score and per-seed distributions, computed once

    def bootstrap(key: tuple) -> tuple[float, np.ndarray]:
        if key not in boot:
            values, gold = cells[key]
            if gold is not None and gold.tobytes() not in by_gold:
                by_gold.clear()  # cells come task by task: let the previous task's cached ranks go
                by_gold[gold.tobytes()] = spearman_statistic(gold)
            statistic = mean_statistic if gold is None else by_gold[gold.tobytes()]
            score = float(np.mean([point_estimate(v, statistic) for v in values]))
            boot[key] = score, np.vstack([bootstrap_distribution(v, statistic, n_boot, seed) for v in values])
        return boot[key]

    out = []
    for key, group in groups.items():
        backbone, task, label, layer, dim, precision = key
        ref = refs[backbone]
        row = dict(backbone=backbone, method=label, task=task, layer=layer, dim=dim, precision=precision,
                   metric=group["metric"].iloc[0], n_seeds=group["seed"].nunique(), n_examples=-1,
                   score=float(group["score"].mean()), ci_low=np.nan, ci_high=np.nan, seed_ci_low=np.nan,
                   seed_ci_high=np.nan, reference=ref or "", delta=np.nan, p_value=np.nan, test="",
                   seed_p_value=np.nan, seed_test="", reason="")
        if key in broken:
            out.append({**row, "reason": broken[key]})
            continue
        values, gold = cells[key]
        score, per_seed = bootstrap(key)
        row.update(n_examples=values.shape[-1], score=score)
        row["ci_low"], row["ci_high"] = percentile_ci(per_seed.mean(axis=0), alpha)
        if len(per_seed) > 1:
            row["seed_ci_low"], row["seed_ci_high"] = percentile_ci(two_level_distribution(per_seed, seed, 1), alpha)
        row["reason"] = _why_untested(label, ref, reference, key, groups, cells, broken)
        if not row["reason"] and label != ref:
            ref_key = (backbone, task, ref, layer, dim, precision)
            ref_score, ref_per_seed = bootstrap(ref_key)
            if gold is None:
                result = paired_sign_flip(values.mean(axis=0), cells[ref_key][0].mean(axis=0), n_perm, seed)
            else:  # the same resamples on both sides: the two distributions subtract into the paired one
                result = paired_bootstrap_result(score - ref_score, per_seed.mean(axis=0) - ref_per_seed.mean(axis=0))
            row.update(delta=result.delta, p_value=result.p_value, test=result.test)
            if max(len(per_seed), len(ref_per_seed)) > 1:
                seeded = two_level_result(score - ref_score, per_seed, ref_per_seed, seed)
                row.update(seed_p_value=seeded.p_value, seed_test=seeded.test)
        out.append(row)
    frame = pd.DataFrame(out).assign(family="", n_tests=0, q_value=np.nan, significant=False)
    return benjamini_hochberg(frame[STATS_COLUMNS], alpha=alpha)


def _why_untested(label, ref, reference, key, groups, cells, broken) -> str:
    """"" where the cell can be tested against the reference (or is the reference's), else the reason."""
    backbone, task, _, layer, dim, precision = key
    if ref is None:
        return no_reference_reason(reference)
    if label == ref:
        return ""
    ref_key = (backbone, task, ref, layer, dim, precision)
    if ref_key not in groups:
        return f"the reference {ref} has no {precision} result at this layer and dim"
    if ref_key in broken:
        return f"the reference {ref}: {broken[ref_key]}"
    if set(groups[key]["eval"]) != set(groups[ref_key]["eval"]):
        # runs evaluated with the same settings score the same examples in the same order: only those are paired
        # (a results directory may hold several suites, e.g. a smoke run beside a full one)
        return f"the reference {ref} was evaluated on {task} with other settings (eval)"
    (values, gold), (ref_values, ref_gold) = cells[key], cells[ref_key]
    if values.shape[-1] != ref_values.shape[-1] or (gold is not None and not np.array_equal(gold, ref_gold)):
        return (f"{label} and the reference {ref} scored different examples of {task} ({values.shape[-1]} vs "
                f"{ref_values.shape[-1]}); rerun both with the same data and evaluation settings")
    return ""


def significance_marks(stats: pd.DataFrame, precision: str, mark: str = "*") -> dict[tuple[str, int, int, str], str]:
    """bench.report.tables annotations for one precision: (method, layer, dim, task) -> mark where significant."""
    sig = stats[(stats["precision"] == precision) & stats["significant"].astype(bool)]
    return {(m, int(l), int(d), t): mark for m, l, d, t in zip(sig["method"], sig["layer"], sig["dim"], sig["task"])}


def untested_reasons(stats: pd.DataFrame, shown: int = 2) -> str:
    """Why cells have no test, most frequent reason first: '<n> cell(s): <reason>; ...'. "" when every cell but
    the reference's was tested."""
    reasons = stats.loc[stats["reason"] != "", "reason"].value_counts()
    if reasons.empty:
        return ""
    ordered = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    text = "; ".join(f"{n} cell{'s' if n > 1 else ''}: {reason}" for reason, n in ordered[:shown])
    if len(ordered) > shown:
        text += f"; and {len(ordered) - shown} other reason(s)"
    return text


def test_description(stats: pd.DataFrame, n_boot: int = 1000, n_perm: int = 10000) -> str:
    """Which tests decided the marks, as a caption names them."""
    used = {marking_test(row) for row in stats.itertuples() if row.test}
    parts = []
    if TWO_LEVEL in used:
        parts.append(f"{TWO_LEVEL} where a cell or its reference has 2 or more seeds ({n_boot} resamples; seeds of "
                     "the two methods drawn independently)")
    if PAIRED_BOOTSTRAP in used:
        parts.append(f"STS: {PAIRED_BOOTSTRAP} of the Spearman difference ({n_boot} resamples of pairs)")
    if SIGN_FLIP in used:
        parts.append(f"retrieval: {SIGN_FLIP} of the mean per-query difference ({n_perm} resamples)")
    return "; ".join(parts)


def significance_note(stats: pd.DataFrame, alpha: float = 0.05, n_boot: int = 1000, n_perm: int = 10000,
                      mark: str = "*") -> str:
    """The sentence a table prints under its marks: which test, which correction over how many tests, against
    which method, and why the cells without a test have none. `stats`: the table's cells (one family)."""
    if stats.empty:
        return ""
    untested = untested_reasons(stats)
    if not (stats["test"] != "").any():
        return f"No significance marks: {untested}." if untested else ""
    ref = ", ".join(sorted(set(stats["reference"]) - {""}))
    n_tests = int((stats["test"] != "").sum())
    note = (f"{mark}: differs from {ref} on the same examples, two-sided, at a false discovery rate of {alpha:g}: "
            f"{BH} q < {alpha:g} over the {n_tests} tests of this table; test: "
            f"{test_description(stats, n_boot, n_perm)}. No mark on the STS average.")
    return note + (f" No test for {untested}." if untested else "")
