"""`separate`: one model per target (layer, dim), built from the backbone's first `layer` blocks only and trained
with the base loss at exactly `dim` (or, with train_width="full", at the full width and truncated only at
evaluation, as the Starbucks STS baseline script did). Each model is evaluated only at its own cell, so the rows
of a run assemble the diagonal from several checkpoints. Targets: the Starbucks rule (methods/starbucks_srl.py).
The full-size target's model IS plain fine-tuning (all blocks, the base loss at full width, same budget and seed),
so it is `full`'s checkpoint, trained once for both methods (Job.same_as; tests/test_train.py checks it)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.losses import BaseLoss, at, check_choice, embed_columns
from bench.spec import SubModel
from methods import METHODS
from methods._jobs import Job, TrainedMethod
from methods.starbucks_srl import check_targets, resolve_targets

TRAIN_WIDTHS = ("target", "full")


@METHODS.register("separate")
class Separate(TrainedMethod):
    @dataclass(frozen=True)
    class Params:
        targets: tuple[tuple[int, int], ...] | None = None  # None: the Starbucks target rule
        train_width: str = "target"  # "target": the loss at exactly dim; "full": at full width, truncated later

        def __post_init__(self):
            check_targets("separate", self.targets)
            check_choice("separate", "train_width", self.train_width, TRAIN_WIDTHS)

    def objective(self, target: SubModel, train_dim: int, loss: BaseLoss, pooling: str):
        """The base loss at the target's layer: the last block of its truncated model (and, run on a deeper model,
        the same block, with nothing above it in the graph)."""
        def objective(model, batch, generator):
            return loss(at(embed_columns(model, batch, pooling), target.layer, train_dim), batch["labels"])

        return objective

    def jobs(self, params: Params, num_layers: int, hidden_size: int, loss: BaseLoss, pooling: str) -> list[Job]:
        jobs = []
        for target in resolve_targets(params.targets, num_layers, hidden_size):
            target.check_inside(num_layers, hidden_size)
            train_dim = target.dim if params.train_width == "target" else hidden_size
            full_size = target == SubModel(num_layers, hidden_size)  # the base loss at the whole model: `full`
            jobs.append(Job(f"layer{target.layer}-dim{target.dim}", self.objective(target, train_dim, loss, pooling),
                            targets=(target,), num_layers=target.layer, only_targets=True,
                            log_cell=target, same_as="full" if full_size else None))
        return jobs
