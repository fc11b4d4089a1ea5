"""Building blocks of the training objectives: per-layer pooled embeddings from one forward pass per column,
the base losses (sentence-transformers' own), KL alignment terms and layer weightings.

A batch is {"columns": [tokenized column, ...], "labels": tensor or None}: triplets have three columns (anchor,
positive, negative), scored pairs two columns and a gold score per pair.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim

from bench import BenchError
from bench.pooling import final_norm, pooled_all_layers

BaseLoss = Callable[[list[torch.Tensor], "torch.Tensor | None"], torch.Tensor]
KL_KINDS = ("embedding", "scores", "none")
LAYER_WEIGHTINGS = ("uniform", "linear", "log")


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model an objective is given, unwrapped: under torchrun the loop (bench/train.py) wraps it in
    DistributedDataParallel, and what the model itself holds (its final norm, a loss log) lives on the inner one."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def embed_columns(model: torch.nn.Module, batch: dict, pooling: str) -> list[torch.Tensor]:
    """Each column's pooled vectors of every layer, (L, batch, H): one forward pass per column, all layers from it.
    Columns are not padded together: padding short anchors to the candidates' length costs compute for nothing."""
    norm = final_norm(inner_model(model))
    return [pooled_all_layers(model, column, pooling, norm) for column in batch["columns"]]


def at(columns: list[torch.Tensor], layer: int, dim: int) -> list[torch.Tensor]:
    """Every column's (batch, dim) vectors of sub-model (layer, dim): the first `layer` blocks, first `dim` dims.
    Not re-normalized here: the base losses compare by cosine, which normalizes after truncation."""
    return [c[layer - 1, :, :dim] for c in columns]


def base_loss(kind: str, scale: float = 20.0) -> BaseLoss:
    """The base loss of a kind of training data, from sentence-transformers, fed embeddings directly:
    triplets -> MultipleNegativesRankingLoss (in-batch + hard negatives, cosine, scale 20), as in the Starbucks STS
    recipe; scored pairs -> CoSENT (the paper's low-resource STS-B setting)."""
    if kind == "triplets":
        loss = MultipleNegativesRankingLoss(model=None, scale=scale)
    elif kind == "scored-pairs":
        loss = CoSENTLoss(model=None, scale=scale)
    else:
        raise BenchError(f"no base loss for training data of kind {kind!r}; use triplets or scored pairs")
    return loss.compute_loss_from_embeddings


def kl_embedding(student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float,
                 detach_teacher: bool) -> torch.Tensor:
    """KL(teacher || student) between softmaxes over embedding coordinates, every row of every column
    (batchmean): the 2DMSE alignment and the Starbucks STS script's KL."""
    s = torch.cat(student).float() / temperature
    t = torch.cat(teacher).float() / temperature
    t = t.detach() if detach_teacher else t
    return F.kl_div(F.log_softmax(s, dim=-1), F.softmax(t, dim=-1), reduction="batchmean")


def kl_scores(student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float,
              detach_teacher: bool) -> torch.Tensor:
    """KL(teacher || student) between each anchor's softmax over the in-batch candidates (cosine / temperature):
    the Starbucks retrieval code's KL, which aligns score distributions rather than coordinates."""
    def log_probs(cols: list[torch.Tensor]) -> torch.Tensor:
        return F.log_softmax(cos_sim(cols[0], torch.cat(cols[1:])).float() / temperature, dim=-1)

    t = log_probs(teacher)
    t = t.detach() if detach_teacher else t
    return F.kl_div(log_probs(student), t, reduction="batchmean", log_target=True)


def kl_term(kind: str, student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float,
            detach_teacher: bool) -> torch.Tensor:
    if kind == "embedding":
        return kl_embedding(student, teacher, temperature, detach_teacher)
    if kind == "scores":
        return kl_scores(student, teacher, temperature, detach_teacher)
    return student[0].new_zeros(())


def layer_weight(layer: int, weighting: str) -> float:
    """sentence-transformers' AdaptiveLayerLoss weightings, `layer` = blocks used (its hidden-state index):
    uniform 1 (2DMSE, Starbucks), linear 1/(1+l) (sentence-transformers before v5, so the Starbucks paper's 2DMSE
    baseline), log 1/(1+ln(1+l)) (ESE)."""
    if weighting == "linear":
        return 1.0 / (1 + layer)
    if weighting == "log":
        return 1.0 / (1.0 + math.log(1 + layer))
    return 1.0


def check_choice(method: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BenchError(f"{method} {name} must be one of {', '.join(allowed)}; got {value!r}")


def check_positive(method: str, name: str, value: float, allow_zero: bool = True) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise BenchError(f"{method} {name} must be {bound}; got {value}")
