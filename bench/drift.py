"""Result rows against reference rows, torch-free: the tolerance of each row (measured, see below), the row-by-row
comparison (ok, DRIFT, missing), whether a reference tells its methods apart (`method_pairs`), and what is printed
about it: `bench reproduce`'s report (bench/reproduce.py reruns the reference) and the comparison a `bench run` ends
with (its cells beside the committed runs of the same spec)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.precisions import precision as precision_record
from bench.results import ROW_KEY, load_results
from bench.spec import RunSpec


@dataclass(frozen=True)
class Tolerance:
    """|now - reference| <= absolute + relative * |reference|."""

    absolute: float
    relative: float = 0.0

    def allows(self, reference: float, now: float) -> bool:
        if math.isnan(reference) or math.isnan(now):
            return math.isnan(reference) and math.isnan(now)
        return abs(now - reference) <= self.bound(reference)

    def bound(self, reference: float) -> float:
        return self.absolute + self.relative * abs(reference)

    def __str__(self) -> str:
        return f"{self.absolute:g}" + (f" + {self.relative:g}*|ref|" if self.relative else "")


# Measured by benchmarks/reproduce_tolerance.py: the reference suite rerun with torch/OMP/MKL threads 1 (against the
# committed 2-thread reference), with evaluation batches of 16 (other padding, other GEMM shapes), and with every
# text set encoded as two interleaved halves (every batch holds other texts), compared row by row. Float32 results
# are not bit-identical across thread counts (training reductions and scoring split work by thread). The largest
# changes (`--variants threads-1,eval-batch-16,split-encode --base results`, 2026-12-02, 2 CPU cores):
#   spearman fp32 0.0052, int8 0.097, binary 0.61;  pearson fp32 0.0024, int8 0.12, binary 0.43  (tiny model, x100)
#   ndcg@10, mrr@10, recall@100 at every precision: 0 (MiniLM on SciFact: no variant moved a query's ranking)
#   training rows (loss, grad_norm): 0.79% of the row (qat's loss at step 14, 1 thread against 2)
# Tolerance = MARGIN x that maximum, rounded up to one significant digit; a quantized row never gets less than its
# fp32 row (a sign or an int8 bucket flips on float noise). MARGIN is 3, not 10: changes inside an objective move the
# reference's fp32 rows by 0.005 (starbucks-srl's KL x1.2), 0.016 (KL x2), 0.027 (KL x3) and 0.030 (2dmse's layer
# weights x1.2), so an order of magnitude over the thread noise would hide all of them; 3x still clears every
# measured float-path change. Rows that never moved (retrieval) keep the absolute floors they had: 0.05 at fp32 and,
# quantized, 0.35 (one of SciFact's 300 queries changing rank moves a mean by up to 0.33).
# Another CPU moves int8 rows further than threads do: the same code (this repo at 5cb7026 and after) on an Intel
# Xeon (avx512_vnni, 2026-12-07), against the reference made on an AMD Zen 4, moved spearman int8 by up to 0.312
# (pca at (2, 64)) and pearson int8 by 0.259, binary by 0.39, while fp32 rows moved 0.0047 (spearman) and 0.0008
# (pearson) and retrieval rows not at all. So the int8 tolerances are MARGIN x those: spearman 1, pearson 0.8 (a
# bucket edge crossed on float noise); fp32 and binary keep theirs.
MARGIN = 3
QUALITY_TOLERANCE = {
    ("spearman", "fp32"): Tolerance(0.02), ("spearman", "int8"): Tolerance(1), ("spearman", "binary"): Tolerance(2),
    ("pearson", "fp32"): Tolerance(0.008), ("pearson", "int8"): Tolerance(0.8), ("pearson", "binary"): Tolerance(2),
    **{(m, "fp32"): Tolerance(0.05) for m in ("ndcg@10", "mrr@10", "recall@100")},
}
UNMEASURED = Tolerance(0.35)  # a quality row of a metric or precision the probe did not see, and quantized retrieval
TRAINING_TOLERANCE = Tolerance(1e-4, 0.03)  # every split-"train" row (losses, gradient norms) but the lr
# The learning rate of a step is the schedule's formula of the step number alone: only float rounding may differ.
LR_TOLERANCE = Tolerance(1e-12, 1e-9)
# and every size ("bytes" in the name); the decontamination counts (bench/data/decontaminate.py) too
EXACT_METRICS = ("relative_encode_cost", "smae_mlm_head_pretrained", "train_examples_removed", "smae_sentences_removed")
COST_MARKERS = ("seconds", "_ms", "memory")  # machine-dependent cost rows: never compared


def tolerance(metric: str, precision: str, split: str = "test") -> Tolerance | None:
    """The tolerance of one row; None for cost rows (timings, memory), which differ between machines."""
    if any(marker in metric for marker in COST_MARKERS):
        return None
    if "bytes" in metric or metric in EXACT_METRICS:
        return Tolerance(0.0)  # sizes, layer ratios and flags are exact
    if metric == "lr" or metric.endswith("_lr"):
        return LR_TOLERANCE
    if split == "train" or "loss" in metric or metric.endswith("grad_norm"):
        return TRAINING_TOLERANCE
    precision_record(precision)  # an unknown precision is one error line, not UNMEASURED's silent default
    return QUALITY_TOLERANCE.get((metric, precision), UNMEASURED)


def is_quality(metric: str, precision: str, split: str) -> bool:
    """A score of an evaluated cell (not a cost, size, flag or training row): what tells methods apart."""
    exact = "bytes" in metric or metric in EXACT_METRICS
    return split != "train" and "loss" not in metric and not exact and tolerance(metric, precision, split) is not None


def compare(reference: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """One row per compared result row: reference, now, tolerance and status (ok, DRIFT, missing now,
    not in reference), with each side's code fingerprint. Cost rows are left out."""
    keys = ROW_KEY + ["method", "task"]
    both = reference[keys + ["score", "code"]].merge(now[keys + ["score", "code"]], on=keys, how="outer",
                                                     suffixes=("_ref", "_now"), indicator=True)
    tols = [tolerance(m, p, s) for m, p, s in zip(both["metric"], both["precision"], both["split"])]
    both = both[[t is not None for t in tols]].assign(tolerance=[t for t in tols if t is not None])
    status = []
    for side, ref, new, tol in zip(both["_merge"], both["score_ref"], both["score_now"], both["tolerance"]):
        if side == "left_only":
            status.append("missing now")
        elif side == "right_only":
            status.append("not in reference")
        else:
            status.append("ok" if tol.allows(ref, new) else "DRIFT")
    out = both.drop(columns="_merge").rename(columns={"score_ref": "reference", "score_now": "now"})
    out["status"] = status
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True)


