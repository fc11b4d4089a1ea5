"""`bench reproduce`: rerun a reference suite small enough for CI and compare it, row by row, with the reference
results committed under results/; any row outside its tolerance (or missing on either side) is drift.

The reference runs are found by run_id, the hash of the spec alone, never by the code fingerprint in the file name:
after an edit to a method, the training loop or the evaluation, the rerun is compared with the reference and the
edit shows up as DRIFT with the numbers (reference, now, tolerance), never as a missing reference (the report says
which runs were made by other code). A change to a spec default changes the run_ids, and reproduce then says the
reference is missing. `bench reproduce --write-reference` writes the reference runs that have none;
`--write-reference --overwrite` reruns them all, prints old and new for every changed row and replaces the old
files. Commit the new files.

The training half must tell the methods apart: `method_pairs` finds, for every pair of the reference's training
methods, the fp32 quality row where they differ most in units of tolerance (tests/test_reproduce.py requires more
than one tolerance for every pair), and a change inside one objective that no spec field sees (starbucks-srl's KL
term x3, 2dmse's layer weights x1.2) must show as DRIFT of that method (a test does exactly that).

The tolerances are for CPU runs (the reference is made on CPU, and `bench reproduce` runs on CPU unless told
otherwise), in fp32. On GPU they were not measured (no GPU on this machine); a `--dtype bf16` run is another
run_id, so it is never compared with the fp32 reference (its rounding, ~4e-3 relative, is thousands of times the
float32 noise the tolerances were set from). Compare GPU runs with a reference written on the same kind of GPU.
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from bench import BenchError
from bench.precisions import precision as precision_record
from bench.results import ROW_KEY, SUFFIX, examples_path, load_results, result_files
from bench.runner import make_specs
from bench.spec import RunSpec
from bench.suites import Suite, default, smoke

# The reference's training methods (tiny random BERT, `reference_training_suite`: REFERENCE_STEPS at REFERENCE_LR on
# all of STS-B test): they check that training is reproducible and that an objective still computes what it did;
# retrieval is checked by the MiniLM run. A new method is one more name here.
SMOKE_TRAINING_METHODS = ("full", "mrl", "2dmse", "starbucks-srl", "starbucks", "separate", "qat", "ese")
SMOKE_TRAINING_METHODS += ("pca", "matryoshka-adaptor", "bebr")  # post-hoc heads: seconds each

# How long the reference trains, and why: every pair of methods must differ beyond tolerance in some fp32 quality
# row, and a small change inside an objective must move that method's fp32 quality rows (not only its loss curve)
# by several tolerances: starbucks-srl's KL term, whose gradient is the weakest of the objectives (a softmax over
# the raw coordinates of a small vector is nearly uniform). Asked of every setting tried: the closest pair of
# methods and that KL change, as the largest |difference| over the fp32 Spearman and Pearson rows (x100):
#   8 steps, lr 1e-4, 200 pairs (the smoke suite):  closest pair 0.063 (mrl, starbucks-srl), KL x1.2 0.0002
#   16 steps, lr 5e-4, STS-B test (1,379 pairs):     closest pair 0.059,                      KL x1.2 0.0014
#   16 steps, lr 1e-3, STS-B test:                  closest pair 0.060,                      KL x1.2 0.0030
#   32 steps, lr 1e-3, STS-B test:                  closest pair 0.133,                      KL x1.2 0.0072
#   32 steps, lr 3e-3 / 64 steps, lr 1e-3:                                                    KL x1.2 0.013 / 0.022
# The smoke suite's setting moves the KL change about as far as thread counts move a row; 16 steps at 1e-3 is the
# cheapest setting tried that tells every pair of methods apart (see the tolerances below: KL x3 is caught), and
# more pairs make Spearman less jumpy (a swap of two near-tied pairs moves it less). 16 tiny-model steps x 8 trained
# models (and 3 heads fitted in seconds) are a small part of `bench reproduce` beside encoding SciFact with MiniLM.
REFERENCE_STEPS, REFERENCE_LR = 16, 1e-3


def reference_suite() -> Suite:
    """The pretrained default backbone on real data, sized for CI: the default suite's evaluation (so these runs
    are also the default suite's pretrained runs) on STS-B test and SciFact test in full (documents cut to 64
    tokens, as the default suite does)."""
    return replace(default(), name="reference", description="all-MiniLM-L6-v2 as-is on STS-B and SciFact",
                   tasks=("stsb", "scifact"))


def reference_training_suite() -> Suite:
    """The smoke suite's tiny random BERT and data, trained REFERENCE_STEPS steps at REFERENCE_LR (one checkpoint
    at the end: an intermediate one changes no number), evaluated on all of STS-B test; SMAE as in the smoke suite."""
    base = smoke()
    budget = replace(base.budget, steps=REFERENCE_STEPS, lr=REFERENCE_LR, checkpoint_every=REFERENCE_STEPS)
    return replace(base, name="reference-training", tasks=("stsb",), budget=budget,
                   description=f"tiny random BERT, {REFERENCE_STEPS} steps at lr {REFERENCE_LR:g}, STS-B test",
                   eval=replace(base.eval, max_pairs=None))


def reference_specs(methods: tuple[str, ...] | None = None) -> list[RunSpec]:
    """The reference runs: pretrained MiniLM, then every training method; `methods`: only those."""
    specs = (make_specs(reference_suite(), "pretrained")
             + make_specs(reference_training_suite(), ",".join(SMOKE_TRAINING_METHODS)))
    if methods is None:
        return specs
    unknown = sorted(set(methods) - {s.method for s in specs})
    if unknown:
        raise BenchError(f"the reference suite has no method {', '.join(unknown)}; choose from pretrained, "
                         f"{', '.join(SMOKE_TRAINING_METHODS)}")
    return [s for s in specs if s.method in methods]


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


def load_reference(results_dir: Path, specs: list[RunSpec]) -> pd.DataFrame:
    """The committed rows of exactly these specs, found by run_id whatever code made them (the newest code's file
    where a run_id has several); a spec without a reference run is an error."""
    frame = load_results(results_dir)
    missing = [s for s in specs if s.run_id not in set(frame["run_id"])]
    if missing:
        listed = ", ".join(f"{s.method} on {s.task} (run {s.run_id})" for s in missing[:4])
        raise BenchError(f"{results_dir} holds no reference for {len(missing)} run(s): {listed}. A changed spec has a "
                         "new run_id: regenerate with `bench reproduce --write-reference` and commit the new files")
    return frame[frame["run_id"].isin({s.run_id for s in specs})]


def rerun(specs: list[RunSpec], data_dir: Path, results_dir: Path, device: str | None) -> pd.DataFrame:
    """Run the specs into results_dir with a fresh cache: no encoding or checkpoint is reused, so the whole
    pipeline (training included) is exercised."""
    from bench.runner import run_all
    from methods import RunContext

    with tempfile.TemporaryDirectory(prefix="bench-reproduce-cache-") as cache:
        run_all(specs, RunContext(Path(data_dir), Path(results_dir), Path(cache), device))
    return load_results(results_dir)


@dataclass(frozen=True)
class Written:
    """What `write_reference` did: the run files now in the reference, the specs it kept as they were, and (with
    overwrite) the comparison of the replaced rows with the new ones."""

    paths: list[Path]
    kept: list[RunSpec]
    changes: pd.DataFrame | None


def write_reference(results_dir: Path, data_dir: Path, device: str | None = "cpu",
                    specs: list[RunSpec] | None = None, overwrite: bool = False) -> Written:
    """Run the reference specs that have no reference yet into results_dir. A spec that has one (by run_id, made
    by any code) is kept as it is, unless `overwrite`: then every spec is rerun in a temporary folder, compared
    with its old rows, and its old files (results CSV and per-example file, every code version) are replaced."""
    specs = reference_specs() if specs is None else specs
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    existing = set(load_results(results_dir)["run_id"])
    kept = [] if overwrite else [s for s in specs if s.run_id in existing]
    todo = [s for s in specs if s not in kept]
    changes = None
    if todo:
        with tempfile.TemporaryDirectory(prefix="bench-reference-") as tmp:
            new = rerun(todo, data_dir, Path(tmp), device)
            replaced = [s for s in todo if s.run_id in existing]
            if replaced:
                old = load_reference(results_dir, replaced)
                changes = compare(old, new[new["run_id"].isin({s.run_id for s in replaced})])
                _remove_runs(results_dir, {s.run_id for s in replaced})
            for path in result_files(Path(tmp)):
                for part in (path, examples_path(path)):
                    if part.exists():
                        shutil.move(str(part), results_dir / part.name)
    ids = {s.run_id for s in specs}
    return Written([p for p in result_files(results_dir) if run_id_of(p) in ids], kept, changes)


def run_id_of(path: Path) -> str | None:
    """The run_id a result file's name carries (bench.results.run_path: <method>__<task>__<run_id>__<code>.csv.gz)."""
    parts = Path(path).name.split("__")
    return parts[2] if len(parts) == 4 else None


