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
term x3, 2dmse's layer weights x1.2) must show as DRIFT of that method (a test does exactly that). The tolerances,
the comparison and the report are in bench/drift.py (torch-free).

The tolerances are for CPU runs (the reference is made on CPU, and `bench reproduce` runs on CPU unless told
otherwise), in fp32. On GPU they were not measured (no GPU on this machine); a `--dtype bf16` run is another
run_id, so it is never compared with the fp32 reference (its rounding, ~4e-3 relative, is thousands of times the
float32 noise the tolerances were set from). Compare GPU runs with a reference written on the same kind of GPU.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from bench import BenchError
from bench.drift import REPORT_COLUMNS, compare
from bench.results import SUFFIX, examples_path, load_results, result_files
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


# ---- what --write-reference prints ----

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
