"""Tidy result rows: one gzip-compressed CSV file per run, written atomically, never overwritten, validated on load.

The file is `<method>__<task>__<run_id>__<code>.csv.gz`: a plain CSV that pandas (`pd.read_csv`), `zcat` or any
gzip reader opens as it is; compressed because the spec columns (params, budget, eval, task_meta JSON) repeat on
every row, which made a default-suite run 1-2.7 MB of text and compresses about 50x.

One row per (run, layer, dim, precision, variant, task, split, metric[, step]); `variant` is "" on the prefix grid and
names a cell beyond it (a random coordinate subset, a query layer other than the documents': bench/variants.py).
Cost (seconds, bytes) and training losses are rows too, so cost and quality share one table. Run-level rows (a wall
time, a loss) carry layer = dim = -1; `step` is -1 except on training-curve rows. Scores are stored unrounded.

Precision is a column (bench/precisions.py: fp32, int8, binary, binary+rescore, binary+rescore-int8/-fp32), never
part of a metric name; `bytes_per_vector` is every byte a query reads per document (4d, d, d/8, d/8, d/8 + d,
d/8 + 4d). Cost rows of every (layer, dim, precision) cell: `relative_encode_cost` (layers run / layers of the full
backbone: the share of a full forward pass), and for retrieval `index_bytes` (the serialized faiss index, plus the
rescoring copy of binary+rescore-int8/-fp32) and `search_ms_per_query` (median of repeated searches of all
queries, faiss-cpu on one thread of the evaluating machine's CPU). The int8 calibration side, rescoring multiplier
and search index are in `eval` (the whole EvalSpec as JSON: with the pooling, prompts by role and head layers the model was served
with, storage and example_cells too; the run_id leaves later fields out at their "as before" value, the column
records them all).
STS has no search, so the binary+rescore precisions give no STS rows.

Provenance columns: `code` is the fingerprint of the source that produced the run (bench/fingerprint.py), `git_sha`
and `git_dirty` the checkout it ran from, `task_meta` the task's catalog record as JSON (its family and main
metric: how reports judge the task), `head` the post-pool head a checkpoint applied ("" for none), `device` the
device that evaluated (timings depend on it), `dtype` the compute dtype of training and encoding (fp32 or bf16).
Files from before the dtype column read as fp32: what CPU runs used then (CUDA runs then used bf16 autocast).

A results folder may hold one spec (run_id) under several code fingerprints: a rerun after a code change writes a
new file and never touches the old one. Loading keeps, per run_id, the newest code's rows (by created_utc) and
counts the superseded ones, so reports show what the current code produced while the history stays on disk.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import logging
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError
from bench.catalog import TASK_META, TaskMeta
from bench.fingerprint import git_state
from bench.spec import RunSpec, budget_identity, recorded_eval

log = logging.getLogger("bench")
SCHEMA_VERSION = 2
COLUMNS = [
    "run_id", "method", "params_hash", "params", "backbone", "train_data", "budget", "seed",
    "layer", "dim", "is_target", "precision", "bytes_per_vector", "task", "split", "metric", "score",
    "n_examples", "step", "eval", "head", "task_meta", "code", "git_sha", "git_dirty", "device", "dtype",
    "created_utc", "schema_version", "variant",
]
# Columns added after results were committed, and the value older files mean: filled in when they are read.
LATER_COLUMNS = {"dtype": "fp32", "variant": ""}
INT_COLUMNS = ["seed", "layer", "dim", "bytes_per_vector", "n_examples", "step", "schema_version"]
BOOL_COLUMNS = ["is_target", "git_dirty"]
ROW_KEY = ["run_id", "layer", "dim", "precision", "variant", "split", "metric", "step"]
OPTIONAL_TEXT = ["head", "variant"]  # may be empty


def run_fields(spec: RunSpec, code: str, task_meta: TaskMeta | None = None, device: str = "cpu") -> dict:
    """The columns every row of a run shares; `task_meta` defaults to the catalog's record of the spec's task."""
    if task_meta is None:
        if spec.task not in TASK_META:
            raise BenchError(f"task {spec.task!r} has no catalog record; pass its TaskMeta")
        task_meta = TASK_META[spec.task]
    sha, dirty = git_state()
    return {
        "run_id": spec.run_id, "method": spec.method, "params_hash": spec.params_hash,
        "params": json.dumps(dict(spec.params), sort_keys=True, default=str), "backbone": spec.backbone,
        "train_data": spec.train_data, "budget": json.dumps(budget_identity(spec.budget), sort_keys=True),
        "seed": spec.seed, "task": spec.task, "eval": json.dumps(recorded_eval(spec.eval), sort_keys=True, default=str),
        "head": "", "task_meta": task_meta.to_json(), "code": code, "git_sha": sha, "git_dirty": dirty,
        "device": device, "dtype": spec.dtype,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "schema_version": SCHEMA_VERSION,
    }


def make_row(shared: dict, *, metric: str, score: float, split: str = "test", layer: int = -1, dim: int = -1,
             precision: str = "fp32", bytes_per_vector: int = -1, is_target: bool = False, n_examples: int = -1,
             step: int = -1, head: str = "", variant: str = "") -> dict:
    """One row: the run's shared columns (`run_fields`) and this row's own."""
    row = dict(shared)
    row.update(layer=layer, dim=dim, precision=precision, bytes_per_vector=bytes_per_vector, is_target=is_target,
               split=split, metric=metric, score=float(score), n_examples=n_examples, step=step, head=head,
               variant=variant)
    return row


SUFFIX = ".csv.gz"


def run_path(results_dir: Path, spec: RunSpec, code: str) -> Path:
    """<method>__<task>__<run_id>__<code>.csv.gz: one file per spec and code version."""
    safe_task = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in spec.task)
    return Path(results_dir) / f"{spec.method}__{safe_task}__{spec.run_id}__{code}{SUFFIX}"


def run_name(path: Path) -> str:
    """A result file's name without its suffix: <method>__<task>__<run_id>__<code>."""
    return Path(path).name.removesuffix(SUFFIX)


