"""`bench status` and `bench run --dry-run`: the state of every run of a selection, one line each, by job.

finished: its result file (this code's) is in the results folder. running / failed: its sidecar says so
(bench/runstate.py: the error's last line, or for a killed process the last line of its job's log). missing:
nothing yet (an older code's result, if any, is named: it no longer counts as finished).

job: the id of the job a launcher last submitted the run in (Slurm's own, 3_0 for array job 3's element 0; the
process id of a local job), else the job number the launchers would give it. For Slurm jobs a `slurm` column adds
Slurm's state while squeue still lists the job (PENDING, RUNNING, COMPLETED, CANCELLED, ...; "-" once it is gone).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import runstate
from bench.launch import checkpoint_groups, slurm_states
from bench.results import is_finished, run_path
from bench.runner import run_code
from bench.spec import RunSpec

STATES = ("finished", "running", "failed", "missing")
COLUMNS = ["group", "job", "state", "slurm", "run_id", "method", "task", "seed", "params", "detail"]


def run_states(specs: list[RunSpec], results_dir: Path) -> pd.DataFrame:
    """One row per spec: group (its checkpoint-sharing group, as the launchers number them), job (its launched
    job's id, else the group number), state, slurm (Slurm's state of its job, "" when not submitted to Slurm),
    run_id, method, task, seed, params (the hyperparameters that vary within the selection), detail."""
    results_dir = Path(results_dir)
    codes = {spec: run_code(spec) for spec in specs}
    jobs = {spec: runstate.read_submission(results_dir, run_path(results_dir, spec, code).stem) or {}
            for spec, code in codes.items()}
    on_slurm = slurm_states([job["job_id"] for job in jobs.values() if job.get("launcher") == "slurm"])
    varying = _varying_params(specs)
    rows = []
    for number, group in enumerate(checkpoint_groups(specs), 1):
        for spec in group:
            state, detail = _state(spec, results_dir, codes[spec])
            job = jobs[spec]
            params = {k: v for k, v in spec.params if k in varying.get(spec.method, ())}
            rows.append({"group": number, "job": job.get("job_id", str(number)), "state": state,
                         "slurm": on_slurm.get(job["job_id"], "-") if job.get("launcher") == "slurm" else "",
                         "run_id": spec.run_id, "method": spec.method, "task": spec.task, "seed": spec.seed,
                         "params": " ".join(f"{k}={v}" for k, v in params.items()).replace(" ", "") or "-",
                         "detail": detail})
    return pd.DataFrame(rows, columns=COLUMNS)


def _state(spec: RunSpec, results_dir: Path, code: str) -> tuple[str, str]:
    if is_finished(results_dir, spec, code):
        return "finished", ""
    path = run_path(results_dir, spec, code)
    record = runstate.read(results_dir, path.stem)
    if record is not None:
        return runstate.describe(record)
    older = sorted(p.name for p in results_dir.glob(path.name.replace(code, "*")) if p != path)
    return "missing", f"older code's result on disk: {older[-1]}" if older else ""


def _varying_params(specs: list[RunSpec]) -> dict[str, set[str]]:
    values: dict[str, dict[str, set]] = {}
    for spec in specs:
        for key, value in spec.params:
            values.setdefault(spec.method, {}).setdefault(key, set()).add(repr(value))
    return {m: {k for k, v in fields.items() if len(v) > 1} for m, fields in values.items()}


def format_states(table: pd.DataFrame) -> str:
    """The table (without a params column when nothing is swept, nor a slurm column when nothing was submitted to
    Slurm), then a count per state."""
    hidden = ["group"] + [c for c, empty in (("params", "-"), ("slurm", "")) if (table[c] == empty).all()]
    shown = table.drop(columns=hidden)
    cells = [list(shown.columns)] + [[str(v) for v in row] for row in shown.itertuples(index=False)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(shown.columns))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
    counts = table["state"].value_counts()
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    return f"{text}\n{len(table)} run(s) in {table['group'].nunique()} job(s): {summary}"
