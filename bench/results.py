"""Tidy result rows: one CSV file per run, written atomically, never overwritten, validated on load.

One row per (run, layer, dim, precision, task, split, metric[, step]). Cost (seconds, bytes) and training
losses are rows too, so cost and quality share one table. Run-level rows (a wall time, a loss) carry
layer = dim = -1; `step` is -1 except on training-curve rows. Scores are stored unrounded.

Precision is a column (fp32, int8, binary, binary+rescore), never part of a metric name; `bytes_per_vector` is
what one vector takes in the search index (4d, d, d/8, d/8). Cost rows of every (layer, dim, precision) cell:
`relative_encode_cost` (layers run / layers of the full backbone: the share of a full forward pass), and for
retrieval `index_bytes` (the serialized faiss index; binary+rescore's rescoring vectors are read from storage and
not counted) and `search_ms_per_query` (median of repeated searches of all queries, faiss-cpu on one thread of
the evaluating machine's CPU). The int8 calibration side, rescoring multiplier and documents, and search index
are in `eval`. STS has no search, so binary+rescore gives no STS rows.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError
from bench.spec import RunSpec, budget_identity

SCHEMA_VERSION = 1
COLUMNS = [
    "run_id", "method", "params_hash", "params", "backbone", "train_data", "budget", "seed",
    "layer", "dim", "is_target", "precision", "bytes_per_vector", "task", "split", "metric", "score",
    "n_examples", "step", "eval", "git_sha", "created_utc", "schema_version",
]
INT_COLUMNS = ["seed", "layer", "dim", "bytes_per_vector", "n_examples", "step", "schema_version"]
ROW_KEY = ["run_id", "layer", "dim", "precision", "split", "metric", "step"]


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_fields(spec: RunSpec) -> dict:
    """The columns every row of a run shares."""
    return {
        "run_id": spec.run_id, "method": spec.method, "params_hash": spec.params_hash,
        "params": json.dumps(dict(spec.params), sort_keys=True, default=str), "backbone": spec.backbone,
        "train_data": spec.train_data, "budget": json.dumps(budget_identity(spec.budget), sort_keys=True),
        "seed": spec.seed, "task": spec.task, "eval": json.dumps(asdict(spec.eval), sort_keys=True),
        "git_sha": git_sha(), "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "schema_version": SCHEMA_VERSION,
    }


def make_row(spec: RunSpec, *, metric: str, score: float, split: str = "test", layer: int = -1, dim: int = -1,
             precision: str = "fp32", bytes_per_vector: int = -1, is_target: bool = False, n_examples: int = -1,
             step: int = -1, shared: dict | None = None) -> dict:
    row = dict(shared) if shared is not None else run_fields(spec)
    row.update(layer=layer, dim=dim, precision=precision, bytes_per_vector=bytes_per_vector, is_target=is_target,
               split=split, metric=metric, score=float(score), n_examples=n_examples, step=step)
    return row


def run_path(results_dir: Path, spec: RunSpec) -> Path:
    safe_task = spec.task.replace("/", "_")
    return Path(results_dir) / f"{spec.method}__{safe_task}__{spec.run_id}.csv"


def is_finished(results_dir: Path, spec: RunSpec) -> bool:
    return run_path(results_dir, spec).exists()


def examples_path(csv_path: Path) -> Path:
    """Per-example values of a run (pair similarities, per-query metrics) beside its CSV."""
    return Path(csv_path).with_suffix(".examples.npz")


def write_run(results_dir: Path, spec: RunSpec, rows: list[dict], examples: dict | None = None) -> Path:
    """Write a finished run atomically (temp file + rename). An existing file is never overwritten.
    The per-example file is written first: the CSV's presence means the run is complete."""
    path = run_path(results_dir, spec)
    if path.exists():
        raise BenchError(f"{path} already exists; results are never overwritten (delete it to rerun)")
    frame = validate(pd.DataFrame(rows, columns=COLUMNS), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if examples:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **{k: np.asarray(v, dtype=np.float32) for k, v in examples.items()})
        os.chmod(tmp, 0o644)
        os.replace(tmp, examples_path(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as fh:
        frame.to_csv(fh, index=False)  # floats are written with repr: round-trips exactly
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def validate(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise BenchError(f"{source}: not a results file (missing columns {', '.join(missing)}); "
                         "delete or move it out of the results directory")
    if frame.empty:
        raise BenchError(f"{source}: results file has no rows; delete it and rerun")
    try:
        for col in INT_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="raise").astype("int64")
        frame["score"] = pd.to_numeric(frame["score"], errors="raise").astype("float64")
        frame["is_target"] = frame["is_target"].map(_to_bool)
    except (ValueError, TypeError) as exc:
        raise BenchError(f"{source}: corrupt results file ({exc}); delete it and rerun that run") from None
    if frame[COLUMNS].drop(columns=["score"]).isna().any().any():
        raise BenchError(f"{source}: corrupt results file (empty cells); delete it and rerun that run")
    if (frame["schema_version"] != SCHEMA_VERSION).any():
        raise BenchError(f"{source}: schema_version is not {SCHEMA_VERSION}; rerun with this version of the suite")
    dup = frame.duplicated(ROW_KEY)
    if dup.any():
        first = frame[dup].iloc[0]
        raise BenchError(f"{source}: duplicate rows for run {first.run_id} metric {first.metric} "
                         f"(layer {first.layer}, dim {first.dim}); remove the duplicate file")
    return frame[COLUMNS]


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value) in ("True", "true", "1"):
        return True
    if str(value) in ("False", "false", "0"):
        return False
    raise ValueError(f"is_target must be True/False, got {value!r}")


def read_examples(path: Path) -> dict[str, np.ndarray]:
    """Every per-example array of a run, read in full, so a damaged file fails here (one line), not mid-statistics.
    A zip that was cut short or corrupted fails in many ways (BadZipFile, zlib.error, EOFError, ValueError, CRC
    errors, NotImplementedError for a garbled compression method): all of them mean the same thing here."""
    try:
        with np.load(path) as npz:
            return {key: np.asarray(npz[key]) for key in npz.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse the archive is a damaged file
        raise BenchError(f"{path}: corrupt per-example file ({type(exc).__name__}); delete the run's files (its CSV "
                         "and this file) and rerun it") from None


def read_run_file(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"params_hash": str, "run_id": str, "git_sha": str}, keep_default_na=False,
                            na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: corrupt results file ({str(exc).splitlines()[0]}); delete it and rerun") from None
    return validate(frame, str(path))


def load_results(results_dir: Path) -> pd.DataFrame:
    """Every run file under results_dir, validated, as one frame. Duplicated runs are refused."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchError(f"results directory {results_dir} does not exist; run `bench run` first or pass --results-dir")
    files = sorted(results_dir.rglob("*.csv"))
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    frames = [read_run_file(p) for p in files]
    frame = pd.concat(frames, ignore_index=True)
    dup = frame.duplicated(ROW_KEY)
    if dup.any():
        run = frame[dup].iloc[0].run_id
        holders = [str(p) for p, f in zip(files, frames) if (f.run_id == run).any()]
        raise BenchError(f"run {run} appears in several files ({', '.join(holders)}); keep one of them")
    return frame
