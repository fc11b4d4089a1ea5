"""The method registry: one file per method in this package, registered with @METHODS.register(name).

A method is a class with a frozen dataclass `Params` (its hyperparameters, recorded with every row) and
`checkpoints(spec, ctx) -> list[Checkpoint]`: the model(s) to evaluate, training them first if needed. A method
that trains either trains the encoder (`jobs`: methods/_jobs.py) or fits a post-hoc head on the frozen backbone
(`fit`: methods/_heads.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from bench.registry import Registry
from bench.spec import SubModel


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


METHODS: Registry = Registry("method", discover=_discover)


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
