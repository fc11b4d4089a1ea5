"""`ese`: Espresso Sentence Embeddings (Li et al., ICLR 2025, arXiv 2402.14776; 2DMSE's successor by its authors).
Every step, every layer: learn-to-express (the base loss at each layer below the last, weighted by depth) and
learn-to-compress (the first k dims of each layer's pooled vector pulled towards a PCA projection of that layer's
full vector), from one forward pass per column.

The formula is AnglE's release (SeanLee97/AnglE v0.6.1, angle_emb/angle.py, `AngleESETrainer.compute_loss`,
`compute_student_loss`, `pca_compress`, and `AngleTrainer.compute_distillation_loss`), restated, not copied.
With h_l the pooled vector after l blocks (all H dims), h_l[:k] its first k, L the number of blocks and base the
harness's base loss (bench/losses.base_loss):

    loss = full_weight * base(h_L) + slim_weight * base(h_L[:k]) + pca_weight * D(h_L[:k], P_k(h_L))
         + prior_layers_weight / (L - 1) * sum_{l=1}^{L-1} w(l) * [slim_weight * base(h_l[:k])
                                                                + pca_weight * D(h_l[:k], P_k(h_l))]

- w(l) = 1 / (1 + ln(1 + l)): `layer_weighting="log"` (bench/losses.layer_weight), AnglE's `division`;
- D(x, t) = mse_weight * mean((x - t)^2) + T * KL(softmax(t / T) || softmax(x / T)) (batchmean over rows,
  T = kl_temperature; T = 0 drops the KL, as AnglE does): AnglE's compute_distillation_loss with its defaults;
- P_k(m), over the batch's rows m (every column's vectors stacked, as AnglE's batch holds every text): A =
  softmax(m^T m / sqrt(H)) row-wise, (H x H); U, S its top-k singular vectors and values; P_k(m) = m U diag(S),
  computed without gradient (AnglE's pca_compress runs under no_grad): a target, not a path;
- defaults are the release's: k = 128 (`ese_compression_size`), T = 1.0 (`ese_kl_temperature`), PCA on
  (`apply_ese_pca`, here pca_weight > 0), MSE weight 1.0 and every other weight 1 (AnglE has no field for them).

Deliberate differences, each because the harness or the benchmark needs it:
- Layers: AnglE's loop runs over hidden states 0..L-2 (`all_layer_outputs[i]`, i in range(n_layers - 1), with
  the embedding layer at index 0), so it trains the embedding output (no block) and never the L-1-block
  sub-model. Here l counts blocks used (the benchmark's convention): l = 1..L-1, the same count L-1 and the same
  weight of l blocks; the embedding layer, which no served model uses, is left out (as in methods/twodmse.py).
- The SVD is exact (torch.linalg.svd, float32 at least) and each singular vector's sign is fixed (its largest entry
  positive) where AnglE calls torch.svd_lowrank(A, q=k): a randomized approximation drawn from the global RNG
  whose signs are arbitrary, so its target could flip sign between steps or machines.
- The base loss is the harness's (MultipleNegativesRankingLoss for triplets, CoSENT for scored pairs), the same
  for every method in a comparison, not AnglE's AngleLoss (cosine + in-batch + angle objectives).
- No external teacher and no MLM term (both off by default in AnglE).
- k = None (the default) means 128 where the backbone is wider than 256, else half its width: the release's
  128 on bert-base and MiniLM, and a k that leaves room to compress on the tiny test backbones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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

RELEASE_COMPRESSION_SIZE = 128  # AnglE's ese_compression_size default


def compression_size(k: int | None, hidden_size: int) -> int:
    return (RELEASE_COMPRESSION_SIZE if hidden_size > 2 * RELEASE_COMPRESSION_SIZE else hidden_size // 2) \
        if k is None else k


def pca_target(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """P_k(m) = m U_k diag(S_k) of A = softmax(m^T m / sqrt(H)), in float32 or wider, without gradient; each singular
    vector's sign set so that its largest-magnitude entry is positive."""
    with torch.no_grad(), torch.autocast(vectors.device.type, enabled=False):
        m = vectors.to(torch.promote_types(vectors.dtype, torch.float32))  # bf16 under autocast: float32
        a = torch.softmax(m.T @ m / m.shape[-1] ** 0.5, dim=-1)
        u, s, _ = torch.linalg.svd(a)
        u = u[:, :k]
        signs = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))
        return m @ (u * signs * s[:k])


