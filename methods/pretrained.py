"""`pretrained`: the backbone as-is, no training; every cell by slicing its one encoding. A registered public
model (bench/models.py) has its trained (layer, dim) cells as targets, so reports box them."""

from __future__ import annotations

from bench.models import trained_cells
from bench.spec import RunSpec, SubModel
from methods import METHODS, Checkpoint, Method, RunContext


@METHODS.register("pretrained")
class Pretrained(Method):  # trains nothing and has no hyperparameters: Method's defaults
    def checkpoints(self, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
        targets = tuple(SubModel(layer, dim) for layer, dim in trained_cells(spec.backbone))
        return [Checkpoint(model=spec.backbone, model_id=f"backbone:{spec.backbone}", targets=targets)]
