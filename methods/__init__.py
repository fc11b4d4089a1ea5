"""The method registry and the contract every method declares: one file per method in this package, a subclass of
one of three contracts, registered with @METHODS.register(name).

- `Method` (here): a frozen dataclass `Params` (its hyperparameters, recorded with every row) and
  `checkpoints(spec, ctx) -> list[Checkpoint]`, the model(s) to evaluate. Subclassed directly by a method that does
  not train (`pretrained`: `trains` False, so no training data, budget or seeds).
- `TrainedMethod` (methods/_jobs.py): trains the encoder; declares `jobs`, the models it trains and their objectives.
- `HeadMethod` (methods/_heads.py): fits a post-hoc head on the frozen backbone's vectors; declares `fit`.
The runner and the evaluation call only what these declare (`trains`, `check_config`, `checkpoints`).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench.registry import Registry
from bench.spec import RunSpec, SubModel

if TYPE_CHECKING:  # a type only: torch and transformers load where a model is loaded (RunContext.backbone)
    from bench.hub import Backbone


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


METHODS: Registry[type[Method]] = Registry("method", discover=_discover)


@dataclass(frozen=True)
class Checkpoint:
    """A model to evaluate: `model` is a backbone name or checkpoint dir, `model_id` names its weights (the
    encoding cache key). `targets` are the (layer, dim) pairs it was trained for; evaluation scores the requested
    grid plus the targets, or only the targets (`only_targets`: a `separate` model serves its own cell).
    `head`: a post-pool head file (bench/heads.py) that evaluation applies to each layer's pooled vectors before
    truncation, or None. A trained model also carries its loss curve (dicts with step, metric, score, optionally
    layer/dim) and the seconds its training took; the runner writes both as rows."""

    model: str
    model_id: str
    targets: tuple[SubModel, ...] = ()
    only_targets: bool = False
    head: str | None = None
    train_log: tuple[dict, ...] = ()
    train_seconds: float = 0.0


@dataclass(frozen=True)
class RunContext:
    """Where things live for one invocation; not part of any spec (moving a folder changes no score)."""

    data_dir: Path
    results_dir: Path
    cache_dir: Path
    device: str | None = None
    trust_remote_code: bool = False  # a permission, not a score-moving choice: not in any spec

    def backbone(self, name: str):
        """The model `name` (a backbone or a checkpoint folder) as this run may load it: a bench.hub.Backbone
        carrying the run's remote-code permission, so no load can drop it."""
        from bench.hub import Backbone  # torch and transformers only where a model is loaded

        return Backbone(name, self.trust_remote_code)

class Method(ABC):
    """Every method. As it stands, one that does not train: its checkpoints are the backbone as it is, so a suite
    runs it once (first seed) with no training data and no budget."""

    trains: ClassVar[bool] = False  # True: its checkpoints depend on the training data, the budget and the seed

    @dataclass(frozen=True)
    class Params:  # each method declares its own (a frozen dataclass of hyperparameters; none by default)
        pass

    @abstractmethod
    def checkpoints(self, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
        """The model(s) to evaluate for a spec, trained (or fitted) first where needed."""

    def check_config(self, spec: RunSpec, backbone: Backbone) -> None:
        """Fail with one line on a bad configuration, before anything runs (called once per method by the runner).
        A method that does not train has nothing to check."""
