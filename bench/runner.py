"""Run specs: get the method's checkpoint(s), evaluate them on the task, write one results file per spec.

`make_specs` turns a suite (plain data, bench/suites.py), a method list and command-line sweeps (`--set`,
bench/overrides.py) into RunSpecs; `run_spec` runs one. A spec's results file is named by its run_id and the
fingerprint of the code that produces it (bench/fingerprint.py), so a finished run is skipped only when the same code
made it. One process at a time produces a result file (a file lock under the results folder): a second process
that reaches the same run waits, then finds it finished. Unfinished runs leave a sidecar for `bench status`
(bench/runstate.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from bench import BenchError, phases, runstate
from bench.data import use_data_dir
from bench.data.fetch import ensure_data
from bench.devices import check_dtype_supported, pick_device
from bench.dist import claim, is_main_process, process_device, world
from bench.encoder import Encoder
from bench.evaluate import evaluate_grid
from bench.fingerprint import encoding_code, method_code, task_code
from bench.hub import Backbone, backbone_shape
from bench.results import is_finished, make_row, run_fields, run_path, write_run
from bench.serving import Serving, resolve_eval
from bench.spec import Budget, RunSpec, freeze_params, stable_hash
from bench.suites import Suite
from bench.tasks import TASKS
from methods import METHODS, RunContext

log = logging.getLogger("bench")


def default_params(method: str) -> tuple:
    return freeze_params(asdict(METHODS.get(method)().Params()))


def make_specs(suite: Suite, methods: str | None = None, sweeps: dict[str, list[dict]] | None = None,
               trust_remote_code: bool = False) -> list[RunSpec]:
    """backbones x methods x sweep points x seeds x tasks -> RunSpecs (methods None: the suite's). A method's
    hyperparameters: its defaults, then the suite's, then one point of its `--set` sweep (bench/overrides.py:
    {method: [{field: value}, ...]}). The evaluation is resolved against each backbone (bench.serving.resolve_eval:
    its pooling and prompts), so a spec records how the model was served."""
    tasks = TASKS.expand(list(suite.tasks))
    specs = []
    for backbone in suite.backbones or (suite.backbone,):
        handle = Backbone(backbone, trust_remote_code)
        evaluation = resolve_eval(suite.eval, handle)
        for method in METHODS.expand(methods or suite.methods):
            trains = METHODS.get(method).trains
            for point in (sweeps or {}).get(method, [{}]):
                params = freeze_params({**dict(default_params(method)), **suite.method_params.get(method, {}),
                                        **point})
                for seed in suite.seeds if trains else suite.seeds[:1]:  # no training: the seed changes nothing
                    for task in tasks:
                        specs.append(RunSpec(method=method, task=task, backbone=backbone, params=params,
                                             train_data=suite.train_data if trains else "none",
                                             budget=suite.budget if trains else Budget(steps=0), seed=seed,
                                             eval=evaluation, dtype=suite.dtype))
                if trains and specs:  # a bad training config fails now, not after hours of other runs
                    METHODS.get(method)().check_config(specs[-1], handle)
    return specs


def run_code(spec: RunSpec) -> str:
    """The fingerprint of everything that makes this spec's rows: the method (and its training), the encoder,
    the task and the evaluation."""
    method = METHODS.get(spec.method)
    return stable_hash([method_code(method, method.trains), encoding_code(spec.backbone),
                        task_code(TASKS.get(spec.task))])


def run_spec(spec: RunSpec, ctx: RunContext) -> Path | None:
    """Evaluate one spec; a run finished by the same code is a no-op (returns None), also when another process
    finished it while this one waited for it (looked at only under the claim, so all ranks of a DDP job decide
    alike)."""
    code = run_code(spec)
    path = run_path(ctx.results_dir, spec, code)
    with claim(runstate.lock_path(ctx.results_dir, path.stem)):
        if is_finished(ctx.results_dir, spec, code):
            log.info("skip %s: %s exists", spec.run_id, path)
            return None
        if not is_main_process():  # under DDP the other ranks train with rank 0, which records the run
            return _run(spec, code, ctx)
        with runstate.recording(ctx.results_dir, path.stem):
            return _run(spec, code, ctx)


def _run(spec: RunSpec, code: str, ctx: RunContext) -> Path | None:
    t0, loaded = time.perf_counter(), phases.totals().get("load", 0.0)
    check_dtype_supported(spec.dtype, pick_device(process_device(ctx.device, world()[1])))
    method = METHODS.get(spec.method)()
    task = TASKS.get(spec.task)
    _forget_other_models(spec)
    with phases.phase("load"):
        ensure_data(spec.task, ctx.data_dir)  # missing files: fetched when the hub answers, else one error line
        data = task.load(ctx.data_dir, spec.eval)  # fail on missing data before any training
    device = str(pick_device(ctx.device))
    shared = run_fields(spec, code, task.meta, device)
    rows, timings, layer_times, examples = [], {}, {}, dict(task.gold(data))
    with phases.phase("load"):  # a checkpoint to train is charged to "train" (bench.train.train is timed)
        checkpoints = method.checkpoints(spec, ctx)
    rank, size = world()  # under torchrun every process trains and encodes its shard; rank 0 scores and writes
    backbone = ctx.backbone(spec.backbone)
    full_depth = backbone_shape(backbone)[0]  # a `separate` checkpoint holds fewer blocks
    for ck in checkpoints:
        encoder = _encoder_for(ck, spec, ctx, process_device(ctx.device, size))
        cells, per_example = evaluate_grid(encoder, ck, task, data, spec.eval, ctx.cache_dir / "encodings",
                                           backbone_layers=full_depth, world=(rank, size))
        if rank != 0:
            continue
        rows += [make_row(shared, split="train", **entry) for entry in ck.train_log]
        if method.trains:
            timings["train_seconds"] = timings.get("train_seconds", 0.0) + ck.train_seconds
        examples.update(per_example)
        for cell in cells:
            if "layer" not in cell:  # run-level timing: summed over the checkpoints of a multi-model method
                timings[cell["metric"]] = timings.get(cell["metric"], 0.0) + cell["score"]
            elif "dim" not in cell:  # per-layer encode time: any checkpoint that has the layer measures it
                layer_times[cell["layer"]] = cell
            else:
                rows.append(make_row(shared, split=task.meta.split, **cell))
    if rank != 0:
        return None
    rows += [make_row(shared, split=task.meta.split, **cell) for _, cell in sorted(layer_times.items())]
    rows += [make_row(shared, metric=m, score=s, split=task.meta.split) for m, s in timings.items()]
    rows.append(make_row(shared, metric="load_seconds", score=phases.totals().get("load", 0.0) - loaded))
    rows.append(make_row(shared, metric="run_seconds", score=time.perf_counter() - t0))
    with phases.phase("write"):
        return write_run(ctx.results_dir, spec, code, rows, examples)


# Encoders kept from one run to the next: a method's runs on its tasks follow each other and serve the same
# checkpoints, so each model is loaded once per process, not once per task. Keys start with the spec's model_key;
# a run of another model drops them before it trains or loads anything (`_forget_other_models`), so at most one
# model's encoders are held (a `separate` run's six truncated models) and none sits in memory while another trains.
_kept_encoders: dict[tuple, Encoder] = {}


def _forget_other_models(spec: RunSpec) -> None:
    for key in [k for k in _kept_encoders if k[0] != spec.model_key]:
        del _kept_encoders[key]


def _encoder_for(ck, spec: RunSpec, ctx: RunContext, device: str | None) -> Encoder:
    key = (spec.model_key, ck.model, spec.eval.pooling, device, ctx.trust_remote_code, spec.eval.prompts,
           spec.eval.head_layers, spec.dtype)
    if key not in _kept_encoders:
        with phases.phase("load"):
            model = ctx.backbone(ck.model)  # the backbone, or a checkpoint trained from it
            _kept_encoders[key] = Encoder.load(model, Serving.of(model, spec.eval), device, dtype=spec.dtype)
    return _kept_encoders[key]


def run_all(specs: list[RunSpec], ctx: RunContext) -> list[Path]:
    """Every spec in order; each finished run is written before the next starts, so an interruption loses none."""
    if not specs:
        raise BenchError("nothing to run: no methods x tasks x seeds")
    written = []
    try:
        with use_data_dir(ctx.data_dir):  # tasks found by folder name, users' task files: this process only
            for i, spec in enumerate(specs, 1):
                log.info("[%d/%d] %s on %s (run %s)", i, len(specs), spec.method, spec.task, spec.run_id)
                path = run_spec(spec, ctx)
                if path is not None:
                    written.append(path)
    finally:
        _kept_encoders.clear()  # kept between the runs of one call, never from one call to the next
    return written
