"""Models whose last block's output goes through a final norm (pre-LN encoders such as ModernBERT, decoders such as
Qwen3): the norm is found by what it is, and every layer's vector goes through it, in serving and in training.

Oracle: the model truly truncated to k blocks (transformers' num_hidden_layers=k), whose own last hidden state has
been through the final norm, as the decoder test of tests/test_serving.py does. Models: tiny random ones
(tests/tiny_models.py), the final norm's weight moved off 1 so that applying it shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import save_hf, tiny_bert, tiny_decoder, tiny_modernbert

from bench.encoder import Encoder
from bench.hub import Backbone, load_model
from bench.losses import at, base_loss, embed_columns
from bench.pooling import final_norm
from bench.train import TextCollate
from methods import METHODS
from methods.starbucks_srl import default_targets

TOL = 1e-5
TEXTS = ["A man is playing a guitar.", "hello", "The quick brown fox jumps over the lazy dog, again and again.",
         "What is the capital of France?"]
TRIPLETS = [("A man plays a guitar.", "Someone is playing music.", "A cat sleeps."),
            ("Two dogs run in a field.", "Animals are running outside.", "A woman reads a book indoors."),
            ("The sun sets over the sea.", "Evening at the beach.", "A car is parked in a garage."),
            ("Children play football.", "Kids are playing a game.", "An old man is sleeping.")]
LOSS = base_loss("triplets")


def model_with_final_norm(kind: str, layers: int = 3) -> torch.nn.Module:
    model = tiny_modernbert(layers) if kind == "modernbert" else tiny_decoder(kind, layers)
    norm = model.final_norm if kind == "modernbert" else model.norm
    with torch.no_grad():  # off the identity, so a layer served without it differs
        norm.weight.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module", params=["modernbert", "qwen3"])
def folder(request, tmp_path_factory) -> str:
    return save_hf(model_with_final_norm(request.param), tmp_path_factory.mktemp(request.param))


def test_final_norm_is_found_by_what_it_is_not_its_name():
    """ModernBERT's is called `final_norm`, Qwen3's `norm`: both found; post-LN BERT has none (its LayerNorms sit
    inside the blocks and the embeddings)."""
    modernbert, qwen3 = tiny_modernbert(), tiny_decoder("qwen3")
    assert final_norm(modernbert) is modernbert.final_norm
    assert final_norm(qwen3) is qwen3.norm
    assert final_norm(tiny_bert()) is None


def test_every_layer_is_served_through_the_final_norm(folder):
    """Mean pooling at layers 1 and 2 equals the model cut to that many blocks."""
    ours = Encoder.named(folder, device="cpu", pooling="mean").vectors(TEXTS, 512)
    for layers in (1, 2):
        truncated = Encoder.named(folder, device="cpu", pooling="mean", num_layers=layers)
        assert truncated.num_layers == layers
        np.testing.assert_allclose(ours[layers - 1], truncated.vectors(TEXTS, 512)[-1], atol=TOL)


def test_training_loss_reaches_every_layer_through_the_final_norm(folder):
    """starbucks-srl without KL, unit weights, on targets at layers 1, 2 and 3: its one-pass loss equals the sum of
    the base loss of models cut to 1, 2 and 3 blocks; and the loss of the middle target alone has a gradient on
    the final norm's weight (which only reaches it if the norm is applied to that layer's states)."""
    srl = METHODS.get("starbucks-srl")()
    model, tokenizer = load_model(Backbone(folder))
    batch = TextCollate(tokenizer, 32)([(t, None) for t in TRIPLETS])
    width = model.config.hidden_size
    targets = default_targets(3, width)
    assert [t.layer for t in targets] == [1, 2, 3]
    ours = srl.jobs(srl.Params(kl="none"), 3, width, LOSS, "mean")[0].objective(model.eval(), batch,
                                                                                torch.Generator())
    expected = 0.0
    for target in targets:
        truncated, _ = load_model(Backbone(folder), num_layers=target.layer)
        expected += LOSS(at(embed_columns(truncated.eval(), batch, "mean"), target.layer, target.dim), None).item()
    assert ours.item() == pytest.approx(expected, abs=TOL)

    model.zero_grad()
    LOSS(at(embed_columns(model, batch, "mean"), 2, width), None).backward()
    assert final_norm(model).weight.grad.abs().sum() > 0
