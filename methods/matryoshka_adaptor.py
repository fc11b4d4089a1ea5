"""`matryoshka-adaptor`: Matryoshka-Adaptor (Yoon et al. 2024, arXiv 2407.20243), unsupervised: a residual MLP f on
the frozen backbone's vectors, trained so that every prefix of the adapted vector keeps the similarities of the
full original one. One adaptor per layer ("all", so every cell of the grid is adapted) or at the last layer only.

The paper's unsupervised objective, with e_i an original embedding, f(e) = e + MLP(e) (the skip connection), e[:m]
its first m dims, Sim the cosine and NN_k(i) the k embeddings most similar to e_i:
    L_pair = sum_i sum_j sum_m |Sim(e_i, e_j) - Sim(f(e_i)[:m], f(e_j)[:m])|       (global similarity structure)
    L_topk = sum_i sum_{j in NN_k(i)} sum_m |Sim(e_i, e_j) - Sim(f(e_i)[:m], f(e_j)[:m])|   (local neighbourhoods)
    L_rec  = sum_i |e_i - f(e_i)|_1                                                   (stay near the original)
    minimize L_topk + alpha * L_pair + beta * L_rec
over m = 1..H (every prefix; `dims` picks a subset). Here, trained on the fit set's vectors of each layer
(methods/_heads.py) under the shared budget:
- e_i is the layer's pooled vector at unit length (the paper adapts API embeddings, which are unit vectors; our
  layers' pooled vectors have different norms, and L_rec would weigh them differently);
- each sum is a mean (over its pairs, prefixes and coordinates), so alpha and beta mean the same at any batch size,
  k and width; L_pair runs over the pairs i != j of the batch, L_topk over each batch vector's k nearest neighbours
  in the whole fit set by the original cosine (itself excluded), adapted by the same f;
- MLP(e) = relu(e W1 + b1) W2 + b2 with W2, b2 starting at zero: the untrained adaptor is the identity.
The head (bench/heads.py, kind "residual-mlp") computes y = f(x / |x|) in numpy at evaluation, before truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench import BenchError
from bench.heads import ResidualMLPHead
from bench.losses import check_choice, check_positive
from bench.spec import Budget
from methods import METHODS
from methods._heads import (
    FIT_SENTENCES,
    HeadMethod,
    ResidualMLP,
    check_count,
    check_dims,
    check_optional_count,
    resolve_dims,
    train_head,
    unit_rows,
)

LAYER_CHOICES = ("all", "last")


def prefix_cosines(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """cos(a[..., :m], b[..., :m]) for every m in dims, stacked last: (..., len(dims)). One cumulative sum gives
    the dot products and norms of all prefixes at once."""
    idx = torch.tensor([d - 1 for d in dims])
    dots = torch.cumsum(a * b, dim=-1)[..., idx]
    norm_a = torch.sqrt(torch.cumsum(a * a, dim=-1)[..., idx]).clamp_min(1e-12)
    norm_b = torch.sqrt(torch.cumsum(b * b, dim=-1)[..., idx]).clamp_min(1e-12)
    return dots / (norm_a * norm_b)


def adaptor_losses(original: torch.Tensor, adapted: torch.Tensor, original_nn: torch.Tensor,
                   adapted_nn: torch.Tensor, dims: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The three terms on a batch: `original` (B, H) unit rows and their adapted rows; `original_nn` (B, k, H) each
    row's k fit-set neighbours (unit rows) and `adapted_nn` their adapted rows."""
    batch = len(original)
    target = original @ original.T  # full-width cosine of unit rows
    pair_gaps = (prefix_cosines(adapted[:, None], adapted[None], dims) - target[..., None]).abs()
    off_diagonal = ~torch.eye(batch, dtype=torch.bool)
    target_nn = torch.einsum("bh,bkh->bk", original, original_nn)
    topk_gaps = (prefix_cosines(adapted[:, None], adapted_nn, dims) - target_nn[..., None]).abs()
    return {"pair": pair_gaps[off_diagonal].mean(), "topk": topk_gaps.mean(),
            "rec": (original - adapted).abs().mean()}


def nearest_neighbours(unit: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """(n, k) indices of each unit row's k most cosine-similar other rows, most similar first (ties by index)."""
    out = []
    for start in range(0, len(unit), block):
        sims = unit[start:start + block] @ unit.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf  # not its own neighbour
        out.append(np.argsort(-sims, axis=1, kind="stable")[:, :k])
    return np.concatenate(out)


@METHODS.register("matryoshka-adaptor")
class MatryoshkaAdaptor(HeadMethod):
    @dataclass(frozen=True)
    class Params:
        k: int = 10  # neighbours per vector in L_topk
        alpha: float = 1.0  # weight of L_pair
        beta: float = 1.0  # weight of L_rec
        dims: tuple[int, ...] | None = None  # the prefixes m of the losses; None: every prefix 1..H, as the paper
        layers: str = "all"  # "all": one adaptor per layer; "last": the last layer only, the others as they are
        hidden: int | None = None  # the MLP's hidden width; None: the backbone's width
        fit_sentences: int = FIT_SENTENCES

        def __post_init__(self):
            check_count("matryoshka-adaptor", "k", self.k)
            check_positive("matryoshka-adaptor", "alpha", self.alpha)
            check_positive("matryoshka-adaptor", "beta", self.beta)
            check_dims("matryoshka-adaptor", self.dims)
            check_choice("matryoshka-adaptor", "layers", self.layers, LAYER_CHOICES)
            check_optional_count("matryoshka-adaptor", "hidden", self.hidden)
            check_count("matryoshka-adaptor", "fit_sentences", self.fit_sentences)

    def objective(self, terms: dict[str, torch.Tensor], params: Params) -> torch.Tensor:
        return terms["topk"] + params.alpha * terms["pair"] + params.beta * terms["rec"]

    def loss_dims(self, params: Params) -> tuple[int, ...] | None:
        return params.dims

    def fit(self, params: Params, vectors: np.ndarray, budget: Budget, seed: int) -> tuple[ResidualMLPHead, list]:
        layers, n, width = vectors.shape
        if params.k >= n:
            raise BenchError(f"matryoshka-adaptor k = {params.k} needs more than {params.k} fit sentences, got {n}; "
                             "lower k or raise fit_sentences")
        dims = resolve_dims("matryoshka-adaptor", params.dims, width, tuple(range(1, width + 1)))
        blocks, log = {}, []
        for layer in range(1, layers + 1) if params.layers == "all" else (layers,):
            unit = unit_rows(vectors[layer - 1])
            neighbours = torch.from_numpy(nearest_neighbours(unit.numpy(), params.k))
            torch.manual_seed(seed)
            adaptor = ResidualMLP(width, params.hidden or width)

            def batch_loss(idx, unit=unit, neighbours=neighbours, adaptor=adaptor):
                near = unit[neighbours[idx]]
                return self.objective(adaptor_losses(unit[idx], adaptor(unit[idx]), near, adaptor(near), dims),
                                      params)

            log += train_head(adaptor, batch_loss, n, budget, seed, {"layer": layer})
            blocks[layer] = adaptor.block()
        return ResidualMLPHead(blocks), log
