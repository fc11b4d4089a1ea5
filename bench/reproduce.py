"""`bench reproduce`: rerun a reference suite small enough for CI and compare it, row by row, with the reference
results committed under results/; any row outside its tolerance (or missing on either side) is drift.

The reference runs are found by run_id, which hashes the whole spec: a change to a spec default changes the
run_ids, and reproduce then says the reference is missing rather than comparing different things. Regenerate with
`bench reproduce --write-reference` (it writes only the reference runs) and commit the new files.

The tolerances below are for CPU runs (the reference is made on CPU, and `bench reproduce` runs on CPU unless told
otherwise). On GPU they do not apply: evaluation and training run under bf16 autocast there, whose rounding
(~4e-3 relative) is thousands of times the float32 noise the tolerances were set from; not measured here (no GPU
on this machine). Compare GPU runs with a reference written on the same kind of GPU.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from bench import BenchError
from bench.results import ROW_KEY, load_results
from bench.runner import make_specs
from bench.spec import RunSpec
from bench.suites import Suite, default, smoke

# The smoke suite's training methods (tiny random BERT, 8 steps), on its STS-B slice: they check that training is
# reproducible; retrieval is checked by the MiniLM run. A new method is one more name here.
SMOKE_TRAINING_METHODS = ("full", "mrl", "2dmse", "starbucks-srl", "starbucks", "separate", "qat", "ese")
SMOKE_TRAINING_METHODS += ("pca", "matryoshka-adaptor", "bebr")  # post-hoc heads: seconds each


def reference_suite() -> Suite:
    """The pretrained default backbone on real data, sized for CI (about 2 minutes on 2 cores): the default suite's
    evaluation (so these runs are also the default suite's pretrained runs) on STS-B test and SciFact test in full
    (documents cut to 64 tokens, as the default suite does)."""
    return replace(default(), name="reference", description="all-MiniLM-L6-v2 as-is on STS-B and SciFact",
                   tasks=("stsb", "scifact"))


def reference_specs() -> list[RunSpec]:
    training = replace(smoke(), tasks=("stsb",))
    return make_specs(reference_suite(), "pretrained") + make_specs(training, ",".join(SMOKE_TRAINING_METHODS))


@dataclass(frozen=True)
class Tolerance:
    """|now - reference| <= absolute + relative * |reference|."""

    absolute: float
    relative: float = 0.0

    def allows(self, reference: float, now: float) -> bool:
        if math.isnan(reference) or math.isnan(now):
            return math.isnan(reference) and math.isnan(now)
        return abs(now - reference) <= self.absolute + self.relative * abs(reference)

    def __str__(self) -> str:
        return f"{self.absolute:g}" + (f" + {self.relative:g}*|ref|" if self.relative else "")


# Why these numbers: on one machine a CPU run is bit-identical (any thread count; a test checks that two runs give
# equal rows), but another CPU's kernels round differently, by a few float32 ulps (a different batch padding moves
# MiniLM's embeddings by ~1e-6 here), which can swap near-tied pairs or documents. benchmarks/reproduce_tolerance.py
# measures it with relative noise of 1e-6 and 1e-5 on the embeddings (MiniLM) and on the initial weights (smoke
# training methods): fp32 cells moved by at most 0.021 (STS, tiny model, 1e-5) and 0.004 (nDCG@10); int8 STS by
# 0.026; but a quantized cell can jump when one value crosses an int8 bucket or a sign: binary STS of the tiny model
# moved by 0.25 at 1e-5, and one SciFact query changing its rank moves a retrieval mean by up to 100 / 300 = 0.33
# (seen: 0.17). So fp32 is tight, quantized cells allow one such jump, all stay below the differences the
# benchmark reports, and a drift in a method still shows in its fp32 cells. Scores are x100.
STS_METRICS = ("spearman", "pearson")
STS_TOLERANCE = {"fp32": Tolerance(0.05), "int8": Tolerance(0.1), "binary": Tolerance(0.35)}
RETRIEVAL_TOLERANCE = {"fp32": Tolerance(0.05), "int8": Tolerance(0.35), "binary": Tolerance(0.35),
                       "binary+rescore": Tolerance(0.35)}
LOSS_TOLERANCE = Tolerance(1e-4, 1e-3)  # training losses: float noise compounds over steps
COST_MARKERS = ("seconds", "_ms", "memory")  # machine-dependent cost rows: never compared


def tolerance(metric: str, precision: str) -> Tolerance | None:
    """The tolerance of one row; None for cost rows (timings, memory), which differ between machines."""
    if any(marker in metric for marker in COST_MARKERS):
        return None
    if "bytes" in metric or metric == "relative_encode_cost":
        return Tolerance(0.0)  # sizes and layer ratios are exact
    if "loss" in metric:
        return LOSS_TOLERANCE
    table = STS_TOLERANCE if metric in STS_METRICS else RETRIEVAL_TOLERANCE
    return table.get(precision, Tolerance(0.35))


def compare(reference: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """One row per compared result row: reference, now, tolerance and status (ok, DRIFT, missing now,
    not in reference). Cost rows are left out."""
    keys = ROW_KEY + ["method", "task"]
    both = reference[keys + ["score"]].merge(now[keys + ["score"]], on=keys, how="outer",
                                             suffixes=("_ref", "_now"), indicator=True)
    tols = [tolerance(m, p) for m, p in zip(both["metric"], both["precision"])]
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
    """The committed rows of exactly these specs; a spec without a reference run is an error."""
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


def write_reference(results_dir: Path, data_dir: Path, device: str | None = "cpu",
                    specs: list[RunSpec] | None = None) -> list[Path]:
    """Run the reference specs into results_dir (finished ones are kept); return the run files."""
    from bench.results import run_path
    from bench.runner import run_code

    specs = reference_specs() if specs is None else specs
    rerun(specs, data_dir, results_dir, device)
    return [run_path(results_dir, s, run_code(s)) for s in specs]


def reproduce(results_dir: Path, data_dir: Path, device: str | None = "cpu",
              specs: list[RunSpec] | None = None) -> pd.DataFrame:
    """Rerun the reference specs in a temporary directory and compare them with the reference under results_dir."""
    specs = reference_specs() if specs is None else specs
    reference = load_reference(results_dir, specs)
    with tempfile.TemporaryDirectory(prefix="bench-reproduce-") as tmp:
        now = rerun(specs, data_dir, Path(tmp), device)
    return compare(reference, now)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, the full-size fp32 cell's main metric: what a reader checks first."""
    main = table[table["metric"].isin(["spearman", "ndcg@10"]) & (table["precision"] == "fp32")]
    full = main.groupby("run_id")[["layer", "dim"]].transform("max")
    return main[(main["layer"] == full["layer"]) & (main["dim"] == full["dim"])]


def format_report(table: pd.DataFrame, max_rows: int = 40) -> str:
    """The headline rows and every row out of tolerance, then a one-line verdict."""
    bad = table[table["status"] != "ok"]
    columns = ["method", "task", "layer", "dim", "precision", "metric", "reference", "now", "tolerance", "status"]
    shown = pd.concat([headline(table), bad]).drop_duplicates(subset=ROW_KEY).sort_values(columns[:6] + ["step"],
                                                                                          kind="mergesort")
    with pd.option_context("display.float_format", lambda v: f"{v:.4f}", "display.width", 200):
        text = shown[columns].head(max_rows).to_string(index=False)
    if len(shown) > max_rows:
        text += f"\n... and {len(shown) - max_rows} more row(s) not shown"
    runs = table["run_id"].nunique()
    if bad.empty:
        return text + f"\nreproduce: OK, {len(table)} rows of {runs} runs within tolerance (timings not compared)"
    counts = ", ".join(f"{n} {s}" for s, n in bad["status"].value_counts().sort_index().items())
    return text + (f"\nreproduce: DRIFT, {len(bad)} of {len(table)} rows of {runs} runs ({counts}); if the change is "
                   "intended, regenerate with `bench reproduce --write-reference` and commit results/")
