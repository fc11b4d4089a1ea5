"""What `bench status` knows about a run that has no result file (yet): a small JSON sidecar per run.

`<results>/.bench/runs/<result file stem>.json` is written when a run starts ("running": host, pid, start time, and
the submitit job id and log when the run is inside a launched job), replaced when it fails ("failed": the error's
last line) and removed once the result file is written. A finished run is its result file alone, so the sidecars
never decide what is finished. The folder is hidden and holds no CSV: loading results never sees it.

A run whose process was killed (SIGKILL, out of memory, a node lost) cannot write "failed"; its sidecar still says
"running". On the same host, `describe` notices that the process is gone and reports it failed, with the last line
of its job's log when it ran in a job.

`<results>/.bench/jobs/<result file stem>.json` records the job a launcher last submitted the run in (its id, as
the launcher names it: Slurm's `3_0` for array job 3's element 0, and its log). It outlives the run, so `bench
status` can name the job of a finished run too, and of a run whose job is still waiting in Slurm's queue.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
from pathlib import Path

STATE_DIR = Path(".bench")  # under the results folder: sidecars and locks (not results)
_job: dict = {}  # the launched job this process runs in (bench/launch.py sets it), recorded with every run


def set_job(job_id: str, log: str) -> None:
    """Record that this process runs inside launched job `job_id`, whose stderr log is `log`."""
    _job.clear()
    _job.update(job_id=job_id, log=log)


def sidecar_path(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / STATE_DIR / "runs" / f"{stem}.json"


def submission_path(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / STATE_DIR / "jobs" / f"{stem}.json"


def lock_path(results_dir: Path, stem: str) -> Path:
    """The file lock that one process holds while it produces the result file `stem`."""
    return Path(results_dir) / STATE_DIR / "locks" / f"{stem}.lock"


def read(results_dir: Path, stem: str) -> dict | None:
    return _read(sidecar_path(results_dir, stem))


def read_submission(results_dir: Path, stem: str) -> dict | None:
    """The job a launcher last submitted the run in: launcher, job_id, log, submitted_utc (None if never)."""
    return _read(submission_path(results_dir, stem))


def record_submission(results_dir: Path, stem: str, launcher: str, job_id: str, log: str) -> None:
    _write_file(submission_path(results_dir, stem),
                {"launcher": launcher, "job_id": job_id, "log": log, "submitted_utc": _now()})


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none, or half-written by a process killed mid-write: nothing known
        return None


def _write(results_dir: Path, stem: str, record: dict) -> None:
    _write_file(sidecar_path(results_dir, stem), record)


def _write_file(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, path)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def error_line(exc: BaseException) -> str:
    """The last line of an error, with its type unless it is one of ours (a BenchError is one line already)."""
    from bench import BenchError

    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if isinstance(exc, BenchError) else f"{type(exc).__name__}: {text}".rstrip(": ")


@contextlib.contextmanager
def recording(results_dir: Path, stem: str):
    """Mark the run running while the block produces its result file; failed (with the error line) if it raises;
    no sidecar once it returns."""
    record = {"state": "running", "host": socket.gethostname(), "pid": os.getpid(), "started_utc": _now(), **_job}
    _write(results_dir, stem, record)
    try:
        yield
    except BaseException as exc:  # interrupted and pre-empted runs too: they did not finish
        error = error_line(exc) if isinstance(exc, Exception) else f"interrupted ({type(exc).__name__})"
        _write(results_dir, stem, {**record, "state": "failed", "error": error, "ended_utc": _now()})
        raise
    sidecar_path(results_dir, stem).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process of that id: alive
        return True
    return True


def last_log_line(log: str | None) -> str:
    if not log:
        return ""
    try:
        lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def describe(record: dict) -> tuple[str, str]:
    """(state, detail) of an unfinished run's sidecar: "running" or "failed", and what is known about it."""
    where = f"pid {record['pid']} on {record['host']}" + (f", job {record['job_id']}" if record.get("job_id") else "")
    log = f" (log: {record['log']})" if record.get("log") else ""
    if record["state"] == "failed":
        return "failed", f"{record['error']}{log}"
    if record["host"] == socket.gethostname() and not _alive(record["pid"]):
        last = last_log_line(record.get("log"))
        return "failed", f"the process ended without finishing ({where}, killed?)" + (
            f": last log line: {last}" if last else "") + log
    return "running", f"since {record['started_utc']}, {where}{log}"