# ---- can the reference tell its methods apart? ----

PAIR_COLUMNS = ["backbone", "task", "method_a", "method_b", "rows", "layer", "dim", "precision", "metric", "score_a",
                "score_b", "tolerance", "margin", "differs"]


def method_pairs(frame: pd.DataFrame, precision: str = "fp32") -> pd.DataFrame:
    """For every pair of methods evaluated on the same backbone, task and evaluation settings: the quality row at
    `precision` (a cell's score, not a cost or a loss) both have where they differ most in units of tolerance
    (margin = |a - b| / tolerance of a's row), and whether that is beyond tolerance. A reference whose pair has
    margin <= 1 everywhere could not notice one method's code computing the other's."""
    rows = frame[(frame["precision"] == precision) & (frame["layer"] >= 1)]
    rows = rows[[is_quality(m, p, s) for m, p, s in zip(rows["metric"], rows["precision"], rows["split"])]]
    cell = ["layer", "dim", "precision", "metric"]
    out = []
    for (backbone, task, _), part in rows.groupby(["backbone", "task", "eval"], sort=True):
        scores = {m: g.set_index(cell)["score"] for m, g in part.groupby("method", sort=True)}
        for a, b in itertools.combinations(sorted(scores), 2):
            both = pd.concat([scores[a], scores[b]], axis=1, keys=["a", "b"], join="inner")
            if both.empty:
                continue
            bounds = [tolerance(m, p).bound(x) for (_, _, p, m), x in zip(both.index, both["a"])]
            margins = (both["a"] - both["b"]).abs() / pd.Series(bounds, index=both.index).where(lambda t: t > 0)
            (layer, dim, prec, metric), best = margins.idxmax(), margins.max()
            out.append(dict(backbone=backbone, task=task, method_a=a, method_b=b, rows=len(both), layer=layer,
                            dim=dim, precision=prec, metric=metric, score_a=both.loc[margins.idxmax(), "a"],
                            score_b=both.loc[margins.idxmax(), "b"], tolerance=tolerance(metric, prec),
                            margin=best, differs=bool(best > 1)))
    return pd.DataFrame(out, columns=PAIR_COLUMNS)


# ---- what the command prints ----

REPORT_COLUMNS = ["method", "task", "layer", "dim", "precision", "metric", "step", "reference", "now", "tolerance",
                  "status"]


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, the full-size fp32 cell's main metric: what a reader checks first."""
    main = table[table["metric"].isin(["spearman", "ndcg@10"]) & (table["precision"] == "fp32")]
    full = main.groupby("run_id")[["layer", "dim"]].transform("max")
    return main[(main["layer"] == full["layer"]) & (main["dim"] == full["dim"])]


def _rows_text(rows: pd.DataFrame, max_rows: int | None) -> str:
    shown = rows if max_rows is None else rows.head(max_rows)
    with pd.option_context("display.float_format", lambda v: f"{v:.6g}", "display.width", 250,
                           "display.max_rows", None):
        text = shown[REPORT_COLUMNS].to_string(index=False)
    if len(rows) > len(shown):
        text += f"\n... and {len(rows) - len(shown)} more row(s) not shown"
    return text


