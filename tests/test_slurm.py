"""The Slurm launcher against a real Slurm: a one-node cluster on this machine (.ci/slurm-up.sh, which CI runs).

A smoke sweep submitted as a job array writes the rows of the in-process run; `bench status` names the jobs as Slurm
does (array job N's elements N_0, N_1) with Slurm's state from squeue; a training job cancelled with `scancel`
mid-training resumes from its checkpoint when the same command is run again, to the rows of an uninterrupted run.

Oracle: the in-process `bench run` of the same selection (CPU, same seeds: identical rows, timings aside, as in
tests/test_launch.py), and Slurm's own squeue for the job ids and states.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.launch import slurm_states

from test_launch import same_rows  # the launcher tests' comparison: identical rows, timings aside

REPO = Path(__file__).resolve().parents[1]

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}  # Slurm's job states after which a job runs no more
POLLS, POLL_SECONDS = 1800, 1.0  # up to 30 minutes per wait: a bound for a stuck cluster, not a timing claim
SWEEP = ["--methods", "full,mrl", "--tasks", "stsb", "--precisions", "fp32,int8"]
STEPS = 96  # long enough that a scancel at the first checkpoint (step 4) lands mid-training (KillWait: 5 s)
TRAINING = ["--methods", "full", "--tasks", "stsb", "--precisions", "fp32", "--steps", str(STEPS)]

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", autouse=True)
def slurm() -> None:
    """Skip where there is no Slurm here; fail instead where BENCH_REQUIRE_SLURM is set (.ci/run sets it)."""
    why = _no_local_slurm()
    if why and os.environ.get("BENCH_REQUIRE_SLURM"):
        pytest.fail(f"BENCH_REQUIRE_SLURM is set, but {why}")
    if why:
        pytest.skip(why)


def _no_local_slurm() -> str | None:
    """Why the cluster cannot run these tests, if it cannot: the jobs write into pytest's temporary folders, so it
    must be this machine alone."""
    if shutil.which("sbatch") is None:
        return "Slurm's sbatch is not on PATH (.ci/slurm-up.sh starts a one-node cluster here, as root)"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"no Slurm controller answers ({proc.stderr.strip()}); .ci/slurm-up.sh starts one"
    nodes = sorted(set(proc.stdout.split()))
    if nodes != [socket.gethostname().split(".")[0]]:
        return f"the Slurm nodes {nodes} are not this machine alone, and the test's folders are local to it"
    return None


def bench_run(args: list[str], root: Path, launcher: str = "slurm") -> str:
    """`bench run --suite smoke ARGS` in a process of its own (progress bars on: the job logs show training's
    first step); Slurm jobs get one CPU and 2 GB each, two at a time (this machine's two cores)."""
    slurm_args = ["--cpus-per-task", "1", "--mem", "2G", "--max-parallel", "2"] if launcher == "slurm" else []
    cmd = [sys.executable, "-m", "bench.cli", "run", "--suite", "smoke", *args, "--results-dir", str(root / "results"),
           "--cache-dir", str(root / "cache"), "--device", "cpu", "--launcher", launcher, *slurm_args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "BENCH_QUIET": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def submitted_ids(out: str) -> list[str]:
    return re.search(r"submitted \d+ job\(s\) for \d+ run\(s\): ([^;]+);", out).group(1).split(", ")


def wait_until_ended(job_ids: list[str]) -> dict[str, str]:
    """Poll squeue until every job has ended; their final states."""
    for _ in range(POLLS):
        states = slurm_states(job_ids)
        if all(states.get(job) in FINAL for job in job_ids):
            return states
        time.sleep(POLL_SECONDS)
    pytest.fail(f"Slurm jobs {job_ids} still not ended: {slurm_states(job_ids)}")


def status_lines(args: list[str], root: Path, capsys) -> list[str]:
    """`bench status`'s lines, also shown on the terminal (pytest -s) for the record."""
    assert main(["status", "--suite", "smoke", *args, "--results-dir", str(root / "results")]) == 0
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{out}", end="")
    return out.splitlines()


def test_a_job_array_writes_the_in_process_rows_and_status_shows_slurms_ids_and_states(tmp_path, capsys):
    reference = tmp_path / "in-process"
    bench_run(SWEEP, reference, launcher="in-process")
    out = bench_run(SWEEP, tmp_path)
    jobs = submitted_ids(out)
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_0", f"{array}_1"], out  # one array, an element per method
    assert wait_until_ended(jobs) == {job: "COMPLETED" for job in jobs}

    assert same_rows(tmp_path / "results", reference / "results")
    lines = status_lines(SWEEP, tmp_path, capsys)
    assert lines[0].split()[:3] == ["job", "state", "slurm"]
    for job, method in zip(jobs, ["full", "mrl"]):
        assert [line.split()[:3] for line in lines if f" {method} " in line] == [[job, "finished", "COMPLETED"]]
    assert lines[-1] == "2 run(s) in 2 job(s): 2 finished, 0 running, 0 failed, 0 missing"


def test_a_job_cancelled_mid_training_resumes_from_its_checkpoint_when_run_again(tmp_path, capsys):
    """scancel at the first checkpoint (step 4): the job is suspended first (`scontrol suspend`, SIGSTOP), since
    scancel's SIGTERM is ignored by submitit's jobs and the SIGKILL comes KillWait seconds later, in which a fast
    machine would train to the end (seen in a tox run: "training finished before scancel took effect"). The run is failed and
    its job CANCELLED in `bench status`, the model unfinished. The same command again submits a job whose training
    starts at the newest checkpoint (its log's first progress line), and writes the rows of an uninterrupted run."""
    (job,) = submitted_ids(bench_run(TRAINING, tmp_path))
    for _ in range(POLLS):
        checkpoints = list((tmp_path / "cache" / "checkpoints").rglob("step-*"))
        if checkpoints or slurm_states([job]).get(job) in FINAL:
            break
        time.sleep(POLL_SECONDS / 4)
    assert checkpoints, f"job {job} ended before its first checkpoint: {slurm_states([job])}"
    subprocess.run(["scontrol", "suspend", job], check=True)  # no step more while Slurm cancels it
    subprocess.run(["scancel", job], check=True)
    assert wait_until_ended([job]) == {job: "CANCELLED"}
    model_dir = checkpoints[0].parent
    assert not (model_dir / "final").exists(), "training finished before scancel took effect: raise STEPS"
    newest = max(int(p.name.split("-")[1]) for p in model_dir.glob("step-*"))  # the one a rerun resumes from
    assert 4 <= newest < STEPS
    (line,) = [line for line in status_lines(TRAINING, tmp_path, capsys) if line.startswith(job)]
    assert line.split()[:3] == [job, "failed", "CANCELLED"] and "ended without finishing" in line

    (again,) = submitted_ids(bench_run(TRAINING, tmp_path))
    assert again != job and wait_until_ended([again]) == {again: "COMPLETED"}
    (log,) = (tmp_path / "cache" / "jobs" / again).glob("*_log.err")
    first = re.search(rf"train full:[^\r\n]*?(\d+)/{STEPS} ", log.read_text())
    assert first and int(first.group(1)) == newest, "the rerun did not start at the checkpoint"
    (line,) = [line for line in status_lines(TRAINING, tmp_path, capsys) if line.startswith(again)]
    assert line.split()[:3] == [again, "finished", "COMPLETED"]

    bench_run(TRAINING, tmp_path / "uninterrupted", launcher="in-process")
    assert same_rows(tmp_path / "results", tmp_path / "uninterrupted" / "results")
