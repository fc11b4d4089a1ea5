"""`mrl`: Matryoshka representation learning (Kusupati et al. 2022) at the last layer: the base loss at every dim of
a list, weighted, every step, from one forward pass. Equal to sentence-transformers' MatryoshkaLoss with all dims
per step (tests/test_methods.py checks it against the library on the same batch)."""

from __future__ import annotations

from dataclasses import dataclass

from bench import BenchError
from bench.losses import BaseLoss, at, embed_columns
from bench.spec import SubModel
from methods import METHODS
from methods._jobs import Job, TrainedMethod
from methods.starbucks_srl import target_dims


def check_dims(method: str, dims: tuple | None) -> None:
    if dims is not None and (not dims or any(not isinstance(d, int) or d <= 0 for d in dims)
                             or len(set(dims)) != len(dims)):
        raise BenchError(f"{method} dims must be distinct positive integers, e.g. (64, 128, 384); got {dims!r}")


def resolve_dims(method: str, dims: tuple | None, num_layers: int, hidden_size: int) -> tuple[int, ...]:
    dims = target_dims(num_layers, hidden_size) if dims is None else tuple(dims)
    for d in dims:
        SubModel(num_layers, d).check_inside(num_layers, hidden_size)
    return dims


@METHODS.register("mrl")
class MRL(TrainedMethod):
    @dataclass(frozen=True)
    class Params:
        dims: tuple[int, ...] | None = None  # None: the dims of the Starbucks target rule, full width included
        weights: tuple[float, ...] | None = None  # per dim (None: 1 each)

        def __post_init__(self):
            check_dims("mrl", self.dims)
            if self.weights is not None and any(w < 0 for w in self.weights):
                raise BenchError(f"mrl weights must be >= 0; got {self.weights!r}")

    def jobs(self, params: Params, num_layers: int, hidden_size: int, loss: BaseLoss, pooling: str) -> list[Job]:
        dims = resolve_dims("mrl", params.dims, num_layers, hidden_size)
        weights = params.weights or (1.0,) * len(dims)
        if len(weights) != len(dims):
            raise BenchError(f"mrl has {len(weights)} weights for {len(dims)} dims; give one weight per dim")

        def objective(model, batch, generator):
            columns = embed_columns(model, batch, pooling)
            return sum(w * loss(at(columns, num_layers, d), batch["labels"]) for d, w in zip(dims, weights))

        return [Job("", objective, targets=tuple(SubModel(num_layers, d) for d in sorted(dims)))]
