"""`qat` (methods/qat.py): with zero quantization weights it is starbucks-srl, bit for bit; its int8 and binary
copies are the codes evaluation scores (oracle: bench/transforms.py, which tests/test_transforms.py checks against
sentence-transformers' quantize_embeddings); where the quantizer is the identity, its straight-through gradient is
the float gradient.

Model: a seeded random 4-layer, 64-dim BERT in eval mode (no dropout). Batch: 8 real SNLI triplets.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertModel

from bench import BenchError
from bench.data.pairs import load_triplets
from bench.hub import Backbone, load_model, resolve_backbone
from bench.losses import at, base_loss, embed_columns
from bench.train import TextCollate
from bench.transforms import binarize, int8_ranges, quantize_int8
from methods import METHODS
from methods.qat import binary_straight_through, int8_straight_through, precision_aware
from methods.starbucks_srl import RETRIEVAL

LAYERS, HIDDEN = 4, 64
LOSS = base_loss("triplets")
FLOAT_ONLY = {"fp32": 1.0, "int8": 0.0, "binary": 0.0}


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("tiny4-qat")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
                         intermediate_size=128)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_backbone("minilm")).save_pretrained(folder)
    model, tokenizer = load_model(Backbone(str(folder)))
    batch = TextCollate(tokenizer, 32)([(t, None) for t in load_triplets(data_dir)[:8]])
    return model.eval(), batch


def loss_and_grads(method: str, params, model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model = copy.deepcopy(model)
    (job,) = METHODS.get(method)().jobs(params, LAYERS, HIDDEN, LOSS, "mean")
    loss = job.objective(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


@pytest.mark.parametrize("srl_params", [METHODS.get("starbucks-srl").Params(),
                                        replace(RETRIEVAL, weights=(0.5, 1.0, 2.0, 1.5))],
                         ids=["sts-recipe", "retrieval-recipe-weighted"])
def test_zero_quantization_weights_give_exactly_starbucks_srl(model_and_batch, srl_params):
    """Oracle: starbucks-srl itself, same model, same batch: the loss and every parameter's gradient are equal
    bit for bit (torch.equal); and the default qat loss is not (the quantized terms are really there)."""
    model, batch = model_and_batch
    expected, expected_grads = loss_and_grads("starbucks-srl", srl_params, model, batch)
    qat = METHODS.get("qat").Params(**vars(srl_params), int8_weight=0.0, binary_weight=0.0)
    loss, grads = loss_and_grads("qat", qat, model, batch)
    assert torch.equal(loss, expected)
    assert all((g is None and e is None) or torch.equal(g, e) for g, e in zip(grads, expected_grads))
    default, _ = loss_and_grads("qat", METHODS.get("qat").Params(**vars(srl_params)), model, batch)
    assert default.item() > expected.item() + 0.1


def test_int8_and_binary_copies_are_the_codes_evaluation_scores(model_and_batch):
    """Oracle: bench/transforms.py on the normalized vectors, ranges over every column of the batch together
    (evaluation calibrates one set shared by both sides): int8 codes equal, sign bits equal."""
    model, batch = model_and_batch
    with torch.no_grad():
        columns = [F.normalize(c, dim=-1) for c in at(embed_columns(model, batch, "mean"), 2, 32)]
    vectors = torch.cat(columns).numpy()
    codes = quantize_int8(vectors, int8_ranges(vectors)).astype(np.float32)
    assert np.array_equal(torch.cat(int8_straight_through(columns)).numpy(), codes)
    bits = np.unpackbits(binarize(vectors), axis=-1).astype(bool)
    signs = torch.cat(binary_straight_through(columns))
    assert np.array_equal(signs.numpy() > 0, bits)
    assert torch.allclose(signs.abs(), torch.full_like(signs, 32 ** -0.5))  # unit norm, like the vector itself


def int8_identity_columns() -> list[torch.Tensor]:
    """Six rows whose normalized vectors are int8 codes / 256 exactly: each row is a cyclic shift of an integer
    vector of norm 256 (128^2 + 3 x 127^2 + 27^2 + 6^2 = 256^2), so every dimension of the batch spans exactly
    -128..127 and the ranges give lo = -128/256, step = 1/256: floor((x - lo) / step) - 128 is 256 x, in exact
    float arithmetic (powers of two). The rows are scaled by different powers of two before normalization, so
    ranges taken before normalizing would not give the identity."""
    base = torch.tensor([-128.0, 127, 127, 127, 27, 6], dtype=torch.float64)
    rows = [torch.roll(base, j) * 2.0 ** (j - 3) for j in range(6)]
    rows[1][rows[1].abs() == 27 * 2.0 ** -2] *= -1  # a sign that is no range's edge, for variety
    return [torch.stack(rows[2 * i:2 * i + 2]) for i in range(3)]  # anchors, positives, negatives


def binary_identity_columns() -> list[torch.Tensor]:
    """+-s rows in 16 dims: normalized, they are +-1/4, exactly their sign vectors +-1/sqrt(16)."""
    generator = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (6, 16), generator=generator).double() * 2 - 1
    scales = 2.0 ** torch.arange(-2, 4, dtype=torch.float64).unsqueeze(1)
    return list((signs * scales).split(2))


@pytest.mark.parametrize("precision,columns,unit", [("int8", int8_identity_columns, 256.0),
                                                    ("binary", binary_identity_columns, 1.0)])
def test_straight_through_gradient_equals_the_float_gradient_where_the_quantizer_is_the_identity(
        precision, columns, unit):
    """Where the quantized copy equals the normalized vector (times `unit`, which the cosine ignores), the base
    loss on the copy has the float loss's value and, through the straight-through estimator, its gradient.
    Measured here (float64): values equal, gradients within 1e-15 of each other; the tolerance below is 1e-12.
    A copy without the straight-through path (no gradient), or with gradient through the int8 ranges, fails."""
    float_columns = [c.clone().requires_grad_() for c in columns()]
    quant_columns = [c.clone().requires_grad_() for c in columns()]
    normalized = [F.normalize(c, dim=-1) for c in quant_columns]
    quantize = {"int8": int8_straight_through, "binary": binary_straight_through}[precision]
    assert all(torch.equal(q, unit * n) for q, n in zip(quantize(normalized), normalized))  # the identity case

    expected = precision_aware(LOSS, FLOAT_ONLY)(float_columns, None)
    loss = precision_aware(LOSS, {"fp32": 0.0, "int8": 0.0, "binary": 0.0, precision: 1.0})(quant_columns, None)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    expected.backward()
    loss.backward()
    for q, f in zip(quant_columns, float_columns):
        assert f.grad.abs().max() > 1e-3  # a real gradient to compare
        torch.testing.assert_close(q.grad, f.grad, rtol=0, atol=1e-12)


def test_the_quantized_terms_move_the_gradient_where_the_quantizer_is_not_the_identity(model_and_batch):
    """The other side of the oracle above: on a real model's vectors the int8 and binary terms add gradient of
    their own (else the weights would only rescale the float loss)."""
    model, batch = model_and_batch
    with torch.no_grad():
        columns = at(embed_columns(model, batch, "mean"), 2, 32)
    grads = {}
    for precision in ("fp32", "int8", "binary"):
        leaves = [c.clone().requires_grad_() for c in columns]
        precision_aware(LOSS, {"fp32": 0.0, "int8": 0.0, "binary": 0.0, precision: 1.0})(leaves, None).backward()
        grads[precision] = F.normalize(torch.cat([c.grad for c in leaves]).flatten(), dim=0)
    assert (grads["fp32"] @ grads["int8"]).item() < 0.999 and (grads["fp32"] @ grads["binary"]).item() < 0.999


@pytest.mark.parametrize("changes,message", [
    ({"int8_weight": -1.0}, "qat int8_weight must be >= 0; got -1.0"),
    ({"fp32_weight": 0.0, "int8_weight": 0.0, "binary_weight": 0.0},
     "qat fp32_weight, int8_weight and binary_weight are all 0"),
])
def test_bad_qat_weights_fail_with_one_line(changes, message):
    with pytest.raises(BenchError, match=re.escape(message)) as err:
        METHODS.get("qat").Params(**changes)
    assert "\n" not in str(err.value)


def test_the_int8_term_trains_minilm(data_dir):
    """On all-MiniLM-L6-v2 and 16 SNLI triplets the int8 term's gradient norm is finite and on the float term's
    scale. Measured: 183 against the float term's 77 (2.4x); before the int8 straight-through used one scale for
    every dimension it was inf (a nearly constant dimension's 1 / step), every step, and qat never trained."""
    model, tokenizer = load_model(Backbone("minilm"))
    batch = TextCollate(tokenizer, 64)([(t, None) for t in load_triplets(data_dir)[:16]])
    params = METHODS.get("qat").Params
    norms = {}
    for precision in ("fp32", "int8"):
        weights = {"fp32_weight": 0.0, "int8_weight": 0.0, "binary_weight": 0.0, f"{precision}_weight": 1.0}
        trained = copy.deepcopy(model)
        (job,) = METHODS.get("qat")().jobs(params(**weights), 6, 384, LOSS, "mean")
        job.objective(trained, batch, torch.Generator().manual_seed(0)).backward()
        norms[precision] = torch.nn.utils.clip_grad_norm_(trained.parameters(), float("inf")).item()
    assert np.isfinite(norms["int8"]) and norms["int8"] < 10 * norms["fp32"], norms
