"""`pretrained`: the backbone as-is, no training; every cell by slicing its one encoding. A registered public
model (bench/models.py) has its trained (layer, dim) cells as targets, so reports box them."""

from __future__ import annotations

from dataclasses import dataclass

from bench.models import trained_cells
from bench.spec import RunSpec, SubModel
from methods import METHODS, Checkpoint, RunContext


@METHODS.register("pretrained")
class Pretrained:
    trains = False

    @dataclass(frozen=True)
    class Params:
        pass

    def checkpoints(self, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
        targets = tuple(SubModel(layer, dim) for layer, dim in trained_cells(spec.backbone))
        return [Checkpoint(model=spec.backbone, model_id=f"backbone:{spec.backbone}", targets=targets)]
