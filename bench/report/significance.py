"""Every cell's statistics, from the results a report loaded: the per-example values of each (method, task,
layer, dim, precision) cell read from its runs' `*.examples.npz` files (each opened once), bootstrap intervals,
paired tests against the backbone's reference method and Benjamini-Hochberg q-values (computed by bench/stats.py),
and for a cell without a test the reason why. `cell_statistics` gives the frame tables and the leaderboard mark
from, `method_cell_values` one method's values for the elasticity card, `pair_statistics` the same interval and
test for chosen pairs of cells (the budget table's winner and runner-up).

Reads no results file: it takes the frame `bench.results.load_results(results_dir, examples=True)` returned (each
row then names its run's per-example file). Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError
from bench.catalog import REFERENCE_PREFERENCE, main_rows, method_labels, pick_reference
from bench.results import read_examples
from bench.stats import (
    N_BOOT,
    QUERIES,
    Resampling,
    benjamini_hochberg,
    bootstrap_distributions,
    mean_statistic,
    pair_resampling,
    paired_bootstrap_result,
    paired_sign_flip,
    percentile_ci,
    point_estimate,
    spearman_statistic,
    two_level_distribution,
    two_level_result,
)
from bench.variants import example_key

STATS_COLUMNS = ["backbone", "method", "task", "layer", "dim", "precision", "metric", "n_seeds", "n_examples", "score",
                 "ci_low", "ci_high", "seed_ci_low", "seed_ci_high", "reference", "delta", "p_value", "test",
                 "seed_p_value", "seed_test", "resampled", "family", "n_tests", "q_value", "significant", "reason"]


class _Untestable(Exception):
    """Why a cell has no interval or test (a missing or unreadable per-example file, seeds that disagree)."""


def _main_rows(frame: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """The main-metric row of every evaluated cell of a task with per-example values (TaskMeta.no_intervals says
    why an mteb task has none), with its run's per-example file and the method label tables print (the method
    name, plus a config hash where two configs of one method claim the same cell). `method`: only its runs."""
    if "examples" not in frame.columns:
        raise ValueError("cell statistics need each row's per-example file: load the results with "
                         "bench.results.load_results(results_dir, examples=True)")
    rows = main_rows(frame if method is None else frame[frame["method"] == method])
    rows = rows[rows["no_intervals"] == ""]  # tasks that store no per-example values (mteb's)
    if rows.empty:
        return pd.DataFrame()
    rows = rows.reset_index(drop=True)
    rows["label"] = method_labels(rows)
    return rows


class _ExampleFiles:
    """Open per-example files once each; a missing or unreadable one is a reason, naming the file."""

    def __init__(self):
        self.open: dict[str, dict[str, np.ndarray]] = {}

    def get(self, path: str, key: str, optional: bool = False) -> np.ndarray | None:
        """The array `key` as float (identities as stored); `optional`: None where the file lacks it."""
        if path not in self.open:
            if not Path(path).exists():
                # the file's name, not its path: reports must not depend on how results_dir was spelled
                raise _Untestable(f"per-example file {Path(path).name} missing (delete its results file and rerun "
                                  "that run)")
            try:
                self.open[path] = read_examples(Path(path))
            except BenchError:  # damaged: a reason for this cell, not the end of the report
                raise _Untestable(f"per-example file {Path(path).name} unreadable (delete the run's files and rerun "
                                  "it)") from None
        if key not in self.open[path]:
            if optional:
                return None
            raise _Untestable("no per-example values stored for this cell (its run's example_cells leave it out)")
        array = self.open[path][key]
        return array if optional else np.asarray(array, dtype=float)


@dataclass(frozen=True, eq=False)
class _Cell:
    values: np.ndarray  # (seeds, examples)
    gold: np.ndarray | None  # STS gold scores; None for retrieval
    ids: tuple  # what pairs two cells example by example: (left, right) sentences for STS, (query ids,) for
    # retrieval; () where the run stored none (a run from before they were stored)
    resampling: Resampling


def _identities(files: _ExampleFiles, paths: list[str], sts: bool) -> tuple:
    """The examples' identities, the same in every seed's file, or () where a file stores none."""
    names = ("left_sentence", "right_sentence") if sts else ("query_ids",)
    per_seed = [tuple(files.get(p, name, optional=True) for name in names) for p in paths]
    if any(a is None for ids in per_seed for a in ids):
        return ()
    if any(not all(np.array_equal(a, b) for a, b in zip(ids, per_seed[0])) for ids in per_seed):
        raise _Untestable(f"its seeds scored different {'pairs' if sts else 'queries'}; rerun them with the same "
                          "evaluation settings")
    return per_seed[0]


def _cell_values(group: pd.DataFrame, files: _ExampleFiles) -> _Cell:
    """A cell's per-example values, (seeds, examples) in seed order: STS pair similarities (and the gold scores),
    retrieval the per-query metric; the examples' identities and how to resample them."""
    first = group.iloc[0]
    sts = first["family"] == "sts"
    name = "similarity" if sts else first["metric"]
    key = example_key(first["layer"], first["dim"], first["precision"], name, first.get("variant", ""))
    ordered = list(group.sort_values("seed")["examples"])
    values = [files.get(p, key) for p in ordered]
    sizes = sorted({len(v) for v in values})
    if len(sizes) > 1:
        raise _Untestable(f"its seeds were evaluated on different numbers of examples ({sizes}); rerun them with the "
                          "same evaluation settings")
    ids = _identities(files, ordered, sts)
    if not sts:
        fallback = "" if ids else "no query ids stored: paired by position"
        return _Cell(np.vstack(values), None, ids, Resampling(QUERIES, sizes[0], fallback=fallback))
    golds = [files.get(p, "gold") for p in ordered]
    if any(not np.array_equal(g, golds[0]) for g in golds):
        raise _Untestable("its seeds were scored against different gold pairs; rerun them with the same evaluation "
                          "settings")
    return _Cell(np.vstack(values), golds[0], ids, pair_resampling(*(ids or (None, None)), sizes[0]))


