"""Launchers: a sweep's jobs run through submitit, as parallel processes on this machine (`local`) or on Slurm.

A job is a checkpoint-sharing group (`checkpoint_groups`): the specs of one method, hyperparameters and seed, which
train once and are evaluated on every task. Each job runs bench/runner.run_all in its own process and writes into
the shared results and cache folders, whose file locks (bench/dist.claim, the encode lock in bench/evaluate.py,
the result lock in bench/runner.py) let any number of jobs and terminals share them: one does a piece of work, the
others wait for it and take it.

Resuming: a job that fails or is killed leaves its finished runs and its newest training checkpoint; the same job
resubmitted (or `bench run` again) skips the former and resumes the latter. Pre-emption and time limits: submitit
warns the job with a signal (USR2, 90 s before Slurm's limit); `GroupJob` routes it through
bench/train.preempt_at_step_boundary, so the loop completes its step and checkpoints it, then submitit's handler
requeues the job (`GroupJob.checkpoint` resubmits it as it is) and the requeued job resumes there.

GPUs: a job with `gpus` > 1 runs that many processes (Slurm tasks, or local processes) and trains with DDP: each
exports the torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from submitit's
JobEnvironment, which bench/dist.world() reads. Local jobs get disjoint GPUs.

The runner stays in-process (`bench run` without --launcher); this module only adds the jobs around it.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import submitit

from bench import BenchError, runstate
from bench.results import run_path
from bench.runner import run_all, run_code
from bench.spec import RunSpec
from methods import RunContext

log = logging.getLogger("bench")
LAUNCHERS = ("in-process", "local", "slurm")
POLL_SECONDS = 0.5  # how often the local launcher looks at its running jobs


@dataclass(frozen=True)
class Resources:
    """What each job gets. `processes`: DDP processes per job, by default one per GPU (more than one without GPUs
    trains with gloo on CPU). Locally `max_parallel` jobs run at once, sharing this machine's cores (each uses
    torch's default thread count, or OMP_NUM_THREADS: the thread count can change training's float rounding, so it
    is left as an in-process run has it); on Slurm it caps the job array's running jobs, and `partition`, `mem` (a
    Slurm size: 32G) and `cpus_per_task` go to sbatch."""

    gpus: int = 0
    processes: int | None = None
    time_min: int = 24 * 60
    mem: str | None = None
    cpus_per_task: int | None = None
    partition: str | None = None
    max_parallel: int = 1

    def __post_init__(self):
        if self.gpus < 0 or self.time_min <= 0 or self.max_parallel <= 0 or (self.processes or 1) <= 0:
            raise BenchError("--gpus must be >= 0, and --time and --max-parallel positive")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?B?", self.mem, flags=re.IGNORECASE):
            raise BenchError(f"--mem takes a Slurm size such as 32G or 500M; got {self.mem!r}")

    @property
    def tasks(self) -> int:
        return self.processes or max(1, self.gpus)


def checkpoint_groups(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Specs that share their checkpoints (same model fields and pooling: bench/methods/_jobs.checkpoint_dir), in
    order of first appearance: one job each."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.model_key, spec.eval.pooling), []).append(spec)
    return list(groups.values())


def describe_group(specs: list[RunSpec]) -> str:
    first = specs[0]
    params = f" (params {first.params_hash})" if first.params else ""
    return f"{first.method}{params} seed {first.seed}: {', '.join(s.task for s in specs)}"


class GroupJob(submitit.helpers.Checkpointable):
    """One job: `run_all` over a checkpoint-sharing group, in the job's process(es). Checkpointable: on a
    pre-emption or time-limit signal submitit calls `checkpoint`, which resubmits this same job (runs finished so
    far are skipped, training resumes from its checkpoint)."""

    def __init__(self, specs: list[RunSpec], ctx: RunContext):
        self.specs, self.ctx = specs, ctx

    def __call__(self) -> dict:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("bench").setLevel(logging.INFO)
        env = submitit.JobEnvironment()
        runstate.set_job(env.job_id, str(env.paths.stderr))
        if env.num_tasks > 1:  # DDP inside the job: the variables torchrun would set, for bench.dist.world()
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        warning = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)  # submitit's warning signal (USR2)
        previous = signal.getsignal(warning)
        if callable(previous):  # submitit's checkpoint-and-requeue handler (none under the debug executor)
            from bench.train import preempt_at_step_boundary

            signal.signal(warning, preempt_at_step_boundary(previous))
        try:
            written = run_all(self.specs, self.ctx)
        finally:
            if callable(previous):
                signal.signal(warning, previous)
        return {"written": [str(p) for p in written], "runs": len(self.specs)}


def jobs_folder(ctx: RunContext) -> Path:
    """submitit's job folders (pickles, stdout and stderr logs), one per job id, under the cache folder (on Slurm
    it must be on a filesystem the nodes share, as the results and cache folders must)."""
    return Path(ctx.cache_dir).resolve() / "jobs" / "%j"


def make_executor(launcher: str, folder: Path, resources: Resources) -> submitit.Executor:
    if launcher == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=resources.time_min, tasks_per_node=resources.tasks,
                                   gpus_per_node=resources.gpus)
        return executor
    if launcher == "slurm":
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise BenchError("--launcher slurm needs Slurm's sbatch and srun on PATH; on a machine without Slurm "
                             "use --launcher local")
        executor = submitit.SlurmExecutor(folder)
        params = dict(job_name="bench", time=resources.time_min, nodes=1, ntasks_per_node=resources.tasks,
                      gpus_per_node=resources.gpus or None, array_parallelism=resources.max_parallel,
                      cpus_per_task=resources.cpus_per_task, mem=resources.mem, partition=resources.partition)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor
    raise BenchError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")


@dataclass
class Outcome:
    """What became of one job: its id and log, the result files it wrote, or its error's last line."""

    group: list[RunSpec]
    job_id: str
    log: str
    written: list[str]
    error: str | None = None


