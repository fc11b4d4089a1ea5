"""The one training loop every method goes through.

`train()` is generic: it takes a model, a list of examples, a `collate` (examples -> batch) and an `objective`
(model, batch, generator -> scalar loss), and runs them under a `Budget`: AdamW (no decay on biases and norms, as
the HF trainer; or plain SGD, `budget.optimizer`, for tests of gradient scale), warmup + linear/cosine decay from
transformers, gradient clipping, gradient accumulation, optional activation checkpointing, and the run's compute
dtype (fp32, or bf16 autocast over float32 master weights, on CPU and CUDA alike). The data order is a seeded
permutation per epoch and optimizer step `s` always reads the same examples, so a resumed run sees exactly what an
uninterrupted one sees.

Checkpoints: every `checkpoint_every` steps a `step-NNNNNN/` folder (model.safetensors + tokenizer + optimizer,
scheduler and RNG states) is written atomically; a rerun resumes from the newest intact one. The finished model goes
to `final/` (safetensors, loadable by `Encoder.load`) with `train_log.json` (the curves and training seconds). A
damaged checkpoint (a cut file) is never loaded: an earlier one is resumed, or the model is trained again. The log
holds, per optimizer step, `loss`, `lr` (the rate that step applied) and `grad_norm` (the total L2 norm of the
gradients before clipping, as clip_grad_norm_ returns it; computed the same way when clipping is off).

Concurrency: a folder is trained by one process at a time (`claim`, a file lock inside it); a second process that
reaches it, another job or another terminal, waits and then takes the finished model. Pre-emption: a job launcher
(bench/launch.py) can route its scheduler's warning signal through `preempt_at_step_boundary`, so the loop finishes
its step, writes a checkpoint there and only then hands over to the launcher's requeue.

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
import math
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from bench import BenchError
from bench.devices import autocast, pick_device
from bench.phases import timed
from bench.spec import Budget

Objective = Callable[[torch.nn.Module, dict, torch.Generator], torch.Tensor]
STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.json"
log = logging.getLogger("bench")
LOCK_FILE = ".lock"  # inside the folder being trained (see `claim`)


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    log: tuple[dict, ...]  # {"step": s, "metric": "loss" | "lr" | "grad_norm", "score": x} per optimizer step
    seconds: float  # training wall time, summed over resumed segments


# ---- distributed -----------------------------------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (gloo on CPU, nccl on CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), size) if size > 1 else (0, 1)


def is_main_process() -> bool:
    return world()[0] == 0


def _barrier(size: int) -> None:
    if size > 1:
        torch.distributed.barrier()


def _mean_across(value: float, size: int) -> float:
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item()) / size


def _any_across(flag: bool, size: int) -> bool:
    if size == 1:
        return flag
    t = torch.tensor([float(flag)])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


@contextlib.contextmanager
def claim(lock_path: Path):
    """Hold an exclusive file lock while the block runs: another process (a second job, a second terminal) that
    claims the same path waits until this one is done, then runs the block itself, where it should find the work
    finished. Under DDP the job's processes are one claimant: rank 0 holds the lock and the others start the block
    once it does, so every rank sees the same state (a second DDP job waiting here longer than the process group's
    timeout fails instead of waiting)."""
    rank, size = world()
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)) if rank == 0 else contextlib.nullcontext():
        _barrier(size)
        yield


# ---- data order --------------------------------------------------------------------------------------------------

class ExampleOrder:
    """Position p of the endless stream -> example index: epoch after epoch, each a seeded permutation."""

    def __init__(self, n: int, seed: int):
        self.n, self._gen, self._perms = n, torch.Generator().manual_seed(seed), []

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        while len(self._perms) <= epoch:
            self._perms.append(torch.randperm(self.n, generator=self._gen).tolist())
        return self._perms[epoch][offset]


def micro_batch(order: ExampleOrder, step: int, micro: int, rank: int, size: int, budget: Budget) -> list[int]:
    """Example indices of one micro-batch. Step s reads examples [s*G, (s+1)*G) of the stream, G = batch x
    accumulation x processes, whatever the split between accumulation and processes."""
    per_step = budget.batch_size * budget.grad_accum * size
    start = step * per_step + (micro * size + rank) * budget.batch_size
    return [order[p] for p in range(start, start + budget.batch_size)]


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
    return _Preemption.watched and _any_across(_Preemption.pending is not None, size)


def _hand_over() -> None:
    """Run the deferred handler (it requeues the job and exits); a process that got no signal, or whose handler
    returns (submitit's does on ranks > 0), leaves too: its job is being requeued."""
    pending, _Preemption.pending = _Preemption.pending, None
    if pending is not None:
        pending()
    raise SystemExit(0)


# ---- the loop ------------------------------------------------------------------------------------------------------

def make_optimizer(model: torch.nn.Module, budget: Budget) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": budget.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]  # biases, norms
    if budget.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=budget.lr)
    return torch.optim.AdamW(groups, lr=budget.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, budget: Budget):
    """The budget's schedule (transformers' names) with its warmup share of the steps."""
    warmup = math.ceil(budget.warmup_ratio * budget.steps)
    return get_scheduler(budget.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=budget.steps)


