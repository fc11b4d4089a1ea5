"""The shared training loop (bench/loop.py): its life cycle runs in a fixed order with its state on the object, and
each recipe's clipping rule is what the recipe says (the encoder measures the norm every step for its grad_norm rows;
a head clips only when clipping is on). Oracle for a step: its loss and gradient written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from bench.loop import ExampleOrder, TrainingLoop, clip_and_measure, clip_only_when_on, micro_batch
from bench.spec import Budget
from bench.train import EncoderTraining
from methods._heads import HeadTraining


class Recorded(TrainingLoop):
    """A recipe that records its hooks: y = w . x on examples x_i = i (one number each), loss (y - 1)^2 summed."""

    def __init__(self, budget: Budget, resume_at: int = 0):
        module = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(module.weight, 0.5)
        super().__init__(module, budget, seed=3, n_examples=20, clip=clip_and_measure)
        self.resume_at, self.calls, self.batches = resume_at, [], []

    def set_up(self):
        self.calls.append("set_up")
        super().set_up()

    def resume(self):
        self.calls.append("resume")
        self.start = self.resume_at

    def batch(self, indices):
        self.batches.append(indices)
        return torch.tensor(indices, dtype=torch.float32)[:, None]

    def loss(self, batch):
        return ((self.module(batch) - 1) ** 2).sum()

    def record(self, step, loss, lr, grad_norm):
        self.calls.append(f"step {step}")
        self.log.append({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm})

    def save_due(self, done):
        return done % 2 == 0 and done < self.budget.steps

    def save(self, done):
        self.calls.append(f"save {done}")

    def finish(self):
        self.calls.append("finish")


def test_the_life_cycle_runs_in_its_fixed_order_from_the_resumed_step():
    budget = Budget(steps=5, batch_size=2, grad_accum=2, lr=0.01, optimizer="sgd", max_grad_norm=0.0,
                    warmup_ratio=0.0, schedule="constant_with_warmup", weight_decay=0.0)
    loop = Recorded(budget, resume_at=1)
    w = loop.module.weight.item()
    log = loop.run()
    assert loop.calls == ["set_up", "resume", "step 2", "save 2", "step 3", "step 4", "save 4", "step 5", "finish"]
    order = ExampleOrder(20, 3)
    assert loop.batches == [micro_batch(order, s, m, 0, 1, budget) for s in range(1, 5) for m in range(2)]
    # step 2 by hand: the loss of the step is the mean over its micro-batches, its gradient too (plain SGD)
    x = torch.tensor([i for m in range(2) for i in micro_batch(order, 1, m, 0, 1, budget)], dtype=torch.float64)
    gradient = (2 * (w * x - 1) * x).sum() / 2
    assert log[0]["loss"] == pytest.approx(float(((w * x - 1) ** 2).sum() / 2), rel=1e-6)
    assert log[0]["grad_norm"] == pytest.approx(abs(float(gradient)), rel=1e-6)
    assert log[0]["lr"] == 0.01 and log is loop.log


def test_each_recipe_keeps_its_clipping_rule(monkeypatch, tmp_path):
    """The encoder measures the norm at every step (clipping off = max_norm inf); a head clips only when clipping
    is on and measures nothing (its log has no grad_norm rows)."""
    encoder = EncoderTraining(torch.nn.Linear(2, 1), None, [0] * 8, None, None, Budget(), 0, tmp_path, "cpu", "t",
                              "fp32")
    assert encoder.clip is clip_and_measure
    calls = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: calls.append(max_norm) or
                        torch.tensor(2.0))
    assert clip_and_measure([], 0.0) == 2.0 and clip_and_measure([], 1.5) == 2.0 and calls == [math.inf, 1.5]
    assert clip_only_when_on([], 0.0) is None and clip_only_when_on([], 0.5) is None and calls[2:] == [0.5]

    module = torch.nn.Linear(2, 1)
    head = HeadTraining(module, lambda idx: module(torch.ones(len(idx), 2)).sum(), 8, Budget(steps=2, batch_size=4),
                        seed=0, tag={"layer": 1})
    assert head.clip is clip_only_when_on
    log = head.run()
    assert [row["metric"] for row in log] == ["loss", "loss"] and not module.training
