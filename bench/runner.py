"""Run specs: get the method's checkpoint(s), evaluate them on the task, write one results file per spec."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from bench import BenchError
from bench.backbone import Encoder
from bench.data.fetch import ensure_data
from bench.evaluate import evaluate_grid
from bench.results import is_finished, make_row, run_fields, run_path, write_run
from bench.spec import RunSpec, freeze_params
from bench.tasks import TASKS
from bench.train import backbone_shape, is_main_process
from methods import METHODS, RunContext

log = logging.getLogger("bench")


def default_params(method: str) -> tuple:
    return freeze_params(asdict(METHODS.get(method)().Params()))


def run_spec(spec: RunSpec, ctx: RunContext) -> Path | None:
    """Evaluate one spec; a finished run is a no-op (returns None)."""
    if is_finished(ctx.results_dir, spec):
        log.info("skip %s: %s exists", spec.run_id, run_path(ctx.results_dir, spec))
        return None
    t0 = time.perf_counter()
    method = METHODS.get(spec.method)()
    task = TASKS.get(spec.task)
    ensure_data(spec.task, ctx.data_dir)  # missing files: fetched when the hub answers, else one error line
    data = task.load(ctx.data_dir, spec.eval)  # fail on missing data before any training
    shared = run_fields(spec)
    rows, timings, examples = [], {}, dict(task.gold(data))
    checkpoints = method.checkpoints(spec, ctx)
    if not is_main_process():  # under torchrun every process trains; one evaluates and writes
        return None
    full_depth = backbone_shape(spec.backbone)[0]  # a `separate` checkpoint holds fewer blocks than the backbone
    for ck in checkpoints:
        rows += [make_row(spec, split="train", shared=shared, **entry) for entry in ck.train_log]
        if getattr(method, "trains", True):
            timings["train_seconds"] = timings.get("train_seconds", 0.0) + ck.train_seconds
        encoder = Encoder.load(ck.model, spec.eval.pooling, ctx.device)
        cells, per_example = evaluate_grid(encoder, ck.model_id, task, data, spec.eval, ck.cells, ck.targets,
                                           ctx.cache_dir / "encodings", backbone_layers=full_depth)
        examples.update(per_example)
        for cell in cells:
            if "layer" not in cell:  # run-level timing: summed over the checkpoints of a multi-model method
                timings[cell["metric"]] = timings.get(cell["metric"], 0.0) + cell["score"]
                continue
            metric, score = cell.pop("metric"), cell.pop("score")
            rows.append(make_row(spec, metric=metric, score=score, split=task.split, shared=shared, **cell))
    rows += [make_row(spec, metric=m, score=s, split=task.split, shared=shared) for m, s in timings.items()]
    rows.append(make_row(spec, metric="run_seconds", score=time.perf_counter() - t0, shared=shared))
    return write_run(ctx.results_dir, spec, rows, examples)


def run_all(specs: list[RunSpec], ctx: RunContext) -> list[Path]:
    """Every spec in order; each finished run is written before the next starts, so an interruption loses none."""
    written = []
    for i, spec in enumerate(specs, 1):
        log.info("[%d/%d] %s on %s (run %s)", i, len(specs), spec.method, spec.task, spec.run_id)
        path = run_spec(spec, ctx)
        if path is not None:
            written.append(path)
    if not specs:
        raise BenchError("nothing to run: no methods x tasks x seeds")
    return written
