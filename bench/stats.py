"""How sure is a number: bootstrap confidence intervals per cell and paired tests between methods, computed from
the per-example values stored beside each run (pair similarities for STS, per-query metrics for retrieval).

Why by hand rather than calling scipy.stats.bootstrap / permutation_test per cell: a report has hundreds of cells.
A resample is held as per-example *counts* (how often each example was drawn), so a mean is one matrix product and
a Spearman correlation is a weighted correlation of ranks computed in O(n) from one sort of the original values,
instead of re-sorting every resample. tests/test_stats.py checks both against scipy on the same resamples.

Resampling treats the examples (pairs, queries) as the random draw and the trained checkpoints as fixed: with
several seeds, a cell's statistic is the mean over seeds, resampled with the same examples for every seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench import BenchError
from bench.catalog import main_rows, method_labels, pick_reference

# The names tables print; a reader must be able to look the test up by this name.
PAIRED_BOOTSTRAP = "paired bootstrap test"
SIGN_FLIP = "paired sign-flip permutation test"
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


# ---- every cell of a results directory ----

STATS_COLUMNS = ["backbone", "method", "task", "layer", "dim", "precision", "metric", "n_seeds", "n_examples", "score",
                 "ci_low", "ci_high", "reference", "delta", "p_value", "test", "significant"]


def _main_rows(results_dir: Path) -> pd.DataFrame:
    """The main-metric row of every evaluated cell of a task with per-example values (TaskMeta.no_intervals says
    why an mteb task has none), with its run's per-example file and the method label tables print (the method
    name, plus a config hash where two configs of one method claim the same cell)."""
    from bench.results import examples_path, read_run_file, result_files

    frames = [main_rows(read_run_file(path)).assign(examples=str(examples_path(path)))
              for path in result_files(results_dir)]
    frames = [f[f["no_intervals"] == ""] for f in frames]  # tasks that store no per-example values (mteb's)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows["label"] = method_labels(rows)
    return rows


class _ExampleFiles:
    """Open per-example files once each; a missing one is a clear error."""

    def __init__(self):
        self.open: dict[str, dict[str, np.ndarray]] = {}

    def get(self, path: str, key: str) -> np.ndarray:
        if path not in self.open:
            if not Path(path).exists():
                raise BenchError(f"{path} is missing: statistics need the per-example values written beside each run; "
                                 "delete its results CSV and rerun that run")
            from bench.results import read_examples

            self.open[path] = read_examples(Path(path))
        if key not in self.open[path]:
            raise BenchError(f"{path} has no per-example values {key!r}; delete the run's files and rerun it")
        return np.asarray(self.open[path][key], dtype=float)


def _cell_values(group: pd.DataFrame, files: _ExampleFiles) -> tuple[np.ndarray, np.ndarray | None]:
    """A cell's per-example values over its seeds: STS (seeds, pairs) similarities and the gold scores; retrieval
    the per-query metric averaged over seeds (its mean is the mean over seeds of the score)."""
    first = group.iloc[0]
    sts = first["family"] == "sts"
    name = "similarity" if sts else first["metric"]
    key = f"{first['layer']}/{first['dim']}/{first['precision']}/{name}"
    values = [files.get(p, key) for p in group.sort_values("seed")["examples"]]
    if len({len(v) for v in values}) > 1:
        raise BenchError(f"{first['label']} on {first['task']}: seeds were evaluated on different numbers of examples "
                         f"({sorted({len(v) for v in values})}); rerun them with the same evaluation settings")
    if not sts:
        return np.mean(values, axis=0), None
    golds = [files.get(p, "gold") for p in group["examples"]]
    if any(not np.array_equal(g, golds[0]) for g in golds):
        raise BenchError(f"{first['label']} on {first['task']}: seeds were scored against different gold pairs; "
                         "rerun them with the same evaluation settings")
    return np.vstack(values), golds[0]


def _backbone_reference(labels: pd.Series, reference: str | None) -> str | None:
    if reference is not None:
        return reference if reference in set(labels) else None
    return pick_reference(labels)


def cell_statistics(results_dir: Path, reference: str | None = None, sizes=None, alpha: float = 0.05,
                    n_boot: int = 1000, n_perm: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per cell (method, task, layer, dim, precision) of the main metric: the score, its percentile bootstrap
    (1 - alpha) CI over examples, and a two-sided paired test against the reference method on the same cell and
    the same examples (PAIRED_BOOTSTRAP for STS Spearman, SIGN_FLIP for retrieval; none without a reference
    method in the results, or where the reference cell was evaluated with other settings). `sizes`: only these
    (layer, dim) cells (None: all). Deterministic: the same results give the same frame."""
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
    cells = {key: (g, *_cell_values(g, files)) for key, g in rows.groupby(key_cols, sort=True)}
    by_gold: dict[bytes, Statistic] = {}  # the current task's statistic: its gold ranks serve all the task's cells
    boot: dict[tuple, tuple[float, np.ndarray]] = {}  # per cell: score and bootstrap distribution, computed once

    def bootstrap(key: tuple) -> tuple[float, np.ndarray]:
        if key not in boot:
            _, values, gold = cells[key]
            if gold is not None and gold.tobytes() not in by_gold:
                by_gold.clear()  # cells come task by task: let the previous task's cached ranks go
                by_gold[gold.tobytes()] = spearman_statistic(gold)
            statistic = mean_statistic if gold is None else by_gold[gold.tobytes()]
            boot[key] = point_estimate(values, statistic), bootstrap_distribution(values, statistic, n_boot, seed)
        return boot[key]

    out = []
    for key, (group, values, gold) in cells.items():
        backbone, task, label, layer, dim, precision = key
        ref = refs[backbone]
        score, dist = bootstrap(key)
        low, high = percentile_ci(dist, alpha)
        row = dict(backbone=backbone, method=label, task=task, layer=layer, dim=dim, precision=precision,
                   metric=group["metric"].iloc[0], n_seeds=group["seed"].nunique(), n_examples=values.shape[-1],
                   score=score, ci_low=low, ci_high=high, reference=ref or "", delta=np.nan, p_value=np.nan, test="", significant=False)
        ref_key = (backbone, task, ref, layer, dim, precision)
        if label != ref and ref_key in cells and _same_evaluation(group, cells[ref_key][0]):
            _check_same_examples(label, ref, task, values, gold, cells[ref_key][1], cells[ref_key][2])
            if gold is None:
                result = paired_sign_flip(values, cells[ref_key][1], n_perm, seed)
            else:  # the same resamples on both sides: the two distributions subtract into the paired one
                ref_score, ref_dist = bootstrap(ref_key)
                result = paired_bootstrap_result(score - ref_score, dist - ref_dist)
            row.update(delta=result.delta, p_value=result.p_value, test=result.test,
                       significant=result.p_value < alpha)
        out.append(row)
    return pd.DataFrame(out, columns=STATS_COLUMNS)