def run_summary(table: pd.DataFrame) -> list[str]:
    """One line per run that drifted: which method, how many rows, the largest change and where; and per run made
    by other code than its reference, that it was (a DRIFT there is the code change's doing)."""
    lines = []
    for (method, task, run_id), part in table.groupby(["method", "task", "run_id"], sort=True):
        bad = part[part["status"] != "ok"]
        made_by = [",".join(sorted(set(part[side].dropna()))) for side in ("code_ref", "code_now")]
        code = f"; code {made_by[0]} -> {made_by[1]}" if made_by[0] != made_by[1] else ""
        if bad.empty:
            if code:
                lines.append(f"ok    {method} on {task} (run {run_id}{code}): within tolerance")
            continue
        delta = (bad["now"] - bad["reference"]).abs()
        worst = bad.loc[delta.idxmax()] if delta.notna().any() else bad.iloc[0]
        where = (f"{worst['metric']} at layer {worst['layer']}, dim {worst['dim']}, {worst['precision']}"
                 + (f", step {worst['step']}" if worst["step"] >= 0 else ""))
        quality = sum(is_quality(m, p, s) for m, p, s in zip(bad["metric"], bad["precision"], bad["split"]))
        lines.append(f"DRIFT {method} on {task} (run {run_id}{code}): {len(bad)} of {len(part)} rows ({quality} "
                     f"quality rows), largest |now - reference| = {delta.max():.6g} ({where})")
    return lines


def format_report(table: pd.DataFrame, max_rows: int = 40) -> str:
    """The headline rows and every row out of tolerance, a line per drifted run, then a one-line verdict."""
    bad = table[table["status"] != "ok"]
    shown = pd.concat([headline(table), bad]).drop_duplicates(subset=ROW_KEY).sort_values(
        REPORT_COLUMNS[:7], kind="mergesort")
    text = "\n".join([_rows_text(shown, max_rows), *run_summary(table)])
    runs = table["run_id"].nunique()
    if bad.empty:
        return text + f"\nreproduce: OK, {len(table)} rows of {runs} runs within tolerance (timings not compared)"
    counts = ", ".join(f"{n} {s}" for s, n in bad["status"].value_counts().sort_index().items())
    return text + (f"\nreproduce: DRIFT, {len(bad)} of {len(table)} rows of {runs} runs ({counts}); if the change is "
                   "intended, regenerate with `bench reproduce --write-reference --overwrite` and commit results/")


# ---- a user's run against the committed results ----

def compare_with_committed(results_dir: Path, committed_dir: Path, specs: list[RunSpec]) -> pd.DataFrame | None:
    """The quality rows of these specs' runs in results_dir beside the committed runs with the same run_id (any
    code), with `bench reproduce`'s tolerances; None when the committed folder holds none of them."""
    ids = {s.run_id for s in specs}
    committed = load_results(committed_dir)
    committed = committed[committed["run_id"].isin(ids)]
    if committed.empty:
        return None
    now = load_results(results_dir)
    now = now[now["run_id"].isin(set(committed["run_id"]))]
    table = compare(committed, now)
    return table[[is_quality(m, p, s) for m, p, s in zip(table["metric"], table["precision"], table["split"])]]


def format_comparison(table: pd.DataFrame | None, committed_dir: Path, specs: list[RunSpec]) -> str:
    """What `bench run` ends with: cells compared, how many within tolerance, the largest difference and where."""
    if table is None:
        return f"compared with {committed_dir}: none of these {len(specs)} run(s) is committed there"
    both = table[table["status"].isin(["ok", "DRIFT"])]
    cells = both.groupby(["run_id", "layer", "dim", "precision"]).ngroups
    ok_cells = cells - both[both["status"] == "DRIFT"].groupby(["run_id", "layer", "dim", "precision"]).ngroups
    lines = [f"compared with {committed_dir}: {cells} cell(s) of {both['run_id'].nunique()} run(s); {ok_cells} "
             f"within `bench reproduce`'s tolerances ({(both['status'] == 'ok').sum()} of {len(both)} quality rows)"]
    if not both.empty:
        delta = (both["now"] - both["reference"]).abs()
        worst = both.loc[delta.idxmax()] if delta.notna().any() else both.iloc[0]
        lines.append(f"largest |yours - committed| = {delta.max():.4g}: {worst['method']} on {worst['task']}, layer "
                     f"{worst['layer']}, dim {worst['dim']}, {worst['precision']} {worst['metric']} "
                     f"({worst['now']:.4f} vs {worst['reference']:.4f}, tolerance {worst['tolerance']})")
    missing = len({s.run_id for s in specs} - set(both["run_id"]))
    if missing:
        lines.append(f"{missing} run(s) have no committed counterpart in {committed_dir}")
    return "\n".join(lines)