def _remove_runs(results_dir: Path, run_ids: set[str]) -> None:
    """Delete every file (any code version) of these runs: <method>__<task>__<run_id>__<code>.csv.gz and beside it."""
    for path in sorted(Path(results_dir).rglob(f"*{SUFFIX}")):
        if run_id_of(path) in run_ids:
            examples_path(path).unlink(missing_ok=True)
            path.unlink()


def reproduce(results_dir: Path, data_dir: Path, device: str | None = "cpu",
              specs: list[RunSpec] | None = None) -> pd.DataFrame:
    """Rerun the reference specs in a temporary directory and compare them with the reference under results_dir."""
    specs = reference_specs() if specs is None else specs
    reference = load_reference(results_dir, specs)
    with tempfile.TemporaryDirectory(prefix="bench-reproduce-") as tmp:
        now = rerun(specs, data_dir, Path(tmp), device)
    return compare(reference, now)


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


def format_written(written: Written) -> str:
    """What --write-reference did: the files, the specs kept, and (overwrite) old vs new of every changed row."""
    lines = [str(p) for p in written.paths]
    if written.kept:
        lines.append(f"kept {len(written.kept)} existing reference run(s) as they were: "
                     + ", ".join(f"{s.method} on {s.task}" for s in written.kept)
                     + " (pass --overwrite to rerun and replace them)")
    if written.changes is not None:
        changed = written.changes[~(written.changes["reference"].eq(written.changes["now"])
                                    | (written.changes["reference"].isna() & written.changes["now"].isna()))]
        changed = changed.rename(columns={"reference": "old", "now": "new"})
        if changed.empty:
            lines.append(f"overwrite: no row of the {written.changes['run_id'].nunique()} replaced run(s) changed")
        else:
            with pd.option_context("display.float_format", lambda v: f"{v:.6g}", "display.width", 250,
                                   "display.max_rows", None):
                lines.append(changed[REPORT_COLUMNS[:7] + ["old", "new", "tolerance", "status"]].to_string(index=False))
            lines.append(f"overwrite: {len(changed)} changed row(s) in {changed['run_id'].nunique()} of "
                         f"{written.changes['run_id'].nunique()} replaced run(s) (status: against the old rows' "
                         "tolerance)")
    return "\n".join(lines)


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
