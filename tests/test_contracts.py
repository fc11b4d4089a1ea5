"""The declared contracts (methods/__init__.Method and its two trained kinds, bench/tasks.Task, bench/heads.Head): every
registered name subclasses one, and the defaults they declare are the behaviour callers relied on before (a head
that makes no codes is scored at every precision with one sign bit per dim; our own tasks have no external code).
No oracle: these pin the project's own declarations."""

from __future__ import annotations

import numpy as np
import torch

from bench.heads import KINDS, Head, LinearHead, ResidualBinaryHead
from bench.losses import inner_model
from bench.precisions import KNOWN
from bench.tasks import TASKS, Task
from methods import METHODS, Method
from methods._heads import HeadMethod
from methods._jobs import TrainedMethod


def test_every_method_is_a_method_and_trains_by_its_contract():
    for name in METHODS.names():
        method = METHODS.get(name)
        assert issubclass(method, Method), name
        assert method.trains == issubclass(method, (TrainedMethod, HeadMethod)), name
    assert not METHODS.get("pretrained").trains and METHODS.get("pca").needs_steps is False
    assert METHODS.get("bebr").needs_steps and METHODS.get("full").fields_outside_objective == ()


def test_every_registered_task_is_a_task_without_external_code():
    for name in TASKS.names():
        task = TASKS.get(name)
        assert isinstance(task, Task) and task.name == name and task.external_code == "", name
    assert TASKS.get("stsb").role("sentences") is None
    assert (TASKS.get("scifact").role("queries"), TASKS.get("scifact").role("corpus")) == ("query", "document")


def test_a_head_that_makes_no_codes_serves_every_precision_with_one_bit_per_dim():
    assert all(issubclass(kind, Head) for kind in KINDS.values())
    head = LinearHead({1: np.eye(8, dtype=np.float32)}, {1: np.zeros(8, dtype=np.float32)})
    assert head.PRECISIONS == KNOWN and head.bits_per_dim == 1
    assert head.codes(1, np.ones((2, 8), dtype=np.float32), 8) is None
    assert set(ResidualBinaryHead.PRECISIONS) < set(KNOWN)


def test_inner_model_unwraps_distributed_data_parallel_only():
    model = torch.nn.Linear(2, 2)
    assert inner_model(model) is model
    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert inner_model(torch.nn.parallel.DistributedDataParallel(model)) is model
    finally:
        torch.distributed.destroy_process_group()
