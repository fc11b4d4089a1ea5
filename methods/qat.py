"""`qat`: quantization-aware Starbucks SRL, trained for layers x dims x bits together. starbucks-srl's fixed
targets and KL term (methods/starbucks_srl.py, reused by subclassing), where each target's base loss is taken on
the float sub-model embedding AND on straight-through int8 and binary copies of it, one weight per precision:

    loss at target t = fp32_weight * base(x_t) + int8_weight * base(int8(x_t)) + binary_weight * base(binary(x_t))

(then starbucks-srl's per-target weight and KL to the full model, on the float vectors only). With int8_weight =
binary_weight = 0 (and fp32_weight = 1) those terms are not computed at all: the loss is exactly starbucks-srl's.

The direction of sentence-transformers' open quantization-aware loss draft (QuantizationAwareLoss, PR #3655,
`quantize_embeddings_torch`): the base loss again on quantized copies of the same embeddings, with a weight per
precision, through a straight-through estimator. The copies here are built to be what evaluation scores
(bench/transforms.py, bench/tasks/): where they deliberately differ from the draft, it says so below.

- Both copies are taken of the L2-normalized sub-model vector (evaluation's default normalize=True normalizes after
  truncation and before quantizing; the int8 ranges depend on it, the signs do not).
- int8: the codes themselves, floor((x - lo) / step) - 128 clipped to -128..127 with step = (hi - lo) / 255, as
  `quantize_int8` computes them; evaluation compares codes (cosine for STS, inner product for retrieval), not
  dequantized values, and the cosine is not invariant to the per-dimension shift and scale a dequantization would
  undo. (The draft rounds and dequantizes back to the float scale.)
- int8 ranges, `lo` and `hi` per dimension: from the batch, over every column's vectors of the target together
  (anchors, positives, negatives: evaluation calibrates one set of ranges that both sides share). Evaluation takes
  them per dimension from its calibration set (a task's sentences, or the retrieval corpus: thousands of vectors);
  a batch of 3 x 16 vectors spans a narrower range, so training sees finer buckets than evaluation. Why the batch
  and not a running estimate: it is the draft's choice, it keeps the objective stateless (the loop's exact resume
  saves model, optimizer and RNG state only), and each micro-batch (each process under DDP) is self-contained.
  The ranges are constants of the quantizer, as calibrated ranges are at evaluation: no gradient flows into them
  (the draft lets it flow).
- binary: sign(x) in {-1, +1} (+1 where x > 0, the bit `binarize` sets), scaled by 1 / sqrt(dim) so the copy has
  unit norm like the vector it stands for. Evaluation's Hamming similarity 1 - hamming / dim equals
  (1 + cosine) / 2 of the +-1 sign vectors, so the base loss's cosine ranks pairs as evaluation does. (The draft
  uses 0/1 bits, whose cosine does not rank as Hamming does.)
- Straight-through estimator: forward the quantized copy, backward identity through the rounding (floor or sign).
  For int8 the backward pass sees the codes as (x - lo) / s with ONE scale s for every dimension (the mean of the
  per-dimension steps): the cosine the base loss takes ignores a common scale, so the int8 term's gradient stays on
  the float term's scale. Differentiating each dimension's own 1 / step instead blew up on MiniLM: a dimension that
  is nearly constant within a batch (a few ulps of range) has a step of ~1e-10, and every one of the default
  suite's 64 steps had an infinite gradient norm, so clipping zeroed the update and `qat` never trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench import BenchError
from bench.losses import BaseLoss, check_positive
from bench.spec import SubModel
from methods import METHODS
from methods.starbucks_srl import StarbucksSRL


def straight_through(vectors: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Forward `quantized`, backward the identity onto `vectors`."""
    return vectors + (quantized - vectors).detach()


def int8_straight_through(columns: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each column's int8 codes (as floats) under per-dimension ranges from all columns together; the ranges are
    constants, the rounding passes the gradient straight through at one scale for every dimension."""
    columns = [c.to(torch.promote_types(c.dtype, torch.float32)) for c in columns]  # bf16 under autocast: float32
    pooled = torch.cat(columns).detach()
    lo, hi = pooled.min(dim=0).values, pooled.max(dim=0).values
    step = (hi - lo) / 255
    step = torch.where(step == 0, torch.ones_like(step), step)  # a constant dimension: every value in bucket 0
    scale = step.mean()  # the backward pass's one scale for every dimension (see the module docstring)
    out = []
    for c in columns:
        codes = torch.clamp(torch.floor((c - lo) / step), 0, 255)  # batch ranges hold every value: a guard
        out.append(straight_through((c - lo) / scale, codes) - 128)
    return out


def binary_straight_through(columns: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each column's sign vector, +-1 / sqrt(dim) (+1 where > 0), the gradient passed straight through."""
    out = []
    for c in columns:
        signs = torch.where(c > 0, 1.0, -1.0).to(c.dtype) / c.shape[-1] ** 0.5
        out.append(straight_through(c, signs))
    return out


QUANTIZERS = {"int8": int8_straight_through, "binary": binary_straight_through}


def precision_aware(loss: BaseLoss, weights: dict[str, float]) -> BaseLoss:
    """The base loss on the float vectors and on each quantized copy, weighted; zero-weight terms are skipped."""
    def combined(columns: list[torch.Tensor], labels):
        total = weights["fp32"] * loss(columns, labels) if weights["fp32"] else 0.0
        quantized = [p for p in QUANTIZERS if weights[p]]
        normalized = [F.normalize(c, dim=-1) for c in columns] if quantized else []
        for precision in quantized:
            total = total + weights[precision] * loss(QUANTIZERS[precision](normalized), labels)
        return total

    return combined


@METHODS.register("qat")
class QAT(StarbucksSRL):
    @dataclass(frozen=True)
    class Params(StarbucksSRL.Params):
        fp32_weight: float = 1.0  # the base loss on the float sub-model vector (starbucks-srl's term)
        int8_weight: float = 1.0  # ... on its int8 copy (the draft's default weights are 1 each)
        binary_weight: float = 1.0  # ... on its binary copy

        def __post_init__(self):
            super().__post_init__()
            for name in ("fp32_weight", "int8_weight", "binary_weight"):
                check_positive("qat", name, getattr(self, name))
            if not (self.fp32_weight or self.int8_weight or self.binary_weight):
                raise BenchError("qat fp32_weight, int8_weight and binary_weight are all 0, so no target has a base "
                                 "loss; give at least one of them a positive weight")

    def objective(self, params: Params, targets: tuple[SubModel, ...], num_layers: int, hidden_size: int,
                  loss: BaseLoss, pooling: str):
        weights = {"fp32": params.fp32_weight, "int8": params.int8_weight, "binary": params.binary_weight}
        return super().objective(params, targets, num_layers, hidden_size, precision_aware(loss, weights), pooling)
