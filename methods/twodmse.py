"""`2dmse`: 2D Matryoshka sentence embeddings (Li et al. 2024). Each step draws layer(s) below the last and, for
every layer it trains, dim(s) from a list; the base loss at those sub-models plus a KL term aligning each drawn
layer's full-width pooled vector with the last layer's (softmax over coordinates at `kl_temperature`, scaled by
the temperature as sentence-transformers does). Layers and dims are drawn from the loop's seeded generator, so a
run is reproducible and resumable.

Settings (every one a field, recorded with each result row):
- the default is the 2DMSE paper's recipe: one layer and one dim per step, and every trained layer also at full
  width (the loss at the last layer full + sampled dim and at the drawn layer full + sampled dim), uniform layer
  weights, KL teacher detached;
- SENTENCE_TRANSFORMERS reproduces sentence-transformers 6.x Matryoshka2dLoss defaults (full_width=False: each
  layer only at its drawn dim; uniform weights; detached teacher; T = 0.3); tests check it equals the library's
  loss for the same drawn layer and dims;
- STARBUCKS_BASELINE is that loss as the Starbucks paper ran it (sentence-transformers 3.x): linear layer weights
  1/(1+l) and a KL teacher left in the graph.
One difference from the library remains by design: it can draw hidden state 0 (the embedding layer, no block),
which no served model uses; we draw from layers 1..L-1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from bench import BenchError
from bench.losses import (
    LAYER_WEIGHTINGS,
    BaseLoss,
    at,
    check_choice,
    check_positive,
    embed_columns,
    kl_embedding,
    layer_weight,
)
from bench.spec import SubModel
from methods import METHODS
from methods._jobs import Job, TrainedMethod
from methods.mrl import check_dims, resolve_dims


@dataclass(frozen=True)
class Draw:
    """One step's sample: the prior layers it trains and the dims each trained layer (last included) uses."""

    layers: tuple[int, ...]
    dims: dict  # layer -> tuple of dims


def _pick(population: list, n: int, generator: torch.Generator) -> list:
    """n distinct items (all when n is -1 or covers them), in their original order."""
    if n < 0 or n >= len(population):
        return list(population)
    chosen = torch.randperm(len(population), generator=generator)[:n].sort().values.tolist()
    return [population[i] for i in chosen]


class TwoDMSEObjective:
    def __init__(self, params, dims: tuple[int, ...], num_layers: int, hidden_size: int, loss: BaseLoss,
                 pooling: str):
        self.p, self.dims, self.num_layers, self.hidden = params, tuple(sorted(dims, reverse=True)), num_layers, \
            hidden_size
        self.loss, self.pooling = loss, pooling

    def draw(self, generator: torch.Generator) -> Draw:
        layers = _pick(list(range(1, self.num_layers)), self.p.n_layers_per_step, generator)
        dims = {layer: tuple(_pick(list(self.dims), self.p.n_dims_per_step, generator))
                for layer in [self.num_layers, *layers]}
        return Draw(tuple(layers), dims)

    def layer_loss(self, columns: list, labels, layer: int, dims: tuple[int, ...]) -> torch.Tensor:
        if self.p.full_width and self.hidden not in dims:
            dims = (self.hidden, *dims)
        return sum(self.loss(at(columns, layer, d), labels) for d in dims)

    def loss_given(self, columns: list, labels, draw: Draw) -> torch.Tensor:
        p = self.p
        total = p.last_layer_weight * self.layer_loss(columns, labels, self.num_layers, draw.dims[self.num_layers])
        teacher = at(columns, self.num_layers, self.hidden)
        for layer in draw.layers:
            weight = layer_weight(layer, p.layer_weighting) / len(draw.layers) * p.prior_layers_weight
            total = total + weight * self.layer_loss(columns, labels, layer, draw.dims[layer])
            if p.kl_temperature > 0:
                kl = kl_embedding(at(columns, layer, self.hidden), teacher, p.kl_temperature, p.detach_teacher)
                total = total + kl * p.kl_temperature * p.kl_weight
        return total

    def __call__(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        draw = self.draw(generator)
        return self.loss_given(embed_columns(model, batch, self.pooling), batch["labels"], draw)


@METHODS.register("2dmse")
class TwoDMSE(TrainedMethod):
    @dataclass(frozen=True)
    class Params:
        dims: tuple[int, ...] | None = None  # None: the dims of the Starbucks target rule, full width included
        n_layers_per_step: int = 1  # -1: every layer below the last
        n_dims_per_step: int = 1  # per trained layer; -1: every dim
        full_width: bool = True  # every trained layer also at full width (the paper), or only its drawn dims
        layer_weighting: str = "uniform"
        last_layer_weight: float = 1.0
        prior_layers_weight: float = 1.0
        kl_weight: float = 1.0
        kl_temperature: float = 0.3  # 0 turns the KL term off
        detach_teacher: bool = True

        def __post_init__(self):
            check_dims("2dmse", self.dims)
            for name in ("n_layers_per_step", "n_dims_per_step"):
                if getattr(self, name) == 0 or getattr(self, name) < -1:
                    raise BenchError(f"2dmse {name} must be -1 (all) or positive; got {getattr(self, name)}")
            check_choice("2dmse", "layer_weighting", self.layer_weighting, LAYER_WEIGHTINGS)
            for name in ("last_layer_weight", "prior_layers_weight", "kl_weight", "kl_temperature"):
                check_positive("2dmse", name, getattr(self, name))

    def objective(self, params: Params, num_layers: int, hidden_size: int, loss: BaseLoss,
                  pooling: str) -> TwoDMSEObjective:
        if num_layers < 2:
            raise BenchError("2dmse needs a backbone with at least 2 layers (it trains layers below the last)")
        return TwoDMSEObjective(params, resolve_dims("2dmse", params.dims, num_layers, hidden_size), num_layers,
                                hidden_size, loss, pooling)

    def jobs(self, params: Params, num_layers: int, hidden_size: int, loss: BaseLoss, pooling: str) -> list[Job]:
        objective = self.objective(params, num_layers, hidden_size, loss, pooling)
        dims = set(objective.dims) | ({hidden_size} if params.full_width else set())
        targets = tuple(SubModel(layer, d) for layer in range(1, num_layers + 1) for d in sorted(dims))
        return [Job("", objective, targets=targets)]


SENTENCE_TRANSFORMERS = replace(TwoDMSE.Params(), full_width=False)
STARBUCKS_BASELINE = replace(SENTENCE_TRANSFORMERS, layer_weighting="linear", detach_teacher=False)
