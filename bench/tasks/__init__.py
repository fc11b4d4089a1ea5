"""Task registry. A task loads its data, names the texts to encode, and scores one (layer, dim, precision) cell
from the cached all-layer arrays. One file per task family.

The protocol: `meta` (a TaskMeta), `name`, `load(data_dir, spec)`, `texts(data, spec)` -> {name: (texts,
max_len)}, `role(name)` -> "query", "document" or None (which prompt the model prepends to that text set; a task
without `role` encodes every set as None), `prepare(data, texts)`, `score_cell(...)`, `gold(data)`.

Besides the registered names: any BEIR-format folder of the data dir by its folder name, and mteb tasks,
`mteb:NAME` (registered with mteb) or `mteb:PATH.py:CLASS` (a task class in a local file), see bench/tasks/mteb.py.
"""

from __future__ import annotations

import importlib

from bench import BenchError
from bench.data import resolve_data_dir
from bench.registry import Registry

MTEB_PREFIX = "mteb:"


def _discover() -> None:
    for module in ("bench.tasks.sts", "bench.tasks.retrieval"):
        importlib.import_module(module)


class _TaskRegistry(Registry):
    """Also takes mteb tasks (`mteb:...`) and any BEIR-format folder of the data dir ($BENCH_DATA_DIR, else
    ./data) by its folder name."""

    def get(self, name: str):
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


TASKS: Registry = _TaskRegistry("task", discover=_discover)