def check_trainable(budget: Budget, n_examples: int, size: int) -> None:
    if budget.steps <= 0:
        raise BenchError(f"budget steps must be positive to train, got {budget.steps}")
    if n_examples == 0:
        raise BenchError("the training data is empty; point --data-dir at the training set or pick another one")
    if n_examples < budget.batch_size * size:
        raise BenchError(f"the training data has {n_examples} examples, fewer than one batch of "
                         f"{budget.batch_size * size}; lower the batch size or use a larger training set")


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
            _loop(model, tokenizer, examples, collate, objective, budget, seed, out_dir, device, desc, dtype)
        finally:
            _Preemption.training = False
    if _Preemption.pending is not None:  # warned during the last step: the final model is written, requeue now
        _hand_over()
    return read_result(out_dir)


def _loop(model, tokenizer, examples, collate, objective, budget: Budget, seed: int, out_dir: Path, device, desc,
          dtype: str):
    rank, size = world()
    dev = pick_device(device)
    if size > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(seed)  # dropout; the same on every process, as the HF trainer does
    generator = torch.Generator().manual_seed(seed)  # the objective's own draws (sampled layers and dims)
    model.to(dev).train()
    if budget.grad_checkpointing:
        model.activation_checkpointing_enable()
    optimizer = make_optimizer(model, budget)
    scheduler = make_scheduler(optimizer, budget)
    start, log, seconds = 0, [], 0.0
    latest = _latest_step_dir(out_dir)
    if latest is not None:
        start, log, seconds = load_checkpoint(latest, model, optimizer, scheduler, generator)
    wrapped = model
    if size > 1:  # unused parameters: the pooler, and blocks above a sampled layer
        wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    order = ExampleOrder(len(examples), seed)
    t0 = time.perf_counter()
    bar = tqdm(total=budget.steps, initial=start, desc=desc, unit="step", leave=False,
               disable=os.environ.get("BENCH_QUIET") == "1" or rank != 0)
    for step in range(start, budget.steps):
        loss, grad_norm = _one_step(wrapped, model, examples, collate, objective, order, step, rank, size, budget,
                                    generator, dev, dtype)
        lr = scheduler.get_last_lr()[0]  # what optimizer.step() applies now (both parameter groups share it)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = _mean_across(loss, size)
        log += [{"step": step + 1, "metric": "loss", "score": loss}, {"step": step + 1, "metric": "lr", "score": lr},
                {"step": step + 1, "metric": "grad_norm", "score": grad_norm}]  # gradients are synced: one norm
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        last = step + 1 == budget.steps
        preempted = not last and _preempted(size)
        if not last and (preempted or (step + 1) % budget.checkpoint_every == 0):
            if rank == 0:
                save_checkpoint(out_dir, step + 1, model, tokenizer, optimizer, scheduler, generator, log,
                                seconds + time.perf_counter() - t0)
            _barrier(size)
        if preempted:
            bar.close()
            _hand_over()
    bar.close()
    seconds += time.perf_counter() - t0
    if rank == 0:
        _save_final(out_dir, model, tokenizer, log, seconds)
    _barrier(size)


def _one_step(wrapped, model, examples, collate, objective, order, step, rank, size, budget, generator,
              dev, dtype) -> tuple[float, float]:
    """Forward and backward of every micro-batch of one optimizer step, then clipping; returns the step's loss (this
    process's share) and the gradient norm before clipping."""
    total = 0.0
    for micro in range(budget.grad_accum):
        batch = to_device(collate([examples[i] for i in micro_batch(order, step, micro, rank, size, budget)]), dev)
        last = micro == budget.grad_accum - 1
        sync = wrapped.no_sync() if size > 1 and not last else contextlib.nullcontext()
        with sync:
            with autocast(dev, dtype):
                loss = objective(wrapped, batch, generator) / budget.grad_accum
            if not torch.isfinite(loss):
                raise BenchError(f"the training loss became {loss.item()} at step {step + 1}; lower the learning "
                                 "rate or check the training data")
            loss.backward()
        total += loss.item()
    # max_norm=inf when clipping is off: the same norm, and the gradients are scaled by exactly 1
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), budget.max_grad_norm or math.inf)
    return total, float(grad_norm)


def _save_final(out_dir: Path, model, tokenizer, log: list[dict], seconds: float) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / LOG_FILE).write_text(json.dumps({"log": log, "seconds": seconds, "steps": len({r["step"] for r in log})}))

    _write_atomically(out_dir / "final", write)
    for old in out_dir.glob("step-*"):
        shutil.rmtree(old, ignore_errors=True)