def _same_evaluation(group: pd.DataFrame, other: pd.DataFrame) -> bool:
    """Runs evaluated with the same settings score the same examples in the same order: only those are paired (a
    results directory may hold several suites, e.g. a smoke run beside a full one)."""
    return set(group["eval"]) == set(other["eval"])


def _check_same_examples(label, ref, task, values, gold, ref_values, ref_gold) -> None:
    if values.shape[-1] != ref_values.shape[-1] or (gold is not None and not np.array_equal(gold, ref_gold)):
        raise BenchError(f"{label} and the reference {ref} were evaluated on different examples of {task} "
                         f"({values.shape[-1]} vs {ref_values.shape[-1]}); a paired test needs the same ones: rerun "
                         "both with the same evaluation settings, or pass another reference")


def significance_marks(stats: pd.DataFrame, precision: str, mark: str = "*") -> dict[tuple[str, int, int, str], str]:
    """bench.report.tables annotations for one precision: (method, layer, dim, task) -> mark where significant."""
    sig = stats[(stats["precision"] == precision) & stats["significant"].astype(bool)]
    return {(m, int(l), int(d), t): mark for m, l, d, t in zip(sig["method"], sig["layer"], sig["dim"], sig["task"])}


def significance_note(stats: pd.DataFrame, alpha: float = 0.05, n_boot: int = 1000, n_perm: int = 10000,
                      mark: str = "*") -> str:
    """The sentence a table prints under its marks: which test, which alpha, against which method."""
    if stats.empty or not (stats["test"] != "").any():
        return ""
    ref = ", ".join(sorted(set(stats["reference"]) - {""}))
    return (f"{mark}: differs from {ref} on the same examples at alpha = {alpha:g} (two-sided, uncorrected for "
            f"multiple comparisons); STS: {PAIRED_BOOTSTRAP} of the Spearman difference ({n_boot} resamples of "
            f"pairs); retrieval: {SIGN_FLIP} of the mean per-query difference ({n_perm} resamples). "
            "No mark on the STS average.")
