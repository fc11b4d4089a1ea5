"""Task registry. A task loads its data, names the texts to encode, and scores one (layer, dim, precision) cell
from the cached all-layer arrays. One file per task family."""

from __future__ import annotations

import importlib

from bench.registry import Registry


def _discover() -> None:
    for module in ("bench.tasks.sts", "bench.tasks.retrieval"):
        importlib.import_module(module)


TASKS: Registry = Registry("task", discover=_discover)
