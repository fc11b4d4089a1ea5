"""Named presets: what to run (backbone, tasks, evaluation grid, training budget, seeds)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bench import BenchError
from bench.spec import Budget, EvalSpec

STS_TASKS = ("stsb", "sickr", "sts12", "sts13", "sts14", "sts15", "sts16")
FOUNDATION_TASKS = STS_TASKS + ("scifact",)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    backbone: str = "minilm"
    tasks: tuple[str, ...] = FOUNDATION_TASKS
    eval: EvalSpec = field(default_factory=EvalSpec)
    budget: Budget = field(default_factory=Budget)
    train_data: str = "snli"
    seeds: tuple[int, ...] = (0,)


def smoke() -> Suite:
    """A tiny random BERT on real data slices: seconds, for tests and CI."""
    return Suite("smoke", "tiny random BERT (2 layers x 64), 8 steps, data slices", backbone="tiny-random-bert",
                 tasks=("stsb", "scifact"), eval=EvalSpec(max_pairs=200, max_queries=20, dims=(16, 32, 64),
                                                         max_doc_len=64, batch_size=32),
                 budget=Budget(steps=8, batch_size=8, lr=1e-4, max_seq_len=32))


def default() -> Suite:
    return Suite("default", "all-MiniLM-L6-v2, SNLI triplets, short budget, every foundation task",
                 budget=Budget(steps=100, batch_size=32, lr=2e-5, max_seq_len=64))


SUITES = {"smoke": smoke, "default": default}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise BenchError(f"unknown suite {name!r}; known: {', '.join(SUITES)} (see `bench ls`)")
    return SUITES[name]()


def with_overrides(suite: Suite, **changes) -> Suite:
    """Command-line overrides: None leaves the suite's value; eval fields go into the EvalSpec."""
    eval_fields = {k: v for k, v in changes.items() if k in EvalSpec.__dataclass_fields__ and v is not None}
    top = {k: v for k, v in changes.items() if k in Suite.__dataclass_fields__ and v is not None}
    return replace(suite, eval=replace(suite.eval, **eval_fields), **top)


def make_specs(suite: Suite, methods: str) -> list:
    """methods x seeds x tasks -> RunSpecs (each method with its default hyperparameters)."""
    from bench.runner import default_params
    from bench.spec import RunSpec
    from bench.tasks import TASKS
    from methods import METHODS

    tasks = TASKS.expand(list(suite.tasks))
    specs = []
    for method in METHODS.expand(methods):
        trains = getattr(METHODS.get(method), "trains", True)
        for seed in suite.seeds if trains else suite.seeds[:1]:  # no training: the seed changes nothing
            for task in tasks:
                specs.append(RunSpec(method=method, task=task, backbone=suite.backbone, params=default_params(method),
                                     train_data=suite.train_data if trains else "none",
                                     budget=suite.budget if trains else Budget(steps=0), seed=seed, eval=suite.eval))
    return specs
