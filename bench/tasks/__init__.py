"""Task registry. A task loads its data, names the texts to encode, and scores one (layer, dim, precision) cell
from the cached all-layer arrays. One file per task family.

The protocol: `meta` (a TaskMeta), `name`, `load(data_dir, spec)`, `texts(data, spec)` -> {name: (texts,
max_len)}, `role(name)` -> "query", "document" or None (which prompt the model prepends to that text set; a task
without `role` encodes every set as None), `prepare(data, texts)`, `score_cell(...)`, `gold(data)`."""

from __future__ import annotations

import importlib

from bench import BenchError
from bench.data import resolve_data_dir
from bench.registry import Registry


def _discover() -> None:
    for module in ("bench.tasks.sts", "bench.tasks.retrieval"):
        importlib.import_module(module)


class _TaskRegistry(Registry):
    """Also takes any BEIR-format folder of the data dir ($BENCH_DATA_DIR, else ./data) by its folder name."""

    def get(self, name: str):
        try:
            return super().get(name)
        except BenchError:
            if not (resolve_data_dir() / name / "qrels").is_dir():
                raise
            from bench.tasks.retrieval import RetrievalTask

            return RetrievalTask.local(name)


TASKS: Registry = _TaskRegistry("task", discover=_discover)