def method_cell_values(frame: pd.DataFrame, backbone: str, label: str) -> dict[tuple, tuple | str]:
    """Per (task, layer, dim, precision) of one method label on one backbone: its per-example values (seeds,
    examples), STS gold (None for retrieval) and how to resample them, as `cell_statistics` reads them, or the
    reason it has none. Tasks that store no per-example values (mteb's) have no key."""
    rows = _main_rows(frame, label.split("@")[0])
    if rows.empty:
        return {}
    rows = rows[(rows["backbone"] == backbone) & (rows["label"] == label)]
    files = _ExampleFiles()
    out: dict[tuple, tuple | str] = {}
    for key, group in rows.groupby(["task", "layer", "dim", "precision"], sort=True):
        try:
            cell = _cell_values(group, files)
            out[key] = cell.values, cell.gold, cell.resampling
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


def _task_distributions(cells: dict[tuple, _Cell], n_boot: int, seed: int) -> dict[tuple, tuple[float, np.ndarray]]:
    """Per cell: its score (mean over seeds) and per-seed bootstrap distributions (S, n_boot). Cells whose
    examples are resampled alike (same task, examples, gold and identities) are scored chunk by chunk together,
    so each chunk of resamples and the gold's ranks in it are computed once for all of them."""
    by_design: dict[tuple, list[tuple]] = {}
    for key, cell in cells.items():
        gold = b"" if cell.gold is None else cell.gold.tobytes()
        by_design.setdefault((key[:2], cell.resampling.key(), gold), []).append(key)
    out = {}
    for keys in by_design.values():
        first = cells[keys[0]]
        statistic = mean_statistic if first.gold is None else spearman_statistic(first.gold)
        rows = [(key, v) for key in keys for v in cells[key].values]
        dists = bootstrap_distributions([v for _, v in rows], statistic, n_boot, seed, first.resampling)
        for key in keys:
            mine = [d for (k, _), d in zip(rows, dists) if k == key]
            score = float(np.mean([point_estimate(v, statistic) for v in cells[key].values]))
            out[key] = score, np.vstack(mine)
    return out


def _read_cells(groups: dict) -> tuple[dict, dict]:
    """Each cell's per-example values (by cell key), and the reason for each cell that has none."""
    files, cells, broken = _ExampleFiles(), {}, {}
    for key, group in groups.items():
        try:
            cells[key] = _cell_values(group, files)
        except _Untestable as exc:
            broken[key] = str(exc)
    return cells, broken