def launch(specs: list[RunSpec], ctx: RunContext, launcher: str, resources: Resources) -> list[Outcome]:
    """One job per checkpoint-sharing group. `local`: run them, `max_parallel` at a time, and wait for them all;
    `slurm`: submit them as one job array and return (follow them with `bench status`)."""
    if not specs:
        raise BenchError("nothing to run: no methods x tasks x seeds")
    ctx = replace(ctx, data_dir=Path(ctx.data_dir).resolve(), results_dir=Path(ctx.results_dir).resolve(),
                  cache_dir=Path(ctx.cache_dir).resolve())  # every other field (trust_remote_code) as given
    groups = checkpoint_groups(specs)
    executor = make_executor(launcher, jobs_folder(ctx), resources)
    jobs = [GroupJob(group, ctx) for group in groups]
    return submit_array(jobs, executor) if launcher == "slurm" else run_local(jobs, executor, resources)


def submit_array(jobs: list[GroupJob], executor: submitit.Executor) -> list[Outcome]:
    with executor.batch():
        submitted = [executor.submit(job) for job in jobs]
    for job, sub in zip(jobs, submitted):
        record_submission(job, sub, "slurm")
        log.info("submitted job %s: %s", sub.job_id, describe_group(job.specs))
    return [Outcome(job.specs, sub.job_id, str(sub.paths.stderr), written=[]) for job, sub in zip(jobs, submitted)]


def run_local(jobs: list[GroupJob], executor: submitit.LocalExecutor, resources: Resources) -> list[Outcome]:
    """Start jobs as slots free up (at most `max_parallel` running, each on GPUs of its own); wait for all."""
    free_gpus = list(range(_gpu_count(resources)))
    queue, running, outcomes = list(jobs), [], []
    try:
        while queue or running:
            while queue and len(running) < resources.max_parallel:
                job, gpus = queue.pop(0), free_gpus[:resources.gpus]
                del free_gpus[:resources.gpus]
                if resources.gpus:
                    executor.update_parameters(visible_gpus=tuple(gpus))
                sub = executor.submit(job)
                record_submission(job, sub, "local")
                log.info("started job %s: %s", sub.job_id, describe_group(job.specs))
                running.append((job, sub, gpus))
            time.sleep(POLL_SECONDS)
            for entry in [e for e in running if e[1].done()]:
                running.remove(entry)
                free_gpus += entry[2]
                outcomes.append(_outcome(*entry[:2]))
                log.info("job %s %s", entry[1].job_id, "done" if outcomes[-1].error is None else "FAILED")
    except BaseException:  # Ctrl-C: stop the jobs this launcher started (their finished runs are kept)
        for _, sub, _ in running:
            sub.cancel()
        raise
    return outcomes


def record_submission(job: GroupJob, sub: submitit.Job, launcher: str) -> None:
    """Note each run's job (Slurm's id, e.g. 3_0, or the local process's) for `bench status`."""
    for spec in job.specs:
        stem = run_path(job.ctx.results_dir, spec, run_code(spec)).stem
        runstate.record_submission(job.ctx.results_dir, stem, launcher, sub.job_id, str(sub.paths.stderr))


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job it still lists (PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, TIMEOUT, ...), by
    job id (array elements as 3_0). From squeue, by hand: submitit asks sacct, which needs Slurm's accounting
    database (slurmdbd) that small clusters often lack; squeue lists a finished job for MinJobAge (5 minutes by
    default) after it ends. Jobs it no longer lists, or no Slurm here, are left out."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    # -r: one line per array element; -t all: finished jobs too. Unknown ids are skipped (all unknown: exit 1).
    try:
        proc = subprocess.run(["squeue", "-r", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(sorted(set(job_ids)))],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:  # a controller that does not answer: nothing known
        return {}
    if proc.returncode != 0:
        return {}
    return dict(line.split("|", 1) for line in proc.stdout.splitlines() if "|" in line)


def _gpu_count(resources: Resources) -> int:
    if not resources.gpus:
        return 0
    import torch

    needed, have = resources.gpus * resources.max_parallel, torch.cuda.device_count()
    if needed > have:
        raise BenchError(f"--gpus {resources.gpus} x --max-parallel {resources.max_parallel} needs {needed} GPUs; "
                         f"this machine has {have}")
    return have


def _outcome(job: GroupJob, sub) -> Outcome:
    try:
        result = sub.results()[0]  # rank 0's (a DDP job returns one result per process)
        return Outcome(job.specs, sub.job_id, str(sub.paths.stderr), written=result["written"])
    except Exception as exc:  # the job's own error line, from the run sidecars, else the end of submitit's report
        return Outcome(job.specs, sub.job_id, str(sub.paths.stderr), written=[], error=_job_error(job, exc))


def _job_error(job: GroupJob, exc: Exception) -> str:
    for spec in job.specs:
        record = runstate.read(job.ctx.results_dir, run_path(job.ctx.results_dir, spec, run_code(spec)).stem)
        if record is not None and runstate.describe(record)[0] == "failed":
            return runstate.describe(record)[1]
    return runstate.error_line(exc)