def distillation(slim: torch.Tensor, target: torch.Tensor, mse_weight: float, temperature: float) -> torch.Tensor:
    """D(x, t): MSE plus T x KL(softmax(t / T) || softmax(x / T)); the target is a constant."""
    total = mse_weight * F.mse_loss(slim.to(target.dtype), target) if mse_weight else target.new_zeros(())
    if temperature > 0:
        total = total + temperature * kl_embedding([slim], [target], temperature, detach_teacher=True)
    return total


class ESEObjective:
    def __init__(self, params, k: int, num_layers: int, hidden_size: int, loss: BaseLoss, pooling: str):
        self.p, self.k, self.num_layers, self.hidden = params, k, num_layers, hidden_size
        self.loss, self.pooling = loss, pooling

    def compress_loss(self, columns: list, labels, layer: int) -> torch.Tensor:
        """The base loss at (layer, k) and the alignment of those k dims with the PCA of the layer's full vector."""
        p = self.p
        total = p.slim_weight * self.loss(at(columns, layer, self.k), labels) if p.slim_weight else 0.0
        if p.pca_weight:
            slim = torch.cat(at(columns, layer, self.k))
            target = pca_target(torch.cat(at(columns, layer, self.hidden)), self.k)
            total = total + p.pca_weight * distillation(slim, target, p.mse_weight, p.kl_temperature)
        return total

    def loss_given(self, columns: list, labels) -> torch.Tensor:
        p, last = self.p, self.num_layers
        total = p.full_weight * self.loss(at(columns, last, self.hidden), labels) + \
            self.compress_loss(columns, labels, last)
        prior = sum(layer_weight(layer, p.layer_weighting) * self.compress_loss(columns, labels, layer)
                    for layer in range(1, last))
        return total + p.prior_layers_weight / (last - 1) * prior

    def __call__(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return self.loss_given(embed_columns(model, batch, self.pooling), batch["labels"])


@METHODS.register("ese")
class ESE(TrainedMethod):
    @dataclass(frozen=True)
    class Params:
        compression_size: int | None = None  # k; None: 128 (AnglE's default) on backbones wider than 256, else H/2
        layer_weighting: str = "log"  # depth weight of the layers below the last: 1 / (1 + ln(1 + l))
        full_weight: float = 1.0  # base loss at the last layer, full width
        slim_weight: float = 1.0  # base loss at every layer's first k dims
        pca_weight: float = 1.0  # alignment of every layer's first k dims with its PCA projection (0: no PCA)
        prior_layers_weight: float = 1.0  # the layers below the last, as a whole (their mean)
        mse_weight: float = 1.0  # the alignment's MSE term
        kl_temperature: float = 1.0  # the alignment's KL term (0 turns it off)

        def __post_init__(self):
            k = self.compression_size
            if k is not None and (not isinstance(k, int) or k <= 0):
                raise BenchError(f"ese compression_size must be a positive integer (or None for the default); got "
                                 f"{k!r}")
            check_choice("ese", "layer_weighting", self.layer_weighting, LAYER_WEIGHTINGS)
            for name in ("full_weight", "slim_weight", "pca_weight", "prior_layers_weight", "mse_weight",
                         "kl_temperature"):
                check_positive("ese", name, getattr(self, name))
            if not (self.full_weight or self.slim_weight):
                raise BenchError("ese full_weight and slim_weight are both 0, so nothing trains the embedding for "
                                 "the task; give one of them a positive weight")

    def objective(self, params: Params, num_layers: int, hidden_size: int, loss: BaseLoss,
                  pooling: str) -> ESEObjective:
        if num_layers < 2:
            raise BenchError("ese needs a backbone with at least 2 layers (it trains the layers below the last)")
        k = compression_size(params.compression_size, hidden_size)
        SubModel(num_layers, k).check_inside(num_layers, hidden_size)
        return ESEObjective(params, k, num_layers, hidden_size, loss, pooling)

    def jobs(self, params: Params, num_layers: int, hidden_size: int, loss: BaseLoss, pooling: str) -> list[Job]:
        objective = self.objective(params, num_layers, hidden_size, loss, pooling)
        targets = sorted({SubModel(layer, objective.k) for layer in range(1, num_layers + 1)}
                         | {SubModel(num_layers, hidden_size)}, key=lambda t: (t.layer, t.dim))
        return [Job("", objective, targets=tuple(targets))]