def cell_statistics(frame: pd.DataFrame, reference: str | None = None, sizes=None, alpha: float = 0.05,
                    n_boot: int = N_BOOT, n_perm: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per cell (method, task, layer, dim, precision) of the main metric:
    - the score (mean over seeds) and its percentile bootstrap (1 - alpha) CI over examples, seeds held fixed;
      with 2 or more seeds also the two-level CI (resample seeds, then examples: `two_level_distribution`);
      STS sets whose pairs share sentences resample the sentences (`Resampling`; `resampled` says what was drawn);
    - a two-sided paired test against the reference method on the same cell and examples: PAIRED_BOOTSTRAP for
      STS Spearman, SIGN_FLIP for retrieval (`p_value`, `test`), and where the cell or its reference has 2 or
      more seeds the TWO_LEVEL test beside it (`seed_p_value`, `seed_test`);
    - Benjamini-Hochberg q-values over one family per backbone x precision (`benjamini_hochberg`; a report
      re-adjusts over the families it marks), `significant` = q < alpha;
    - `reason`: why a cell other than the reference's has no test (no reference method, a missing per-example
      file named, no reference cell there, a reference evaluated with other settings or on other examples, the
      reference's own checkpoint, an undefined statistic): such cells stay out of the families.
    `frame`: the results as `load_results(results_dir, examples=True)` loaded them. `sizes`: only these (layer,
    dim) cells (None: all). Deterministic: the same results give the same frame."""
    rows = _main_rows(frame)
    if rows.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    if sizes is not None:
        keep = {(int(l), int(d)) for l, d in sizes}
        rows = rows[[(l, d) in keep for l, d in zip(rows["layer"], rows["dim"])]]
    pick_reference(rows["label"], reference)  # an unknown reference is an error even where backbones differ
    # each backbone is compared with its own reference: cells of different backbones are never paired
    refs = {b: _backbone_reference(g["label"], reference) for b, g in rows.groupby("backbone")}
    key_cols = ["backbone", "task", "label", "layer", "dim", "precision"]  # cells of a task share resamples
    groups = dict(list(rows.groupby(key_cols, sort=True)))
    cells, broken = _read_cells(groups)
    boot = _task_distributions(cells, n_boot, seed)

    out = []
    for key, group in groups.items():
        backbone, task, label, layer, dim, precision = key
        ref = refs[backbone]
        row = dict(backbone=backbone, method=label, task=task, layer=layer, dim=dim, precision=precision,
                   metric=group["metric"].iloc[0], n_seeds=group["seed"].nunique(), n_examples=-1,
                   score=float(group["score"].mean()), ci_low=np.nan, ci_high=np.nan, seed_ci_low=np.nan,
                   seed_ci_high=np.nan, reference=ref or "", delta=np.nan, p_value=np.nan, test="",
                   seed_p_value=np.nan, seed_test="", resampled="", reason="")
        if key in broken:
            out.append({**row, "reason": broken[key]})
            continue
        cell = cells[key]
        score, per_seed = boot[key]
        row.update(n_examples=cell.values.shape[-1], score=score, resampled=cell.resampling.label())
        row.update(_intervals(per_seed, alpha, seed))
        row["reason"] = _why_untested(label, ref, reference, key, groups, cells, broken)
        if not row["reason"] and label != ref:
            row.update(_paired(cell, cells[(backbone, task, ref, layer, dim, precision)], boot[key],
                               boot[(backbone, task, ref, layer, dim, precision)], ref, n_perm, seed))
        out.append(row)
    frame = pd.DataFrame(out).assign(family="", n_tests=0, q_value=np.nan, significant=False)
    return benjamini_hochberg(frame[STATS_COLUMNS], alpha=alpha)


CellKey = tuple[str, str, str, int, int, str]  # (backbone, task, method label, layer, dim, precision)
PAIR_COLUMNS = ["score", "ci_low", "ci_high", "seed_ci_low", "seed_ci_high", "n_seeds", "other_score", "delta",
                "p_value", "test", "seed_p_value", "seed_test", "resampled", "reason"]


def pair_statistics(frame: pd.DataFrame, pairs: list[tuple[CellKey, CellKey]], alpha: float = 0.05,
                    n_boot: int = N_BOOT, n_perm: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per (first, second) pair of cells of one backbone and task, in the order given: the first cell's score and
    intervals exactly as `cell_statistics` gives them (the same resamples), the second's score, and the paired
    test of first minus second that the tables run against the reference (`_paired`: PAIRED_BOOTSTRAP for STS,
    SIGN_FLIP for retrieval, and TWO_LEVEL beside it where either cell has 2 or more seeds), or in `reason` why
    there is none. Only the cells named are read and resampled, so a few pairs cost a few cells, not the grid.
    `frame`: as `cell_statistics` takes it."""
    rows = _main_rows(frame)
    key_cols = ["backbone", "task", "label", "layer", "dim", "precision"]
    wanted = sorted({key for pair in pairs for key in pair})
    if not rows.empty:
        rows = rows[pd.MultiIndex.from_frame(rows[key_cols]).isin(wanted)]
    groups = dict(list(rows.groupby(key_cols, sort=True))) if not rows.empty else {}
    cells, broken = _read_cells(groups)
    boot = _task_distributions(cells, n_boot, seed)
    out = [_pair_row(first, second, groups, cells, broken, boot, alpha, n_perm, seed) for first, second in pairs]
    return pd.DataFrame(out, columns=PAIR_COLUMNS)


def _pair_row(first: CellKey, second: CellKey, groups, cells, broken, boot, alpha, n_perm, seed) -> dict:
    row = dict(score=np.nan, ci_low=np.nan, ci_high=np.nan, seed_ci_low=np.nan, seed_ci_high=np.nan, n_seeds=0,
               other_score=np.nan, delta=np.nan, p_value=np.nan, test="", seed_p_value=np.nan, seed_test="",
               resampled="", reason="")
    if first in cells:
        score, per_seed = boot[first]
        row.update(score=score, n_seeds=len(per_seed), resampled=cells[first].resampling.label(),
                   **_intervals(per_seed, alpha, seed))
    if second in cells:
        row["other_score"] = boot[second][0]
    missing = [key for key in (first, second) if key not in cells]
    if missing:
        key = missing[0]
        row["reason"] = broken.get(key, f"{key[2]} stores no per-example values for {key[1]} (a mean over tasks, or "
                                        "a task that stores none, as mteb's)")
        return row
    label, other = first[2], second[2]
    if set(groups[first]["eval"]) != set(groups[second]["eval"]):  # as _why_untested: only same-settings runs pair
        row["reason"] = f"{label} and {other} were evaluated on {first[1]} with other settings (eval)"
        return row
    reason = _unpaired_examples(label, other, first[1], cells[first], cells[second])
    a, b = cells[first].values, cells[second].values
    if not reason and a.shape == b.shape and np.array_equal(a, b):
        reason = "identical per-example values on every seed: nothing to test"
    if reason:
        row["reason"] = reason
        return row
    row.update(_paired(cells[first], cells[second], boot[first], boot[second], other, n_perm, seed))
    return row


def _intervals(per_seed: np.ndarray, alpha: float, seed: int) -> dict:
    """A cell's percentile CI over examples (seeds held fixed) and, with 2 or more seeds, the two-level one."""
    low, high = percentile_ci(per_seed.mean(axis=0), alpha)
    out = dict(ci_low=low, ci_high=high)
    if len(per_seed) > 1:
        out["seed_ci_low"], out["seed_ci_high"] = percentile_ci(two_level_distribution(per_seed, seed, 1), alpha)
    return out


def _paired(cell: _Cell, ref_cell: _Cell, boot: tuple, ref_boot: tuple, ref: str, n_perm: int, seed: int) -> dict:
    """The paired test(s) of a cell against its reference's cell, or the reason there is none: the reference's own
    checkpoint (identical values on every seed: p = 1 says nothing) or a statistic that is undefined (NaN)."""
    (score, per_seed), (ref_score, ref_per_seed) = boot, ref_boot
    if cell.values.shape == ref_cell.values.shape and np.array_equal(cell.values, ref_cell.values):
        return dict(reason=f"the same checkpoint as the reference {ref} (identical per-example values on every "
                           "seed): nothing to test")
    if np.isnan(score - ref_score):
        return dict(reason="its statistic or the reference's is undefined (NaN: e.g. constant similarities)")
    if cell.gold is None:
        result = paired_sign_flip(cell.values.mean(axis=0), ref_cell.values.mean(axis=0), n_perm, seed)
    else:  # the same resamples on both sides: the two distributions subtract into the paired one
        result = paired_bootstrap_result(score - ref_score, per_seed.mean(axis=0) - ref_per_seed.mean(axis=0))
    out = dict(delta=result.delta, p_value=result.p_value, test=result.test)
    if max(len(per_seed), len(ref_per_seed)) > 1:
        seeded = two_level_result(score - ref_score, per_seed, ref_per_seed, seed)
        out.update(seed_p_value=seeded.p_value, seed_test=seeded.test)
    return out


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
    return _unpaired_examples(label, f"the reference {ref}", task, cells[key], cells[ref_key])


def _unpaired_examples(label: str, ref: str, task: str, cell: _Cell, ref_cell: _Cell) -> str:
    """"" where both cells scored the same examples in the same order: the same number, the same gold (STS), the
    same stored identities (sentences of each pair, query ids); else why not. `ref`: how the messages name the
    other side ("the reference separate")."""
    n, ref_n = cell.values.shape[-1], ref_cell.values.shape[-1]
    same = n == ref_n and (cell.gold is None or np.array_equal(cell.gold, ref_cell.gold))
    if same and bool(cell.ids) != bool(ref_cell.ids):
        what = "sentence" if cell.gold is not None else "query"
        return (f"one of {label} and {ref} stores no {what} identities (a run from before they were "
                "stored); rerun it")
    same = same and all(np.array_equal(a, b) for a, b in zip(cell.ids, ref_cell.ids))
    if not same:
        return (f"{label} and {ref} scored different examples of {task} ({n} vs {ref_n}); rerun both "
                "with the same data and evaluation settings")
    return ""


