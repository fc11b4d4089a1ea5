"""The one optimizer loop every training in the benchmark runs, in a fixed life cycle.

`TrainingLoop.run()` goes set_up -> resume -> step, step, ... (save at the boundaries a recipe asks for) -> finish,
and keeps its state on the object (module, optimizer, schedule, data order, log), as torchtune's recipes do. A
recipe subclasses it and says what is particular to it: how a micro-batch is built from example indices and what its
loss is, what a step leaves in the log, when to save and how to resume. Two recipes: `EncoderTraining` in
bench/train.py (a Hugging Face model on text examples: DDP, the run's dtype, checkpoints, exact resume,
pre-emption) and the heads' loop in methods/_heads.py (a small module over cached vectors, one process, no
checkpoints).

What every recipe shares: the Budget (steps, batch size, gradient accumulation; AdamW with no decay on biases and
norms, as the HF trainer, or plain SGD, `budget.optimizer`, for tests of gradient scale; warmup + linear/cosine
decay from transformers; gradient clipping by a rule the recipe picks), and the data order: a seeded permutation
per epoch, optimizer step `s` always reading the same examples, so a resumed run sees exactly what an uninterrupted
one sees, and 2 processes x 1 micro-batch read what 1 process x 2 accumulated micro-batches read.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable

import torch
from transformers import get_scheduler

from bench import BenchError
from bench.spec import Budget

ClipRule = Callable[[Iterable[torch.nn.Parameter], float], "float | None"]


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


# ---- optimizer, schedule, clipping ---------------------------------------------------------------------------------

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


def clip_and_measure(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Clip to `max_norm` and return the total L2 norm of the gradients before clipping (what clip_grad_norm_
    returns). max_norm 0 (off) clips at inf: the same norm is measured and the gradients are scaled by exactly 1."""
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm or math.inf))


def clip_only_when_on(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> None:
    """Clip to `max_norm` when clipping is on (> 0); nothing is measured, and with clipping off nothing runs."""
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def check_trainable(budget: Budget, n_examples: int, size: int) -> None:
    if budget.steps <= 0:
        raise BenchError(f"budget steps must be positive to train, got {budget.steps}")
    if n_examples == 0:
        raise BenchError("the training data is empty; point --data-dir at the training set or pick another one")
    if n_examples < budget.batch_size * size:
        raise BenchError(f"the training data has {n_examples} examples, fewer than one batch of "
                         f"{budget.batch_size * size}; lower the batch size or use a larger training set")


# ---- the loop ------------------------------------------------------------------------------------------------------

class TrainingLoop:
    """`module` trained for budget.steps optimizer steps on `n_examples` examples in the seeded order. A recipe
    defines `batch` and `loss` (and `record`, what a step leaves in `self.log`); the other hooks default to one
    process without checkpoints. `clip` is the recipe's clipping rule (`clip_and_measure`, `clip_only_when_on`);
    `rank`/`size`: this process's share of each step's examples."""

    loss_name = "the training loss"  # the error line's words when a loss is not finite
    data_name = "the training data"

    def __init__(self, module: torch.nn.Module, budget: Budget, seed: int, n_examples: int, clip: ClipRule,
                 rank: int = 0, size: int = 1):
        self.module, self.budget, self.seed, self.clip = module, budget, seed, clip
        self.rank, self.size = rank, size
        self.order = ExampleOrder(n_examples, seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.start = 0  # the first step to run (after resuming)
        self.log: list[dict] = []

    def run(self) -> list[dict]:
        """The life cycle; returns the log."""
        self.set_up()
        self.resume()
        for step in range(self.start, self.budget.steps):
            self.step(step)
            if self.save_due(step + 1):
                self.save(step + 1)
        self.finish()
        return self.log

    # -- the life cycle's stages (a recipe extends them) --

    def set_up(self) -> None:
        """The optimizer and the schedule of the module's trainable parameters (a recipe readies the module first:
        device, training mode)."""
        self.optimizer = make_optimizer(self.module, self.budget)
        self.scheduler = make_scheduler(self.optimizer, self.budget)

    def resume(self) -> None:
        """Restore the state of an interrupted run and set `self.start`; nothing to restore by default."""

    def step(self, step: int) -> None:
        """One optimizer step (`step` counts from 0): the gradients, the update, the schedule, the step's rows."""
        loss, grad_norm = self.compute_gradients(step)
        lr = self.scheduler.get_last_lr()[0]  # what optimizer.step() applies now (both parameter groups share it)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.record(step + 1, loss, lr, grad_norm)

    def save_due(self, done: int) -> bool:
        """Whether to save after `done` steps; never by default."""
        return False

    def save(self, done: int) -> None:
        """Save the state after `done` steps, so `resume` can continue from there."""

    def finish(self) -> None:
        """After the last step (the finished model, a mode change)."""

    # -- what a step is made of --

    def compute_gradients(self, step: int) -> tuple[float, float | None]:
        """Forward and backward of every micro-batch of one optimizer step, then the clipping rule; returns the
        step's loss (this process's share) and what the rule returns (the gradient norm before clipping, or
        None)."""
        total = 0.0
        for micro in range(self.budget.grad_accum):
            batch = self.batch(micro_batch(self.order, step, micro, self.rank, self.size, self.budget))
            with self.sync(micro == self.budget.grad_accum - 1):
                with self.precision():
                    loss = self.loss(batch) / self.budget.grad_accum
                if not torch.isfinite(loss):
                    raise BenchError(f"{self.loss_name} became {loss.item()} at step {step + 1}; lower the learning "
                                     f"rate or check {self.data_name}")
                loss.backward()
            total += loss.item()
        return total, self.clip(self.module.parameters(), self.budget.max_grad_norm)

    def batch(self, indices: list[int]):
        """The micro-batch of these example indices, ready for `loss`."""
        raise NotImplementedError

    def loss(self, batch) -> torch.Tensor:
        """The scalar loss of one micro-batch."""
        raise NotImplementedError

    def record(self, step: int, loss: float, lr: float, grad_norm: float | None) -> None:
        """Append the rows of optimizer step `step` (from 1) to `self.log`."""
        raise NotImplementedError

    def sync(self, last_micro_batch: bool):
        """The context of one micro-batch's forward and backward (DDP syncs gradients on the last only)."""
        return contextlib.nullcontext()

    def precision(self):
        """The context of one micro-batch's forward (the compute dtype)."""
        return contextlib.nullcontext()
