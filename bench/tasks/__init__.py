"""Task registry and the contract every task declares (`Task`). A task loads its data, names the texts to encode,
and scores one (layer, dim, precision) cell from the cached all-layer arrays. One file per task family.

Besides the registered names: any BEIR-format folder of the data dir by its folder name, and mteb tasks,
`mteb:NAME` (registered with mteb) or `mteb:PATH.py:CLASS` (a task class in a local file), see bench/tasks/mteb.py.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import BenchError
from bench.data import resolve_data_dir
from bench.registry import Registry

if TYPE_CHECKING:  # for the annotations only: the registry stays light to import
    import numpy as np

    from bench.catalog import TaskMeta
    from bench.spec import EvalSpec

MTEB_PREFIX = "mteb:"


class Task(ABC):
    """What the runner and the evaluation call on a task (bench/runner.py, bench/evaluate.py). `data` is whatever
    `load` returns; `arrays[name][layer - 1]` the (texts, width) vectors of a text set as `texts` names it (with a
    checkpoint's head applied: bench/transforms.LayersWithHead)."""

    meta: TaskMeta  # its record: name, family, main metric, split, the precisions its family can score, ...
    # what else decides its scores besides the project's code, for a task scored by code outside the project (mteb's
    # version, the bytes of a user's task file): joins the task's fingerprint (bench/fingerprint.task_code); "" none
    external_code: str = ""

    @property
    def name(self) -> str:
        return self.meta.name

    @abstractmethod
    def load(self, data_dir: Path, spec: EvalSpec) -> Any:
        """The task's data, cut as the spec says (max pairs, max queries)."""

    @abstractmethod
    def texts(self, data: Any, spec: EvalSpec) -> dict[str, tuple[list[str], int]]:
        """The text sets to encode: name -> (texts, max token length)."""

    def role(self, name: str) -> str | None:
        """The role of a text set: "query", "document", or None (the model's default prompt). None: no roles."""
        return None

    @abstractmethod
    def prepare(self, data: Any, texts: dict[str, tuple[list[str], int]]) -> dict:
        """What every cell's scoring shares, computed once (indices of the texts, qrels, ...)."""

    @abstractmethod
    def score_cell(self, data: Any, arrays: dict, aux: dict, layer: int, dim: int, precision: str,
                   spec: EvalSpec) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The metrics of one (layer, dim, precision) cell, and its per-example values (for statistics)."""

    @abstractmethod
    def gold(self, data: Any) -> dict[str, np.ndarray]:
        """Stored once per run beside the per-example values: what pairs two runs' examples (and gold scores)."""

    def n_examples(self, data: Any) -> int:
        """How many examples a cell scores, asked only of a task whose `score_cell` returns no per-example values."""
        raise NotImplementedError(f"task {self.name} stores no per-example values, so it must say how many examples "
                                  "it scores (n_examples)")


def _discover() -> None:
    for module in ("bench.tasks.sts", "bench.tasks.retrieval"):
        importlib.import_module(module)


class _TaskRegistry(Registry[Task]):
    """Also takes mteb tasks (`mteb:...`) and any BEIR-format folder of the data dir ($BENCH_DATA_DIR, else
    ./data) by its folder name."""

    def get(self, name: str) -> Task:
        if name.startswith(MTEB_PREFIX):
            from bench.tasks.mteb import mteb_task  # imports mteb (seconds): only when a run names an mteb task

            return mteb_task(name)
        try:
            return super().get(name)
        except BenchError:
            if not (resolve_data_dir() / name / "qrels").is_dir():
                raise
            from bench.tasks.retrieval import RetrievalTask

            return RetrievalTask.local(name)


TASKS: Registry[Task] = _TaskRegistry("task", discover=_discover)
