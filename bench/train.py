"""Training an encoder: `train()`, the entry point every trained method goes through, and its checkpoints.

`train()` is generic: it takes a model, a list of examples, a `collate` (examples -> batch) and an `objective`
(model, batch, generator -> scalar loss), and runs them under a `Budget` through the one loop of bench/loop.py (its
recipe here, `EncoderTraining`, adds what training an encoder needs): optional activation checkpointing, the run's
compute dtype (fp32, or bf16 autocast over float32 master weights, on CPU and CUDA alike), DDP, checkpoints and
exact resume. The loop's data order makes optimizer step `s` always read the same examples, so a resumed run sees
exactly what an uninterrupted one sees.

Checkpoints: every `checkpoint_every` steps a `step-NNNNNN/` folder (model.safetensors + tokenizer + optimizer,
scheduler and RNG states) is written atomically; a rerun resumes from the newest intact one. The finished model goes
to `final/` (safetensors, loadable by `Encoder.load`) with `train_log.json` (the curves and training seconds). A
damaged checkpoint (a cut file) is never loaded: an earlier one is resumed, or the model is trained again. The log
holds, per optimizer step, `loss`, `lr` (the rate that step applied) and `grad_norm` (the total L2 norm of the
gradients before clipping, as clip_grad_norm_ returns it; computed the same way when clipping is off).

Concurrency: a folder is trained by one process at a time (bench/dist.claim, a file lock inside it); a second
process that reaches it, another job or another terminal, waits and then takes the finished model. Pre-emption: a
job launcher (bench/launch.py) can route its scheduler's warning signal through `preempt_at_step_boundary`, so the
loop finishes its step, writes a checkpoint there and only then hands over to the launcher's requeue.

Distributed: under torchrun (WORLD_SIZE > 1) the same code wraps the model in DistributedDataParallel (gloo on CPU,
nccl on CUDA); each process reads its own micro-batches of every step, rank 0 writes the checkpoints. The data of
step s is the same for any world size: 2 processes x 1 micro-batch = 1 process x 2 accumulated micro-batches.

Why not sentence-transformers' trainer: the elastic objectives need every layer's pooled vector from one forward
pass (its trainer reaches them only by monkey-patching the model's forward), `separate` trains truncated copies,
and the benchmark needs an exact resume and tidy loss rows. The losses themselves are sentence-transformers' own
(bench/losses.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from bench.devices import autocast, pick_device
from bench.dist import any_across, barrier, claim, mean_across, process_device, world
from bench.loop import TrainingLoop, check_trainable, clip_and_measure
from bench.phases import timed
from bench.spec import Budget

Objective = Callable[[torch.nn.Module, dict, torch.Generator], torch.Tensor]
STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.json"
log = logging.getLogger("bench")
LOCK_FILE = ".lock"  # inside the folder being trained (see bench/dist.claim)


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    log: tuple[dict, ...]  # {"step": s, "metric": "loss" | "lr" | "grad_norm", "score": x} per optimizer step
    seconds: float  # training wall time, summed over resumed segments


# ---- batches ----------------------------------------------------------------------------------------------------

@dataclass
class TextCollate:
    """Examples (texts tuple, label or None) -> {"columns": [tokenized column, ...], "labels": tensor or None}."""

    tokenizer: object
    max_len: int

    def __call__(self, examples: list[tuple]) -> dict:
        columns = list(zip(*(texts for texts, _ in examples)))
        tokenized = [self.tokenizer(list(c), padding=True, truncation=True, max_length=self.max_len,
                                    return_tensors="pt") for c in columns]
        labels = [label for _, label in examples]
        return {"columns": tokenized,
                "labels": None if labels[0] is None else torch.tensor(labels, dtype=torch.float32)}


def to_device(obj, device: torch.device):
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_device(v, device) for v in obj]
    return obj.to(device) if hasattr(obj, "to") else obj


# ---- checkpoints -------------------------------------------------------------------------------------------------

def _damage(folder: Path, extra_check: Callable[[Path], None]) -> str | None:
    """What is wrong with a checkpoint folder, None when it is whole: every safetensors file's header must parse and
    cover the file (a cut file fails), and `extra_check` must pass. Checkpoints are written atomically, so only
    something outside the loop (a full disk, a killed copy, a sync tool) damages one; it is then never loaded."""
    weights = sorted(Path(folder).rglob("*.safetensors"))
    if not weights:
        return "no model.safetensors"
    try:
        for path in weights:
            with safe_open(path, "pt"):
                pass
        extra_check(Path(folder))
    except (SafetensorError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
    return None


def _log_parses(folder: Path) -> None:
    meta = json.loads((folder / LOG_FILE).read_text())
    if not (isinstance(meta, dict) and {"log", "seconds"} <= set(meta)):
        raise ValueError(f"{LOG_FILE} lacks its log or seconds")


def _state_is_whole(folder: Path) -> None:
    zipfile.ZipFile(folder / STATE_FILE).close()  # torch.save writes a zip: a cut one has no central directory


def is_trained(out_dir: Path) -> bool:
    """A finished, intact final/: a damaged one is trained again (with a warning), never used."""
    final = Path(out_dir) / "final"
    if not (final / LOG_FILE).exists():
        return False
    problem = _damage(final, _log_parses)
    if problem:
        log.warning("%s is damaged (%s); training it again", final, problem)
    return problem is None


def read_result(out_dir: Path) -> TrainResult:
    meta = json.loads((Path(out_dir) / "final" / LOG_FILE).read_text())
    return TrainResult(Path(out_dir) / "final", tuple(meta["log"]), meta["seconds"])


def _write_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """Write into a temp folder beside `folder`, then rename: a killed process never leaves a half checkpoint."""
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _latest_step_dir(out_dir: Path) -> Path | None:
    for stale in Path(out_dir).glob(".*.tmp*"):  # half-written by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    for step in sorted((p for p in Path(out_dir).glob("step-*") if (p / STATE_FILE).exists()), reverse=True):
        problem = _damage(step, _state_is_whole)
        if problem is None:
            return step
        log.warning("checkpoint %s is damaged (%s); resuming from an earlier one, or from the start", step, problem)
    return None


def save_checkpoint(out_dir: Path, step: int, model, tokenizer, optimizer, scheduler, generator: torch.Generator,
                    log: list[dict], seconds: float) -> Path:
    folder = Path(out_dir) / f"step-{step:06d}"
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "generator": generator.get_state(), "log": log, "seconds": seconds}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)

    _write_atomically(folder, write)
    for old in Path(out_dir).glob("step-*"):  # only the newest is needed to resume
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path, model, optimizer, scheduler, generator: torch.Generator) -> tuple[int, list, float]:
    """Restore weights, optimizer, scheduler and every RNG; returns (step, log so far, seconds so far)."""
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    state = torch.load(folder / STATE_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["generator"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], list(state["log"]), state["seconds"]


# ---- pre-emption ---------------------------------------------------------------------------------------------------

class _Preemption:
    """A scheduler's warning signal that arrived while a loop was training: the handler to run at the next step
    boundary, once the loop has written a checkpoint there."""

    watched = False  # a launcher routed its signal here (every process of a DDP job does)
    training = False
    pending: Callable[[], None] | None = None


def preempt_at_step_boundary(handler: Callable) -> Callable:
    """Wrap a signal handler (submitit's checkpoint-and-requeue): when the signal comes during training, the loop
    first completes its step and checkpoints it (so the resumed job repeats no step); otherwise it runs at once."""
    _Preemption.watched = True

    def deferred(signum, frame) -> None:
        if _Preemption.training:
            _Preemption.pending = lambda: handler(signum, frame)
        else:
            handler(signum, frame)

    return deferred


def _preempted(size: int) -> bool:
    """Whether any process of the job was warned (all of them stop at the same step)."""
    return _Preemption.watched and any_across(_Preemption.pending is not None, size)


def _hand_over() -> None:
    """Run the deferred handler (it requeues the job and exits); a process that got no signal, or whose handler
    returns (submitit's does on ranks > 0), leaves too: its job is being requeued."""
    pending, _Preemption.pending = _Preemption.pending, None
    if pending is not None:
        pending()
    raise SystemExit(0)


# ---- the loop ------------------------------------------------------------------------------------------------------

@timed("train")
def train(model: torch.nn.Module, tokenizer, examples: Sequence, collate: Callable[[list], dict],
          objective: Objective, budget: Budget, seed: int, out_dir: Path, device: str | None = None,
          desc: str = "train", dtype: str = "fp32") -> TrainResult:
    """Train `model` for budget.steps optimizer steps, resuming from the newest checkpoint in out_dir, forward
    passes in `dtype` (bench.spec.DTYPES); returns the finished model folder. A finished out_dir is returned as it
    is, also when another process finished it while this one waited for its claim (looked at only under the claim,
    so all ranks of a DDP job decide alike)."""
    out_dir = Path(out_dir)
    with claim(out_dir / LOCK_FILE):
        if is_trained(out_dir):
            return read_result(out_dir)
        check_trainable(budget, len(examples), world()[1])
        _Preemption.training = True
        try:
            EncoderTraining(model, tokenizer, examples, collate, objective, budget, seed, out_dir, device, desc,
                            dtype).run()
        finally:
            _Preemption.training = False
    if _Preemption.pending is not None:  # warned during the last step: the final model is written, requeue now
        _hand_over()
    return read_result(out_dir)


class EncoderTraining(TrainingLoop):
    """The loop's recipe for an encoder: `objective` on collated text examples, on this process's device, in the
    run's dtype, under DDP when there are several processes; a checkpoint every `checkpoint_every` steps (and at a
    pre-emption), resumed exactly; the final model and its log in out_dir/final. Rows per step: the loss (mean over
    processes), the lr and the gradient norm before clipping."""

    def __init__(self, model: torch.nn.Module, tokenizer, examples: Sequence, collate: Callable[[list], dict],
                 objective: Objective, budget: Budget, seed: int, out_dir: Path, device: str | None, desc: str,
                 dtype: str):
        rank, size = world()
        super().__init__(model, budget, seed, len(examples), clip_and_measure, rank, size)
        self.tokenizer, self.examples, self.collate, self.objective = tokenizer, examples, collate, objective
        self.out_dir, self.desc, self.dtype = out_dir, desc, dtype
        self.device = pick_device(process_device(device, size))
        self.wrapped = model  # what the objective calls: the DDP wrapper under torchrun
        self.seconds, self.preempted = 0.0, False

    def set_up(self) -> None:
        torch.manual_seed(self.seed)  # dropout; the same on every process, as the HF trainer does
        self.generator = torch.Generator().manual_seed(self.seed)  # the objective's own draws (sampled layers, dims)
        self.module.to(self.device).train()
        if self.budget.grad_checkpointing:
            self.module.activation_checkpointing_enable()
        super().set_up()

    def resume(self) -> None:
        """From the newest intact checkpoint, if any; then DDP wraps the model (its first broadcast carries the
        restored weights) and the clock starts."""
        latest = _latest_step_dir(self.out_dir)
        if latest is not None:
            self.start, self.log, self.seconds = load_checkpoint(latest, self.module, self.optimizer, self.scheduler,
                                                                 self.generator)
        if self.size > 1:  # unused parameters: the pooler, and blocks above a sampled layer
            self.wrapped = torch.nn.parallel.DistributedDataParallel(self.module, find_unused_parameters=True)
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=self.budget.steps, initial=self.start, desc=self.desc, unit="step", leave=False,
                        disable=os.environ.get("BENCH_QUIET") == "1" or self.rank != 0)

    def batch(self, indices: list[int]) -> dict:
        return to_device(self.collate([self.examples[i] for i in indices]), self.device)

    def loss(self, batch: dict) -> torch.Tensor:
        return self.objective(self.wrapped, batch, self.generator)

    def sync(self, last_micro_batch: bool):
        return self.wrapped.no_sync() if self.size > 1 and not last_micro_batch else contextlib.nullcontext()

    def precision(self):
        return autocast(self.device, self.dtype)

    def record(self, step: int, loss: float, lr: float, grad_norm: float | None) -> None:
        loss = mean_across(loss, self.size)
        self.log += [{"step": step, "metric": "loss", "score": loss}, {"step": step, "metric": "lr", "score": lr},
                     {"step": step, "metric": "grad_norm", "score": grad_norm}]  # gradients are synced: one norm
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}")

    def save_due(self, done: int) -> bool:
        """Every checkpoint_every steps, and when any process was warned of a pre-emption (asked of all of them),
        but never after the last step: the final model follows."""
        last = done == self.budget.steps
        self.preempted = not last and _preempted(self.size)
        return not last and (self.preempted or done % self.budget.checkpoint_every == 0)

    def save(self, done: int) -> None:
        """Rank 0 writes the checkpoint; after a pre-emption warning every process then hands over to the requeue."""
        if self.rank == 0:
            save_checkpoint(self.out_dir, done, self.module, self.tokenizer, self.optimizer, self.scheduler,
                            self.generator, self.log, self.seconds + time.perf_counter() - self.t0)
        barrier(self.size)
        if self.preempted:
            self.bar.close()
            _hand_over()

    def finish(self) -> None:
        self.bar.close()
        self.seconds += time.perf_counter() - self.t0
        if self.rank == 0:
            _save_final(self.out_dir, self.module, self.tokenizer, self.log, self.seconds)
        barrier(self.size)


def _save_final(out_dir: Path, model, tokenizer, log: list[dict], seconds: float) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / LOG_FILE).write_text(json.dumps({"log": log, "seconds": seconds, "steps": len({r["step"] for r in log})}))

    _write_atomically(out_dir / "final", write)
    for old in out_dir.glob("step-*"):
        shutil.rmtree(old, ignore_errors=True)
