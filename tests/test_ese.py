"""`ese` (methods/ese.py): its loss on a tiny case equals an independent restatement of AnglE's formula (numpy,
float64, the base loss written out by hand too); its PCA target is the one AnglE's torch.svd_lowrank call
approximates, and a constant."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from bench import BenchError
from bench.hub import Backbone
from bench.losses import base_loss
from bench.spec import Budget, RunSpec, SubModel, freeze_params
from methods import METHODS
from methods._jobs import method_jobs
from methods.ese import pca_target

LOSS = base_loss("triplets")  # MultipleNegativesRankingLoss, scale 20
LAYERS, ROWS, HIDDEN, K = 3, 4, 8, 4


def tiny_columns() -> list[torch.Tensor]:
    """Anchors, positives, negatives: (layers, rows, hidden) pooled vectors each, seeded."""
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(LAYERS, ROWS, HIDDEN, generator=generator) for _ in range(3)]


# ---- the restatement: AnglE's AngleESETrainer (angle_emb/angle.py) in numpy ---------------------------------------

def mnrl(columns: list[np.ndarray], scale: float = 20.0) -> float:
    """In-batch negatives: each anchor's softmax over every positive and negative by scaled cosine, its own
    positive the label."""
    unit = [c / np.linalg.norm(c, axis=1, keepdims=True) for c in columns]
    scores = scale * unit[0] @ np.concatenate(unit[1:]).T
    log_z = np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1)) + scores.max(1)
    return float(np.mean(log_z - np.diag(scores)))


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def pca_compress(m: np.ndarray, k: int) -> np.ndarray:
    """AnglE's pca_compress: A = softmax(m^T m / sqrt(H)), m @ U_k diag(S_k); the SVD exact, each singular vector
    signed so its largest entry is positive (methods/ese.py's documented convention)."""
    a = np.exp(log_softmax(m.T @ m / math.sqrt(m.shape[-1])))
    u, s, _ = np.linalg.svd(a)
    assert np.min(-np.diff(s[:k + 1])) > 1e-3, "near-equal singular values: the case would not pin the vectors"
    u = u[:, :k] * np.sign(u[np.abs(u[:, :k]).argmax(axis=0), range(k)])
    return m @ (u * s[:k])


def distillation(x: np.ndarray, t: np.ndarray, mse_weight: float = 1.0, temperature: float = 1.0) -> float:
    """AnglE's compute_distillation_loss: MSE + KL(softmax(t/T) || softmax(x/T)) (batchmean) x T."""
    log_p, log_q = log_softmax(t / temperature), log_softmax(x / temperature)
    kl = float(np.sum(np.exp(log_p) * (log_p - log_q)) / len(x))
    return mse_weight * float(np.mean((x - t) ** 2)) + kl * temperature


def angle_ese_loss(columns: list[np.ndarray], k: int, temperature: float, mse_weight: float) -> float:
    """compute_loss: the last layer at full width and at k, with its alignment; compute_student_loss: every layer
    below, each divided by 1 + ln(1 + i) (i = blocks used here, see methods/ese.py), then their sum by L - 1."""
    layers = columns[0].shape[0]

    def layer(i: int) -> list[np.ndarray]:
        return [c[i - 1] for c in columns]

    def slim_and_align(i: int) -> float:
        h = layer(i)
        target = pca_compress(np.concatenate(h), k)
        return mnrl([c[:, :k] for c in h]) + distillation(np.concatenate(h)[:, :k], target, mse_weight, temperature)

    loss = mnrl(layer(layers)) + slim_and_align(layers)
    student = sum(slim_and_align(i) / (1.0 + math.log(1 + i)) for i in range(1, layers))
    return loss + student / (layers - 1)


@pytest.mark.parametrize("k,temperature,mse_weight", [(K, 1.0, 1.0), (K, 2.0, 0.5), (2, 0.5, 1.0)],
                         ids=["angle-defaults", "T2-mse0.5", "k2-T0.5"])
def test_ese_loss_equals_a_restatement_of_angle_ese_formula(k, temperature, mse_weight):
    """Oracle: the numpy restatement above, at AnglE's defaults (T = 1, MSE weight 1, log depth weights) and at
    other values of its knobs. Measured: relative difference 1.4e-7 (float32 against float64)."""
    ese = METHODS.get("ese")()
    params = ese.Params(compression_size=k, kl_temperature=temperature, mse_weight=mse_weight)
    objective = ese.objective(params, LAYERS, HIDDEN, LOSS, "mean")
    columns = tiny_columns()
    ours = objective.loss_given(columns, None).item()
    expected = angle_ese_loss([c.double().numpy() for c in columns], k, temperature, mse_weight)
    assert ours == pytest.approx(expected, rel=1e-5)


def test_the_pca_target_is_what_angle_svd_lowrank_call_approximates_and_a_constant():
    """Oracle: AnglE's own call, torch.svd_lowrank(A, q=k) (run to convergence), gives the same target up to each
    column's sign, which ours fixes; and the target carries no gradient (AnglE computes it under no_grad)."""
    m = torch.cat([c[LAYERS - 1] for c in tiny_columns()]).double().requires_grad_()
    ours = pca_target(m, K)
    assert not ours.requires_grad
    a = torch.softmax(m.detach().T @ m.detach() / HIDDEN ** 0.5, dim=-1)
    torch.manual_seed(0)
    u, s, _ = torch.svd_lowrank(a, q=K, niter=200)  # AnglE keeps the default niter=2: a coarser approximation
    theirs = m.detach() @ (u @ torch.diag(s))
    signs = torch.sign((ours * theirs).sum(dim=0))
    torch.testing.assert_close(ours, theirs * signs, rtol=0, atol=1e-10)  # measured: 1e-13
    column = ours[:, 0]
    assert column[column.abs().argmax()] != 0


def test_every_layer_trains_at_k_and_the_last_also_at_full_width():
    (job,) = METHODS.get("ese")().jobs(METHODS.get("ese")().Params(), 4, 64, LOSS, "mean")
    assert job.targets == (SubModel(1, 32), SubModel(2, 32), SubModel(3, 32), SubModel(4, 32), SubModel(4, 64))
    (job,) = METHODS.get("ese")().jobs(METHODS.get("ese")().Params(), 6, 384, LOSS, "mean")
    assert {t.dim for t in job.targets} == {128, 384}  # AnglE's release default k on MiniLM


@pytest.mark.parametrize("changes,message", [
    ({"compression_size": 0}, "ese compression_size must be a positive integer (or None for the default); got 0"),
    ({"layer_weighting": "cubic"}, "ese layer_weighting must be one of uniform, linear, log; got 'cubic'"),
    ({"kl_temperature": -1.0}, "ese kl_temperature must be >= 0; got -1.0"),
    ({"full_weight": 0.0, "slim_weight": 0.0}, "ese full_weight and slim_weight are both 0"),
])
def test_bad_ese_hyperparameters_fail_with_one_line(changes, message):
    with pytest.raises(BenchError, match=re.escape(message)) as err:
        METHODS.get("ese")().Params(**changes)
    assert "\n" not in str(err.value)


def test_a_compression_size_outside_the_backbone_fails_before_training():
    spec = RunSpec("ese", "stsb", backbone="tiny-random-bert", train_data="snli", budget=Budget(steps=2),
                   params=freeze_params({"compression_size": 128}))
    with pytest.raises(BenchError, match=re.escape("dim 128 is outside the backbone (1..64)")):
        method_jobs(METHODS.get("ese")(), spec, Backbone(spec.backbone))
