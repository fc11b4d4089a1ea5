"""The contract of a method that trains the encoder (`TrainedMethod`), and from its spec to its checkpoints: the jobs
it declares, each trained (or reused, or resumed) through bench/train.py's `train` (the one loop of bench/loop.py),
which knows no method.

A checkpoint folder is keyed by the spec's model fields AND the fingerprint of the code that trains it
(bench/fingerprint.py): after an edit to the method, the loop or a loss, nothing trained by the old code is reused.
The evaluation sets whose texts were kept out of the training data (bench/data/decontaminate.py) join the key too.
"""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench import BenchError
from bench.data.decontaminate import evaluation_sets
from bench.fingerprint import method_code
from bench.hub import Backbone, backbone_shape, load_model
from bench.serving import resolve_pooling
from bench.spec import RunSpec, SubModel, freeze_params, stable_hash
from bench.train import Objective, TextCollate, TrainResult, is_trained, read_result, train
from methods import METHODS, Checkpoint, Method, RunContext

if TYPE_CHECKING:  # bench.losses imports sentence-transformers' losses: loaded where a loss is built (method_jobs)
    from bench.losses import BaseLoss


REMOVED_FILE = "decontamination.json"  # in a job's checkpoint folder: how many training examples were dropped


@dataclass(frozen=True)
class Job:
    """One model a method trains: the first `num_layers` blocks of the backbone (None: all of them) under
    `objective`. `only_targets`: the model is scored at its targets only (a `separate` model serves one cell);
    `log_cell` tags its loss rows when a method trains several models, so their curves stay distinct.
    `same_as`: another method whose default model this job's model is, by construction (same blocks, same
    objective, same budget and seed): the job then trains, or reuses, that method's checkpoint folder, so the
    model is trained once for both (`separate`'s full-size model is `full`'s)."""

    name: str
    objective: Objective
    targets: tuple[SubModel, ...]
    num_layers: int | None = None
    only_targets: bool = False
    log_cell: SubModel | None = None
    same_as: str | None = None


class TrainedMethod(Method):
    """A method that trains the encoder: `jobs` says which models it trains under which objectives; the training,
    caching and resuming are the same for every such method (`method_checkpoints`)."""

    trains = True
    # Params fields that act in a stage before the objective (starbucks' pre-training): the contract test that every
    # field moves the loss skips them, and the method's own tests cover them
    fields_outside_objective: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def jobs(self, params, num_layers: int, hidden_size: int, loss: BaseLoss, pooling: str) -> list[Job]:
        """The models to train for `params` on a backbone of `num_layers` blocks and `hidden_size` dims, with the
        base loss of the training data and the pooling the model is served with."""

    def checkpoints(self, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
        return method_checkpoints(self, spec, ctx)

    def check_config(self, spec: RunSpec, backbone: Backbone) -> None:
        method_jobs(self, spec, backbone)


def training_key(method, spec: RunSpec, eval_sets: tuple[str, ...]) -> str:
    """The spec's model fields, the training code's fingerprint and the evaluation sets whose texts were kept out of
    the training data (bench/data/decontaminate.evaluation_sets): what names a method's checkpoint folders."""
    code = method_code(type(method), trains=True, backbone=spec.backbone)  # with the model's pinned revision
    return stable_hash({"model": spec.model_key, "code": code, "decontaminated": list(eval_sets)})


def checkpoint_dir(method, spec: RunSpec, ctx: RunContext, job: Job) -> Path:
    """cache/checkpoints/<training key>/<pooling>/<job>: every task of a spec shares it. The pooling trains the
    model but is an evaluation field (not in model_key), so it names a level of its own. A job that is `same_as`
    another method's model gets that method's folder (keyed by that method's spec and code)."""
    if job.same_as is not None:
        other = METHODS.get(job.same_as)()
        params = freeze_params(asdict(other.Params()))
        return checkpoint_dir(other, replace(spec, method=job.same_as, params=params), ctx, Job("", job.objective, ()))
    key = training_key(method, spec, evaluation_sets(ctx.data_dir))
    return Path(ctx.cache_dir) / "checkpoints" / key / spec.eval.pooling / (job.name or "model")


def method_jobs(method: TrainedMethod, spec: RunSpec, backbone: Backbone) -> tuple[list[Job], int, int]:
    """A trained method's jobs for a spec, and the backbone's (layers, hidden size). Every bad training config
    fails here with one line, before anything is trained: steps, training data name, hyperparameters, targets
    outside the backbone. `backbone`: the spec's, with the run's remote-code permission."""
    from bench.data.pairs import training_kind
    from bench.losses import base_loss

    if spec.budget.steps <= 0:
        raise BenchError(f"method {spec.method} trains, so the budget needs steps > 0; got {spec.budget.steps}")
    loss = base_loss(training_kind(spec.train_data))
    params = method.Params(**dict(spec.params))
    num_layers, hidden = backbone_shape(backbone)
    pooling = resolve_pooling(spec.eval.pooling, backbone)
    jobs = method.jobs(params, num_layers, hidden, loss, pooling)
    for job in jobs:
        for target in job.targets:
            target.check_inside(num_layers, hidden)
    return jobs, num_layers, hidden


def method_checkpoints(method: TrainedMethod, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
    """Train (or reuse, or resume) every model a method's jobs describe; a Checkpoint per model. The training
    data is only read when something is left to train; how many of its examples decontamination dropped is written
    beside the weights (REMOVED_FILE) and reaches the run's rows as `train_examples_removed`."""
    from bench.data.pairs import load_training_set

    jobs, _, _ = method_jobs(method, spec, ctx.backbone(spec.backbone))
    data, out = None, []
    for job in jobs:
        folder = checkpoint_dir(method, spec, ctx, job)
        if is_trained(folder):
            result = read_result(folder)
        else:
            data = data or load_training_set(ctx.data_dir, spec.train_data)
            write_json(folder / REMOVED_FILE, {"train_examples_removed": data.removed})
            result = _train_job(job, spec, data, folder, ctx)
        removed = json.loads((folder / REMOVED_FILE).read_text())["train_examples_removed"]
        log = (*result.log, {"step": -1, "metric": "train_examples_removed", "score": float(removed)})
        tag = {"layer": job.log_cell.layer, "dim": job.log_cell.dim} if job.log_cell else {}
        out.append(Checkpoint(model=str(result.model_dir), model_id=f"ckpt:{folder.parent.parent.name}/"
                              f"{folder.parent.name}/{folder.name}", targets=job.targets,
                              only_targets=job.only_targets, train_log=tuple({**row, **tag} for row in log),
                              train_seconds=result.seconds))
    return out


def write_json(path: Path, content: dict) -> None:
    """Written whole or not at all (temp file, then rename); every process of a DDP job may write the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, path)


def _train_job(job: Job, spec: RunSpec, data, folder: Path, ctx: RunContext) -> TrainResult:
    model, tokenizer = load_model(ctx.backbone(spec.backbone), job.num_layers)
    labels = data.labels or [None] * len(data)
    examples = list(zip(data.texts, labels))
    desc = f"train {spec.method}" + (f" {job.name}" if job.name else "")
    return train(model, tokenizer, examples, TextCollate(tokenizer, spec.budget.max_seq_len), job.objective,
                 spec.budget, spec.seed, folder, ctx.device, desc, spec.dtype)
