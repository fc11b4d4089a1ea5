"""`full`: plain fine-tuning of the whole model, the base loss at the last layer and full width only. Every other
(layer, dim) cell is evaluated by truncating this one model: the baseline that falls apart at small sizes."""

from __future__ import annotations

from bench.losses import BaseLoss, at, embed_columns
from bench.spec import SubModel
from methods import METHODS
from methods._jobs import Job, TrainedMethod


@METHODS.register("full")
class Full(TrainedMethod):  # no hyperparameters: TrainedMethod's empty Params
    def jobs(self, params: TrainedMethod.Params, num_layers: int, hidden_size: int, loss: BaseLoss,
             pooling: str) -> list[Job]:
        def objective(model, batch, generator):
            return loss(at(embed_columns(model, batch, pooling), num_layers, hidden_size), batch["labels"])

        return [Job("", objective, targets=(SubModel(num_layers, hidden_size),))]
