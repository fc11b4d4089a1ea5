"""`pretrained`: the backbone as-is, no training; every cell by slicing its one encoding."""

from __future__ import annotations

from dataclasses import dataclass

from bench.spec import RunSpec
from methods import METHODS, Checkpoint, RunContext


@METHODS.register("pretrained")
class Pretrained:
    trains = False

    @dataclass(frozen=True)
    class Params:
        pass

    def checkpoints(self, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
        return [Checkpoint(model=spec.backbone, model_id=f"backbone:{spec.backbone}")]