def is_finished(results_dir: Path, spec: RunSpec, code: str) -> bool:
    return run_path(results_dir, spec, code).exists()


def examples_path(csv_path: Path) -> Path:
    """Per-example values of a run (pair similarities, per-query metrics) beside its CSV."""
    return Path(csv_path).with_name(f"{run_name(csv_path)}.examples.npz")


def write_run(results_dir: Path, spec: RunSpec, code: str, rows: list[dict], examples: dict | None = None) -> Path:
    """Write a finished run atomically (temp file + rename). An existing file is never overwritten.
    The per-example file is written first: the CSV's presence means the run is complete."""
    path = run_path(results_dir, spec, code)
    if path.exists():
        raise BenchError(f"{path} already exists; results are never overwritten (delete it to rerun)")
    frame = validate(pd.DataFrame(rows, columns=COLUMNS), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if examples:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **{k: _stored_array(v) for k, v in examples.items()})
        os.chmod(tmp, 0o644)
        os.replace(tmp, examples_path(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
    with os.fdopen(fd, "wb") as fh:  # floats are written with repr: round-trips exactly; mtime 0: same rows, same bytes
        frame.to_csv(fh, index=False, compression={"method": "gzip", "mtime": 0})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def _stored_array(value) -> np.ndarray:
    """Per-example values as float32 (they feed statistics; scores are stored exactly in the CSV); identities
    (sentence indices, query ids) keep their integer or text type."""
    array = np.asarray(value)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind in "USO":
        return array.astype(str)
    return array.astype(np.float32)


def validate(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    for col, value in LATER_COLUMNS.items():
        if col not in frame.columns:
            frame[col] = value
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
        for col in BOOL_COLUMNS:
            frame[col] = frame[col].map(_to_bool)
    except (ValueError, TypeError) as exc:
        raise BenchError(f"{source}: corrupt results file ({exc}); delete it and rerun that run") from None
    for col in OPTIONAL_TEXT:  # an empty text cell reads back as NaN
        frame[col] = frame[col].astype(object).where(frame[col].notna(), "")
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
    raise ValueError(f"a True/False column holds {value!r}")


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
        frame = pd.read_csv(path, dtype={"params_hash": str, "run_id": str, "git_sha": str, "code": str},
                            keep_default_na=False, na_values=[""], compression="gzip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, gzip.BadGzipFile, EOFError,
            zlib.error) as exc:  # BadGzipFile: not gzip at all; EOFError: cut short; zlib.error: garbled
        raise BenchError(f"{path}: corrupt results file ({str(exc).splitlines()[0]}); delete it and rerun") from None
    return validate(frame, str(path))


def result_files(results_dir: Path) -> list[Path]:
    """The run files of a results folder, newest code version per run_id (see the module docstring)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchError(f"results directory {results_dir} does not exist; run `bench run` first or pass --results-dir")
    return [path for path, _ in _latest(results_dir)]


def load_results(results_dir: Path, examples: bool = False, variants: bool = False) -> pd.DataFrame:
    """Every run file under results_dir, validated, as one frame: per run_id the newest code version only.
    `examples`: each row also names its run's per-example file (column `examples`, beside the run file), for
    statistics that read them without reading the run files again. `variants`: also the cells beyond the prefix
    grid (random subsets, asymmetric layers: bench/variants.py); without it every row has variant "", so the
    tables, drift checks and statistics that group by (layer, dim, precision) see the prefix grid alone."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchError(f"results directory {results_dir} does not exist; run `bench run` first or pass --results-dir")
    kept = _latest(results_dir)
    if not kept:
        return pd.DataFrame(columns=COLUMNS + ["examples"] * examples)
    if examples:
        kept = [(p, f.assign(examples=str(examples_path(p)))) for p, f in kept]
    frame = pd.concat([f for _, f in kept], ignore_index=True)
    dup = frame.duplicated(ROW_KEY)
    if dup.any():
        run = frame[dup].iloc[0].run_id
        holders = [str(p) for p, f in kept if (f.run_id == run).any()]
        raise BenchError(f"run {run} appears in several files ({', '.join(holders)}); keep one of them")
    return frame if variants else frame[frame["variant"] == ""].reset_index(drop=True)


def _latest(results_dir: Path) -> list[tuple[Path, pd.DataFrame]]:
    """(path, rows) of every run file, keeping per run_id the newest code version (created_utc, then name)."""
    files = [(p, read_run_file(p)) for p in sorted(results_dir.rglob(f"*{SUFFIX}"))]
    newest: dict[tuple, tuple[str, str, Path, pd.DataFrame]] = {}
    for path, frame in files:
        for run_id, part in frame.groupby("run_id", sort=True):
            code = part["code"].iloc[0]
            stamp = (part["created_utc"].max(), path.name)
            held = newest.get(run_id)
            if held is not None and held[2] != path and held[0] == code:
                raise BenchError(f"run {run_id} (code {code}) appears in several files ({held[2]}, {path}); "
                                 "keep one of them")
            if held is None or stamp > held[1]:
                newest[run_id] = (code, stamp, path, part)
    superseded = sum(f["run_id"].nunique() for _, f in files) - len(newest)
    if superseded:
        log.info("%s: %d result(s) of older code superseded by a newer run of the same spec", results_dir,
                 superseded)
    by_path: dict[Path, list[pd.DataFrame]] = {}
    for _, _, path, part in newest.values():
        by_path.setdefault(path, []).append(part)
    return [(p, pd.concat(parts)) for p, parts in sorted(by_path.items())]
