"""`bebr`: recurrent residual binarization of frozen float embeddings (Gan et al. 2023, "Binary Embedding-based
Retrieval at Tencent", arXiv 2302.08714): each layer's vector becomes `bits` sign-bit codes per dimension, scored at
the binary precisions by the paper's symmetric distance (SDC), at bytes_per_vector = dim x bits / 8.

Recurrent binarization, with u the layer's pooled vector at unit length, phi_t a binarization block (a residual
MLP), rho the sign (+-1) and w_t a learned weight per level:
    b_0 = rho(phi_0(u)),                 u^_0 = w_0 b_0
    b_t = rho(phi_t(u - u^_{t-1})),      u^_t = u^_{t-1} + w_t b_t        t = 1 .. bits - 1
each level binarizing the residual the codes so far leave. The paper's module has binarization, reconstruction and
residual blocks; here the reconstruction is linear in the codes (u^ = sum_t w_t b_t), which is what lets the
symmetric distance be computed from the codes alone: for a query q and a document d (both binary),
    <u^_q, u^_d> = sum_{t,s} w_t w_s <b_qt, b_ds> = sum_{t,s} w_t w_s (dim - 2 hamming(b_qt, b_ds)),
and the d-dim cell keeps the first d bits of every level (bench/transforms.BinaryCodes). With cosine (normalize,
the default) the score is that inner product over the two reconstructions' norms, which come from the same
popcounts. One level (bits = 1) is ranked exactly by Hamming; it is scored by Hamming.

Training is embedding-to-embedding (task-agnostic: float vectors in, no backbone, no labels), NCE-form: the
reconstruction of fit vector i is pulled to its own float vector, away from the batch's others,
    L = mean over m in dims of  -1/B sum_i log softmax_j( cos(u^_i[:m], u_j[:m]) / temperature )[j = i],
so each cell's codes approximate that cell's float vector. rho's gradient is the straight-through estimator
(identity). Not done here: the paper's hard-negative mining (the negatives are the batch's other vectors).
Initialization: phi_t = identity (its last linear layer at zero) and w_t = mean |r_t| over the fit set (greedy
residual binarization, r_0 = u, r_t = u - u^_{t-1}): one untrained level is plain sign binarization.

The head (bench/heads.py, kind "residual-binary") computes the codes in numpy at evaluation; the float vectors pass
through unchanged. binary+rescore shortlists by SDC and rescores the float query against the codes'
reconstruction; binary+rescore-int8/-fp32 rescore against a stored copy of the backbone's vectors, as for any
method (bench/precisions.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench import BenchError
from bench.heads import ResidualBinaryHead
from bench.losses import check_positive
from bench.spec import Budget, default_dims
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

MAX_BITS = 8


def sign_ste(z: torch.Tensor) -> torch.Tensor:
    """+1 where z > 0, else -1 (as bench.transforms.binarize); the gradient passes straight through."""
    return z + (torch.where(z > 0, 1.0, -1.0) - z).detach()


def greedy_weights(unit: torch.Tensor, levels: int) -> torch.Tensor:
    """Greedy residual binarization's level weights: w_t = mean |r_t| (the least-squares weight of sign(r_t))."""
    residual, reconstruction, weights = unit, torch.zeros_like(unit), []
    for _ in range(levels):
        weights.append(residual.abs().mean())
        reconstruction = reconstruction + weights[-1] * torch.where(residual > 0, 1.0, -1.0)
        residual = unit - reconstruction
    return torch.stack(weights)


class RecurrentBinarizer(torch.nn.Module):
    """One layer's levels: a residual MLP block per level and a weight per level; forward gives u^."""

    def __init__(self, width: int, hidden: int, weights: torch.Tensor):
        super().__init__()
        self.blocks = torch.nn.ModuleList(ResidualMLP(width, hidden) for _ in range(len(weights)))
        self.weights = torch.nn.Parameter(weights.clone())

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        residual, reconstruction = unit, torch.zeros_like(unit)
        for block, weight in zip(self.blocks, self.weights):
            reconstruction = reconstruction + weight * sign_ste(block(residual))
            residual = unit - reconstruction
        return reconstruction


def nce_loss(reconstruction: torch.Tensor, original: torch.Tensor, dims: tuple[int, ...],
             temperature: float) -> torch.Tensor:
    """The mean over prefixes m of the in-batch NCE between reconstructions and their own float vectors."""
    labels = torch.arange(len(original))
    losses = [F.cross_entropy(F.normalize(reconstruction[:, :m], dim=-1) @ F.normalize(original[:, :m], dim=-1).T
                              / temperature, labels) for m in dims]
    return torch.stack(losses).mean()


@METHODS.register("bebr")
class BEBR(HeadMethod):
    @dataclass(frozen=True)
    class Params:
        bits: int = 2  # sign-bit codes per dimension (recurrent levels), e.g. 1, 2, 4
        temperature: float = 0.05  # of the NCE
        dims: tuple[int, ...] | None = None  # the prefixes m of the NCE; None: the default grid's dims of the width
        hidden: int | None = None  # the binarization blocks' hidden width; None: the backbone's width
        fit_sentences: int = FIT_SENTENCES

        def __post_init__(self):
            if not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
                raise BenchError(f"bebr bits must be an integer from 1 to {MAX_BITS}; got {self.bits!r}")
            check_positive("bebr", "temperature", self.temperature, allow_zero=False)
            check_dims("bebr", self.dims)
            check_optional_count("bebr", "hidden", self.hidden)
            check_count("bebr", "fit_sentences", self.fit_sentences)

    def loss_dims(self, params: Params) -> tuple[int, ...] | None:
        return params.dims

    def fit(self, params: Params, vectors: np.ndarray, budget: Budget, seed: int) -> tuple[ResidualBinaryHead, list]:
        layers, n, width = vectors.shape
        dims = resolve_dims("bebr", params.dims, width, default_dims(width))
        blocks, weights, log = {}, {}, []
        for layer in range(1, layers + 1):  # every layer: the precision axis spans the whole grid
            unit = unit_rows(vectors[layer - 1])
            torch.manual_seed(seed)
            model = RecurrentBinarizer(width, params.hidden or width, greedy_weights(unit, params.bits))

            def batch_loss(idx, unit=unit, model=model):
                return nce_loss(model(unit[idx]), unit[idx], dims, params.temperature)

            log += train_head(model, batch_loss, n, budget, seed, {"layer": layer})
            blocks[layer] = [block.block() for block in model.blocks]
            weights[layer] = model.weights.detach().numpy().copy()
        return ResidualBinaryHead(blocks, weights), log
