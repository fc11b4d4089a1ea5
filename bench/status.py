"""`bench status` and `bench run --dry-run`: the state of every run of a selection, one line each, by job.

finished: its result file (this code's) is in the results folder. running / failed: its sidecar says so
(bench/runstate.py: the error's last line, or for a killed process the last line of its job's log). missing:
nothing yet (an older code's result, if any, is named: it no longer counts as finished).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import runstate
from bench.launch import checkpoint_groups
from bench.results import is_finished, run_path
from bench.runner import run_code
from bench.spec import RunSpec

STATES = ("finished", "running", "failed", "missing")


def run_states(specs: list[RunSpec], results_dir: Path) -> pd.DataFrame:
    """One row per spec: job (its checkpoint-sharing group, as the launchers number them), state, run_id, method,
    task, seed, params (the hyperparameters that vary within the selection), detail."""
    varying = _varying_params(specs)
    rows = []
    for job, group in enumerate(checkpoint_groups(specs), 1):
        for spec in group:
            state, detail = _state(spec, Path(results_dir))
            params = {k: v for k, v in spec.params if k in varying.get(spec.method, ())}
            rows.append({"job": job, "state": state, "run_id": spec.run_id, "method": spec.method,
                         "task": spec.task, "seed": spec.seed,
                         "params": " ".join(f"{k}={v}" for k, v in params.items()).replace(" ", "") or "-",
                         "detail": detail})
    return pd.DataFrame(rows, columns=["job", "state", "run_id", "method", "task", "seed", "params", "detail"])


def _state(spec: RunSpec, results_dir: Path) -> tuple[str, str]:
    code = run_code(spec)
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
    """The table (without a params column when nothing is swept), then a count per state."""
    shown = table if (table["params"] != "-").any() else table.drop(columns="params")
    cells = [list(shown.columns)] + [[str(v) for v in row] for row in shown.itertuples(index=False)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(shown.columns))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
    counts = table["state"].value_counts()
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    return f"{text}\n{len(table)} run(s) in {table['job'].nunique()} job(s): {summary}"
