"""Run specs: get the method's checkpoint(s), evaluate them on the task, write one results file per spec.

`make_specs` turns a suite (plain data, bench/suites.py) and a method list into RunSpecs; `run_spec` runs one.
A spec's results file is named by its run_id and the fingerprint of the code that produces it
(bench/fingerprint.py), so a finished run is skipped only when the same code made it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from bench import BenchError
from bench.backbone import Encoder, backbone_shape, pick_device
from bench.data.fetch import ensure_data
from bench.evaluate import evaluate_grid
from bench.fingerprint import encoding_code, method_code, task_code
from bench.results import is_finished, make_row, run_fields, run_path, write_run
from bench.spec import Budget, RunSpec, freeze_params, stable_hash
from bench.suites import Suite
from bench.tasks import TASKS
from bench.train import is_main_process
from methods import METHODS, RunContext
from methods._heads import check_head_config
from methods._jobs import method_jobs

log = logging.getLogger("bench")


def default_params(method: str) -> tuple:
    return freeze_params(asdict(METHODS.get(method)().Params()))


def make_specs(suite: Suite, methods: str) -> list[RunSpec]:
    """methods x seeds x tasks -> RunSpecs (each method with its default hyperparameters, then the suite's)."""
    tasks = TASKS.expand(list(suite.tasks))
    specs = []
    for method in METHODS.expand(methods):
        trains = getattr(METHODS.get(method), "trains", True)
        for seed in suite.seeds if trains else suite.seeds[:1]:  # no training: the seed changes nothing
            for task in tasks:
                params = freeze_params({**dict(default_params(method)), **suite.method_params.get(method, {})})
                specs.append(RunSpec(method=method, task=task, backbone=suite.backbone, params=params,
                                     train_data=suite.train_data if trains else "none",
                                     budget=suite.budget if trains else Budget(steps=0), seed=seed, eval=suite.eval))
        if trains and specs:  # a bad training config fails now, not after hours of other runs
            check = method_jobs if hasattr(METHODS.get(method), "jobs") else check_head_config  # a head: `fit`
            check(METHODS.get(method)(), specs[-1])
    return specs


def run_code(spec: RunSpec) -> str:
    """The fingerprint of everything that makes this spec's rows: the method (and its training), the encoder,
    the task and the evaluation."""
    method = METHODS.get(spec.method)
    return stable_hash([method_code(method, getattr(method, "trains", True)), encoding_code(),
                        task_code(TASKS.get(spec.task))])


def run_spec(spec: RunSpec, ctx: RunContext) -> Path | None:
    """Evaluate one spec; a run finished by the same code is a no-op (returns None)."""
    code = run_code(spec)
    if is_finished(ctx.results_dir, spec, code):
        log.info("skip %s: %s exists", spec.run_id, run_path(ctx.results_dir, spec, code))
        return None
    t0 = time.perf_counter()
    method = METHODS.get(spec.method)()
    task = TASKS.get(spec.task)
    ensure_data(spec.task, ctx.data_dir)  # missing files: fetched when the hub answers, else one error line
    data = task.load(ctx.data_dir, spec.eval)  # fail on missing data before any training
    device = str(pick_device(ctx.device))
    shared = run_fields(spec, code, task.meta, device)
    rows, timings, layer_times, examples = [], {}, {}, dict(task.gold(data))
    checkpoints = method.checkpoints(spec, ctx)
    if not is_main_process():  # under torchrun every process trains; one evaluates and writes
        return None
    full_depth = backbone_shape(spec.backbone)[0]  # a `separate` checkpoint holds fewer blocks than the backbone
    for ck in checkpoints:
        rows += [make_row(shared, split="train", **entry) for entry in ck.train_log]
        if getattr(method, "trains", True):
            timings["train_seconds"] = timings.get("train_seconds", 0.0) + ck.train_seconds
        encoder = Encoder.load(ck.model, spec.eval.pooling, ctx.device)
        cells, per_example = evaluate_grid(encoder, ck, task, data, spec.eval, ctx.cache_dir / "encodings",
                                           backbone_layers=full_depth)
        examples.update(per_example)
        for cell in cells:
            if "layer" not in cell:  # run-level timing: summed over the checkpoints of a multi-model method
                timings[cell["metric"]] = timings.get(cell["metric"], 0.0) + cell["score"]
            elif "dim" not in cell:  # per-layer encode time: any checkpoint that has the layer measures it
                layer_times[cell["layer"]] = cell
            else:
                rows.append(make_row(shared, split=task.meta.split, **cell))
    rows += [make_row(shared, split=task.meta.split, **cell) for _, cell in sorted(layer_times.items())]
    rows += [make_row(shared, metric=m, score=s, split=task.meta.split) for m, s in timings.items()]
    rows.append(make_row(shared, metric="run_seconds", score=time.perf_counter() - t0))
    return write_run(ctx.results_dir, spec, code, rows, examples)


def run_all(specs: list[RunSpec], ctx: RunContext) -> list[Path]:
    """Every spec in order; each finished run is written before the next starts, so an interruption loses none."""
    if not specs:
        raise BenchError("nothing to run: no methods x tasks x seeds")
    written = []
    for i, spec in enumerate(specs, 1):
        log.info("[%d/%d] %s on %s (run %s)", i, len(specs), spec.method, spec.task, spec.run_id)
        path = run_spec(spec, ctx)
        if path is not None:
            written.append(path)
    return written
