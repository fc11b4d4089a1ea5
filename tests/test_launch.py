"""Launchers and shared folders: jobs through submitit (local processes, a faked Slurm), DDP inside a job, resuming a
killed or pre-empted job, two processes on the same results and cache folders.

Oracle throughout: the in-process `bench run` of the same selection (CPU, same seeds: identical rows, timings
aside), and for DDP inside a job the same run under torchrun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest
import submitit

from bench.cli import main
from bench.launch import GroupJob, Resources, checkpoint_groups, jobs_folder, make_executor, run_local
from bench.results import load_results
from bench.runner import make_specs, run_all
from bench.suites import smoke, with_overrides
from methods import RunContext

REPO = Path(__file__).resolve().parents[1]
VOLATILE = ["created_utc", "git_sha", "git_dirty"]  # when and from which checkout state: not the run's numbers
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job subclasses below run in the job processes


def comparable(frame):
    frame = frame[~frame["metric"].str.contains("seconds|_ms")].drop(columns=VOLATILE)  # timings vary
    return frame.sort_values(["run_id", "split", "metric", "layer", "dim", "precision", "step"]).reset_index(drop=True)


def same_rows(a: Path, b: Path) -> bool:
    left, right = comparable(load_results(a)), comparable(load_results(b))
    return len(left) > 0 and left.equals(right)


def bench(args: list[str], data_dir: Path, results: Path, cache: Path, **popen) -> subprocess.Popen:
    """`bench run ...` in a process of its own (as a second terminal would start it)."""
    cmd = [sys.executable, "-m", "bench.cli", "run", "--suite", "smoke", "--data-dir", str(data_dir),
           "--results-dir", str(results), "--cache-dir", str(cache), "--device", "cpu", *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return out, err


TWO_METHODS = ["--methods", "full,mrl", "--tasks", "stsb,scifact", "--precisions", "fp32,int8"]


@pytest.fixture(scope="module")
def in_process(data_dir, tmp_path_factory) -> Path:
    """The smoke sweep of two methods (full, mrl) on STS-B and SciFact, run in-process: the oracle."""
    root = tmp_path_factory.mktemp("in-process")
    assert main(["run", "--suite", "smoke", *TWO_METHODS, "--data-dir", str(data_dir), "--results-dir",
                 str(root / "results"), "--cache-dir", str(root / "cache"), "--device", "cpu"]) == 0
    return root / "results"


def test_the_local_launcher_gives_the_rows_of_the_in_process_run(in_process, data_dir, tmp_path):
    """One job per method (each trains once and evaluates both tasks), two at a time, as separate processes."""
    out, _ = finish(bench([*TWO_METHODS, "--launcher", "local", "--max-parallel", "2"], data_dir,
                          tmp_path / "results", tmp_path / "cache"))
    assert "4 new result file(s), 0 already finished, 0 failed job(s)" in out
    assert len([line for line in out.splitlines() if line.startswith("job ")]) == 2
    assert same_rows(tmp_path / "results", in_process)
    assert len(list((tmp_path / "cache" / "jobs").glob("*/*_log.err"))) == 2  # submitit's logs, one per job


def test_two_processes_on_the_same_folders_both_finish_with_the_rows_of_one_run(in_process, data_dir, tmp_path):
    """The same sweep started twice at once on the same results and cache folders, the tasks listed in two orders so
    that the two processes also reach the same checkpoint at the same time (the race that used to end in
    FileNotFoundError on the checkpoint rename). Both exit 0 without a traceback; each run's file exists once with
    the in-process rows; each method trained once (its two result files carry the same train_seconds: the second
    process took the first's checkpoint)."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    first = bench([*TWO_METHODS[:3], "stsb,scifact", *TWO_METHODS[4:]], data_dir, results, cache)
    second = bench([*TWO_METHODS[:3], "scifact,stsb", *TWO_METHODS[4:]], data_dir, results, cache)
    outs = [finish(first)[0], finish(second)[0]]
    assert sum(int(o.split(" new result file(s)")[0].split()[-1]) for o in outs) == 4
    assert len(list(results.glob("*.csv.gz"))) == 4
    assert same_rows(results, in_process)
    frame = load_results(results)
    seconds = frame[frame["metric"] == "train_seconds"].groupby("method")["score"].nunique()
    assert seconds.to_dict() == {"full": 1, "mrl": 1}


def test_two_processes_reaching_one_encoding_encode_it_once(data_dir, tmp_path):
    """Two runs that differ only in their precision share the encoding: the second waits for the first's encode and
    reads it, so both record the same measured encode time (an encode of its own would measure another)."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    procs = [bench(["--methods", "pretrained", "--tasks", "stsb", "--precisions", p], data_dir, results, cache)
             for p in ("fp32", "int8")]
    for proc in procs:
        finish(proc)
    frame = load_results(results)
    times = frame[frame["metric"] == "encode_ms_per_1k_texts"].pivot(index="layer", columns="run_id", values="score")
    assert times.shape == (2, 2) and (times.nunique(axis=1) == 1).all()
    assert len(list((cache / "encodings").glob("*.npy"))) == 1  # STS-B's one text set, encoded once


# ---- resuming: killed and pre-empted jobs ---------------------------------------------------------------------------

class CountingJob(GroupJob):
    """The group's job, appending a line to `steps` for every training step it runs."""

    def __init__(self, specs, ctx, steps: Path):
        super().__init__(specs, ctx)
        self.steps = steps

    def patch(self, one_step):
        def counted(*args):
            with self.steps.open("a") as fh:
                fh.write("step\n")
            return one_step(*args)
        return counted

    def __call__(self):
        from bench.train import EncoderTraining

        EncoderTraining.compute_gradients = self.patch(EncoderTraining.compute_gradients)
        return super().__call__()


class KilledAfterFirstCheckpoint(CountingJob):
    """A hard kill (SIGKILL: no handler, no cleanup) right after the first training checkpoint is written."""

    def __call__(self):
        import bench.train

        save = bench.train.save_checkpoint

        def save_then_die(*args, **kwargs):
            save(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        bench.train.save_checkpoint = save_then_die
        return super().__call__()


class PreemptedAtStepThree(CountingJob):
    """Sends itself submitit's pre-emption signal (USR2) during its third training step, on its first attempt."""

    def __init__(self, specs, ctx, steps: Path, marker: Path):
        super().__init__(specs, ctx, steps)
        self.marker = marker

    def patch(self, one_step):
        counted = super().patch(one_step)

        def preempting(*args):
            if not self.marker.exists() and len(self.steps.read_text().splitlines()) == 2:
                self.marker.touch()
                os.kill(os.getpid(), signal.SIGUSR2)
            return counted(*args)
        return preempting


@pytest.fixture(scope="module")
def twodmse_reference(data_dir, tmp_path_factory):
    """2dmse on STS-B in-process (8 steps, a checkpoint every 4: the smoke budget)."""
    root = tmp_path_factory.mktemp("2dmse")
    specs = make_specs(with_overrides(smoke(), tasks=("stsb",), precisions=("fp32",)), "2dmse")
    run_all(specs, RunContext(data_dir, root / "results", root / "cache", "cpu"))
    return specs, root / "results"


def local_executor(ctx: RunContext, **resources) -> submitit.Executor:
    return make_executor("local", jobs_folder(ctx), Resources(**resources))


def test_a_killed_job_resubmitted_resumes_from_its_checkpoint_to_identical_rows(twodmse_reference, data_dir,
                                                                                tmp_path, capsys):
    """The job is SIGKILLed after step 4's checkpoint: the launcher reports it failed, `bench status` shows the run
    failed (its process is gone); the same group resubmitted trains steps 5..8 only and writes the in-process
    rows."""
    specs, reference = twodmse_reference
    ctx = RunContext(data_dir, tmp_path / "results", tmp_path / "cache", "cpu")
    steps = tmp_path / "steps.txt"
    (killed,) = run_local([KilledAfterFirstCheckpoint(specs, ctx, steps)], local_executor(ctx), Resources())
    assert killed.error is not None and "ended without finishing" in killed.error
    assert list((tmp_path / "cache" / "checkpoints").rglob("step-000004"))
    assert main(["status", "--suite", "smoke", "--methods", "2dmse", "--tasks", "stsb", "--precisions", "fp32",
                 "--results-dir", str(ctx.results_dir)]) == 0
    assert "failed  " in capsys.readouterr().out

    steps.unlink()
    (resumed,) = run_local([CountingJob(specs, ctx, steps)], local_executor(ctx), Resources())
    assert resumed.error is None and len(resumed.written) == 1
    assert len(steps.read_text().splitlines()) == 4  # steps 5..8
    assert same_rows(ctx.results_dir, reference)


def test_a_preempted_job_checkpoints_its_step_and_requeues_itself_to_identical_rows(twodmse_reference, data_dir,
                                                                                   tmp_path):
    """USR2 during step 3 (no checkpoint is due before step 4): the loop completes step 3, checkpoints it and hands
    over to submitit, which requeues the job; the requeued job trains steps 4..8, so 8 steps ran in all (requeued
    at once, without that checkpoint, the job would start over: 2 + 8), and the rows are the in-process ones."""
    specs, reference = twodmse_reference
    ctx = RunContext(data_dir, tmp_path / "results", tmp_path / "cache", "cpu")
    steps, marker = tmp_path / "steps.txt", tmp_path / "preempted"
    steps.touch()
    (outcome,) = run_local([PreemptedAtStepThree(specs, ctx, steps, marker)], local_executor(ctx), Resources())
    assert outcome.error is None and marker.exists()
    assert len(steps.read_text().splitlines()) == 8
    assert "Requeued job" in Path(outcome.log).read_text()
    assert same_rows(ctx.results_dir, reference)


# ---- DDP inside a job -----------------------------------------------------------------------------------------------

def test_a_job_with_two_processes_trains_with_ddp_as_torchrun_does(data_dir, tmp_path, monkeypatch):
    """A local job of 2 processes (gloo on CPU) exports the torchrun variables from submitit's JobEnvironment: its
    rows equal `bench run` under torchrun with 2 processes (and 16 train rows per metric would be wrong: each
    step's loss is logged once, averaged across the processes)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same thread count for both runs
    args = ["--methods", "full", "--tasks", "stsb", "--precisions", "fp32"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "bench.cli", "run", "--suite", "smoke", *args, "--data-dir", str(data_dir), "--results-dir",
                           str(tmp_path / "torchrun"), "--cache-dir", str(tmp_path / "torchrun-cache"), "--device",
                           "cpu"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    specs = make_specs(with_overrides(smoke(), tasks=("stsb",), precisions=("fp32",)), "full")
    ctx = RunContext(data_dir, tmp_path / "job", tmp_path / "job-cache", "cpu")
    resources = Resources(processes=2)
    (outcome,) = run_local([GroupJob(g, ctx) for g in checkpoint_groups(specs)], local_executor(ctx, processes=2),
                           resources)
    assert outcome.error is None and len(outcome.written) == 1
    assert same_rows(tmp_path / "job", tmp_path / "torchrun")
    rows = load_results(tmp_path / "job")
    assert sorted(rows.loc[rows["metric"] == "loss", "step"]) == list(range(1, 9))


# ---- Slurm, faked ---------------------------------------------------------------------------------------------------

FAKE_SBATCH = """#!/bin/sh
cp "$1" "{copy}"
echo "Submitted batch job 4242"
"""
FAKE_SQUEUE = """#!/bin/sh
printf '4242_0|PENDING\\n4242_1|COMPLETED\\n'
"""


def test_slurm_submits_one_job_array_with_the_requested_resources_and_its_jobs_run(data_dir, tmp_path, monkeypatch,
                                                                                    capsys):
    """A fake sbatch (and srun) on PATH: `bench run --launcher slurm` writes one sbatch array of the two groups with
    the partition, GPUs (one task per GPU), time, memory and array parallelism asked for, and returns. Then array
    element 1 is run as Slurm would run it (submitit's entry point with Slurm's variables): it writes its run into
    the shared results folder, and `bench status` shows that one finished and the other missing, each under its
    Slurm job id with the state a (fake) squeue gives."""
    bin_dir, script = tmp_path / "bin", tmp_path / "sbatch-script.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(copy=script))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "squeue").write_text(FAKE_SQUEUE)
    for tool in ("sbatch", "srun", "squeue"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    results, cache = tmp_path / "results", tmp_path / "cache"
    selection = ["--suite", "smoke", "--methods", "full,mrl", "--tasks", "stsb", "--precisions", "fp32"]
    assert main(["run", *selection, "--data-dir", str(data_dir), "--results-dir", str(results), "--cache-dir",
                 str(cache), "--device", "cpu", "--launcher", "slurm", "--slurm-partition", "gpu", "--gpus", "2",
                 "--time", "1-02:00:00", "--mem", "32G", "--max-parallel", "3"]) == 0
    assert "submitted 2 job(s) for 2 run(s): 4242_0, 4242_1" in capsys.readouterr().out
    sbatch = script.read_text()
    for flag in ("--array=0-1%2", "--partition=gpu", "--gpus-per-node=2", "--ntasks-per-node=2", "--time=1560",
                 "--mem=32G", "--signal=USR2@90", "--nodes=1"):
        assert f"#SBATCH {flag}\n" in sbatch, flag

    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4244", "SLURM_ARRAY_JOB_ID": "4242",
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1"}
    proc = subprocess.run([sys.executable, "-m", "submitit.core._submit", str(jobs_folder(
        RunContext(data_dir, results, cache)))], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name.split("__")[0] for p in results.glob("*.csv.gz")] == ["mrl"]
    assert main(["status", *selection, "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["job", "state", "slurm"]
    jobs = [line.split()[:3] + line.split()[4:5] for line in out[1:3]]  # job, state, slurm, method
    assert jobs == [["4242_0", "missing", "PENDING", "full"], ["4242_1", "finished", "COMPLETED", "mrl"]]
    assert out[-1] == "2 run(s) in 2 job(s): 1 finished, 0 running, 0 failed, 1 missing"


def test_slurm_without_slurm_is_one_line(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    assert main(["run", "--suite", "smoke", "--methods", "full", "--tasks", "stsb", "--data-dir", str(data_dir),
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --launcher slurm needs Slurm's sbatch and srun on PATH; on a machine without Slurm use "
                   "--launcher local")
