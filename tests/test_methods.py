"""The training methods: oracles against sentence-transformers' own losses and a truly truncated model, and
contract tests that run over every registered training method automatically: the methods that train the encoder
(`jobs`, a torch objective) and the post-hoc heads on the frozen backbone (`fit`, methods/_heads.py), each with
equivalent checks (finite, every hyperparameter matters, saved with the checkpoint, defaults freeze into a spec).

Model: a seeded random 4-layer, 64-dim BERT (so there are layers below the last to sample and to leave out), in
eval mode for the oracles (no dropout: both sides see the same vectors). Batch: 8 real SNLI triplets. Heads: fitted
end to end on the smoke suite (tiny random BERT, its fit set of SNLI sentences, its 8-step budget).
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import fields, replace
from unittest import mock

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    Matryoshka2dLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from transformers import AutoTokenizer, BertConfig, BertModel

from bench import BenchError
from bench.data.pairs import load_triplets
from bench.heads import load_head
from bench.hub import Backbone, load_model, resolve_backbone
from bench.losses import at, base_loss, embed_columns
from bench.runner import make_specs
from bench.spec import Budget, RunSpec, SubModel, freeze_params
from bench.suites import smoke, with_overrides
from bench.train import TextCollate
from methods import METHODS, Method, RunContext
from methods._heads import HeadMethod, check_head_config
from methods._jobs import TrainedMethod, method_jobs
from methods.starbucks_srl import default_targets
from methods.twodmse import SENTENCE_TRANSFORMERS, STARBUCKS_BASELINE, Draw

LAYERS, HIDDEN = 4, 64
TRAINED = [name for name in METHODS.names() if issubclass(METHODS.get(name), TrainedMethod)]
HEADS = [name for name in METHODS.names() if issubclass(METHODS.get(name), HeadMethod)]
LOSS = base_loss("triplets")


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny4")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
                         intermediate_size=128)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_backbone("minilm")).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def triplets(data_dir) -> list:
    return load_triplets(data_dir)[:8]


@pytest.fixture(scope="module")
def st_model(tiny4) -> SentenceTransformer:
    model = SentenceTransformer(modules=[Transformer(tiny4, max_seq_length=32), Pooling(HIDDEN, "mean")],
                                device="cpu")
    return model.eval()


def st_features(st_model, triplets) -> list[dict]:
    return [st_model.tokenize([t[i] for t in triplets]) for i in range(3)]


def our_batch(features: list[dict]) -> dict:
    """The same tokenized columns, as our objectives take them."""
    keep = ("input_ids", "attention_mask", "token_type_ids")
    return {"columns": [{k: v for k, v in f.items() if k in keep} for f in features], "labels": None}


# ---- oracles ------------------------------------------------------------------------------------------------------

def test_mrl_equals_sentence_transformers_matryoshka_loss(st_model, triplets):
    """Oracle: sentence-transformers' MatryoshkaLoss(MultipleNegativesRankingLoss) on the same batch and weights."""
    dims, weights = (8, 16, 32, 64), (1.0, 0.5, 2.0, 1.5)
    mrl = METHODS.get("mrl")()
    objective = mrl.jobs(mrl.Params(dims=dims, weights=weights), LAYERS, HIDDEN, LOSS, "mean")[0].objective
    features = st_features(st_model, triplets)
    ours = objective(st_model[0].auto_model, our_batch(features), torch.Generator())
    library = MatryoshkaLoss(st_model, MultipleNegativesRankingLoss(st_model), list(dims), list(weights))
    assert ours.item() == pytest.approx(library(features, None).item(), abs=1e-5)


@pytest.mark.parametrize("layer,dim_last,dim_layer", [(2, 16, 32), (1, 64, 8), (3, 8, 64)])
def test_2dmse_library_setting_equals_matryoshka2d_loss(st_model, triplets, layer, dim_last, dim_layer):
    """Oracle: Matryoshka2dLoss with its defaults, its random draws pinned to the same layer and dims (it draws, in
    order: the last layer's dim, the prior layer, that layer's dim; dims indexed largest first)."""
    dims = [64, 32, 16, 8]
    answers = iter([[dims.index(dim_last)], [layer], [dims.index(dim_layer)]])
    library = Matryoshka2dLoss(st_model, MultipleNegativesRankingLoss(st_model), dims)
    features = st_features(st_model, triplets)
    with mock.patch.object(random, "sample", lambda population, n: next(answers)):
        expected = library(features, None).item()
    objective = METHODS.get("2dmse")().objective(replace(SENTENCE_TRANSFORMERS, dims=tuple(dims)), LAYERS, HIDDEN,
                                                 LOSS, "mean")
    columns = embed_columns(st_model[0].auto_model, our_batch(features), "mean")
    draw = Draw((layer,), {LAYERS: (dim_last,), layer: (dim_layer,)})
    assert objective.loss_given(columns, None, draw).item() == pytest.approx(expected, abs=1e-5)


def test_2dmse_starbucks_baseline_is_the_library_loss_with_linear_weights_and_a_live_teacher(st_model, triplets):
    """Oracle: Matryoshka2dLoss(layer_weighting="linear") gives the same value; the live teacher only moves the
    gradient (the library detaches it since #3757; the Starbucks paper's copy did not)."""
    dims = [64, 32, 16, 8]
    answers = iter([[0], [2], [2]])
    library = Matryoshka2dLoss(st_model, MultipleNegativesRankingLoss(st_model), dims, layer_weighting="linear")
    features = st_features(st_model, triplets)
    with mock.patch.object(random, "sample", lambda population, n: next(answers)):
        expected = library(features, None).item()
    model = st_model[0].auto_model
    draw = Draw((2,), {LAYERS: (64,), 2: (16,)})
    grads = []
    for params in (STARBUCKS_BASELINE, replace(STARBUCKS_BASELINE, detach_teacher=True)):
        objective = METHODS.get("2dmse")().objective(replace(params, dims=tuple(dims)), LAYERS, HIDDEN, LOSS, "mean")
        model.zero_grad()
        value = objective.loss_given(embed_columns(model, our_batch(features), "mean"), None, draw)
        value.backward()
        assert value.item() == pytest.approx(expected, abs=1e-5)
        grads.append(model.encoder.layer[-1].output.dense.weight.grad.clone())
    assert not torch.equal(grads[0], grads[1])


def test_srl_target_losses_equal_truly_truncated_models(tiny4, triplets):
    """Oracle: without KL and with unit weights, starbucks-srl's one-pass loss is the sum over targets of the base
    loss of a model loaded with only `layer` blocks, at its first `dim` dims."""
    srl = METHODS.get("starbucks-srl")()
    params = srl.Params(kl="none")
    model, tokenizer = load_model(Backbone(tiny4))
    batch = TextCollate(tokenizer, 32)([(t, None) for t in triplets])
    ours = srl.jobs(params, LAYERS, HIDDEN, LOSS, "mean")[0].objective(model.eval(), batch, torch.Generator())
    expected = 0.0
    for target in default_targets(LAYERS, HIDDEN):
        truncated, _ = load_model(Backbone(tiny4), num_layers=target.layer)
        columns = embed_columns(truncated.eval(), batch, "mean")
        expected += LOSS(at(columns, target.layer, target.dim), None).item()
    assert ours.item() == pytest.approx(expected, abs=1e-5)


def test_srl_uses_one_forward_pass_per_column(tiny4, triplets):
    """Every target from ONE forward pass per column (3 for triplets), not one per target."""
    srl = METHODS.get("starbucks-srl")()
    model, tokenizer = load_model(Backbone(tiny4))
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    batch = TextCollate(tokenizer, 32)([(t, None) for t in triplets])
    srl.jobs(srl.Params(), LAYERS, HIDDEN, LOSS, "mean")[0].objective(model, batch, torch.Generator())
    assert len(calls) == 3


# ---- target rule --------------------------------------------------------------------------------------------------

def pairs(targets) -> list[tuple[int, int]]:
    return [(t.layer, t.dim) for t in targets]


def test_target_rule_gives_the_paper_pairs_on_bert_base_and_the_same_pattern_elsewhere():
    assert pairs(default_targets(12, 768)) == [(2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)]
    assert pairs(default_targets(6, 384)) == [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]
    assert pairs(default_targets(4, 64)) == [(1, 8), (2, 16), (3, 32), (4, 64)]
    assert pairs(default_targets(2, 64)) == [(1, 32), (2, 64)]


# ---- contract tests over every registered training method ---------------------------------------------------------

# Hyperparameters whose default (None: "follow the backbone") has no generic variant: a value to try instead.
NONE_VARIANTS = {"dims": (16, 64), "targets": ((2, 32), (4, 64)), "weights": (1.0, 3.0), "compression_size": 16,
                 "hidden": 32}


def variant(method: str, name: str, value, params):
    """Another valid value of one hyperparameter."""
    if value is None:
        if name == "weights":  # one per dim or target: the defaults follow the target rule
            return tuple(float(i + 1) for i in range(len(default_targets(LAYERS, HIDDEN))))
        assert name in NONE_VARIANTS, f"{method}.{name}: add a variant to NONE_VARIANTS"
        return NONE_VARIANTS[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 if value else 0.5
    if isinstance(value, str):
        for candidate in ("linear", "scores", "full", "log", "none", "embedding", "uniform", "target", "last"):
            if candidate != value:
                try:
                    replace(params, **{name: candidate})
                    return candidate
                except BenchError:
                    continue
    raise AssertionError(f"{method}.{name}: no variant for {value!r}")


@pytest.fixture(scope="module")
def tiny4_model(tiny4):
    return load_model(Backbone(tiny4))[0].eval()


def run_jobs(method: str, params, base_model, batch: dict) -> tuple[float, torch.Tensor]:
    """Sum of every job's loss on (a copy of) the full-depth model, and the gradient it leaves (flattened)."""
    model = copy.deepcopy(base_model)
    total = 0.0
    for job in METHODS.get(method)().jobs(params, LAYERS, HIDDEN, LOSS, "mean"):
        loss = job.objective(model, batch, torch.Generator().manual_seed(0))
        loss.backward()
        total += loss.item()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return total, grad


@pytest.fixture(scope="module")
def batch(tiny4, triplets) -> dict:
    _, tokenizer = load_model(Backbone(tiny4))
    return TextCollate(tokenizer, 32)([(t, None) for t in triplets])


@pytest.mark.parametrize("method", TRAINED)
def test_loss_is_finite_and_backpropagates(method, tiny4_model, batch):
    loss, grad = run_jobs(method, METHODS.get(method)().Params(), tiny4_model, batch)
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("method", TRAINED)
def test_gradients_reach_exactly_the_blocks_a_job_uses(method, tiny4_model, batch):
    """Each job's loss reaches the embeddings and every block up to its deepest target, and no block above it
    (a `separate` model for layer 2 touches nothing above block 2 even when run on a deeper model)."""
    for job in METHODS.get(method)().jobs(METHODS.get(method)().Params(), LAYERS, HIDDEN, LOSS, "mean"):
        model = copy.deepcopy(tiny4_model)
        job.objective(model, batch, torch.Generator().manual_seed(0)).backward()
        deepest = max(t.layer for t in job.targets)
        assert model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
        for index, block in enumerate(model.encoder.layer):
            grads = [p.grad for p in block.parameters()]
            if index < deepest:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), f"{job.name} block {index + 1}"
            else:
                assert all(g is None or g.abs().sum() == 0 for g in grads), f"{job.name} block {index + 1}"


@pytest.mark.parametrize("method", TRAINED)
def test_every_hyperparameter_changes_the_loss_or_its_gradient(method, tiny4_model, batch):
    """Each field of Params, changed alone from the defaults, changes the loss value or (for choices like
    detaching a teacher, which only act on the backward pass) its gradient. A method whose fields act in a stage
    before its objective (a pre-training) names them in `fields_outside_objective`; its own tests cover them."""
    cls = METHODS.get(method)
    defaults = cls().Params()
    base_loss_value, base_grad = run_jobs(method, defaults, tiny4_model, batch)
    for field in fields(defaults):
        if field.name in cls.fields_outside_objective:
            continue
        params = replace(defaults, **{field.name: variant(method, field.name, getattr(defaults, field.name),
                                                            defaults)})
        loss, grad = run_jobs(method, params, tiny4_model, batch)
        moved = abs(loss - base_loss_value) > 1e-6 or grad.shape != base_grad.shape or \
            not torch.allclose(grad, base_grad, atol=1e-9)
        assert moved, f"{method}: {field.name} = {getattr(params, field.name)!r} changes neither loss nor gradient"


@pytest.mark.parametrize("method", TRAINED)
def test_targets_lie_inside_the_backbone(method, tiny4):
    for job in METHODS.get(method)().jobs(METHODS.get(method)().Params(), LAYERS, HIDDEN, LOSS, "mean"):
        assert job.targets
        for target in job.targets:
            target.check_inside(LAYERS, HIDDEN)
        if job.num_layers is not None:  # a truncated model holds its targets
            assert all(t.layer <= job.num_layers for t in job.targets)


@pytest.mark.parametrize("method", TRAINED + HEADS)
def test_default_hyperparameters_freeze_into_a_spec(method):
    params = freeze_params(vars(METHODS.get(method)().Params()))
    assert METHODS.get(method)().Params(**dict(params)) == METHODS.get(method)().Params()


# ---- contract tests over every registered post-hoc head ------------------------------------------------------------

def test_every_method_declares_one_contract():
    """Every registered method is a Method; the ones that train either train the encoder or fit a head (never
    both), and the others train nothing."""
    assert all(issubclass(METHODS.get(name), Method) for name in METHODS.names())
    trained = {name for name in METHODS.names() if METHODS.get(name).trains}
    assert trained == set(TRAINED) | set(HEADS) and not set(TRAINED) & set(HEADS)
    assert trained < set(METHODS.names())  # pretrained


@pytest.fixture(scope="module")
def head_ctx(data_dir, tmp_path_factory) -> RunContext:
    """One cache for the module: the smoke suite's fit set is encoded once and shared by every fit."""
    root = tmp_path_factory.mktemp("heads")
    return RunContext(data_dir, root / "results", root / "cache", "cpu")


def head_spec(method: str, **changes) -> RunSpec:
    """The smoke suite's spec of a head method (tiny random BERT, SNLI fit set, 8 steps), with some params changed."""
    spec = next(iter(make_specs(with_overrides(smoke(), tasks=("stsb",)), method)))
    return replace(spec, params=freeze_params({**dict(spec.params), **changes}))


def fitted_tensors(method: str, spec: RunSpec, ctx: RunContext) -> dict[str, np.ndarray]:
    (checkpoint,) = METHODS.get(method)().checkpoints(spec, ctx)
    return load_head(checkpoint.head).tensors()


@pytest.mark.parametrize("method", HEADS)
def test_head_is_finite_keeps_the_backbone_and_is_reused_from_its_checkpoint(method, head_ctx, monkeypatch):
    """The checkpoint is the backbone itself (model_id `pretrained`'s, so its encodings are reused) with a head file
    whose outputs are finite at every layer; a second call loads the saved head instead of fitting again."""
    spec = head_spec(method)
    (checkpoint,) = METHODS.get(method)().checkpoints(spec, head_ctx)
    assert checkpoint.model == spec.backbone and checkpoint.model_id == "backbone:tiny-random-bert"
    head = load_head(checkpoint.head)
    x = np.random.default_rng(0).standard_normal((20, HIDDEN)).astype(np.float32)
    for layer in (1, 2):
        assert np.isfinite(head.apply(layer, x)).all()
        codes = head.codes(layer, x, 32)
        if codes is not None:
            assert codes.bits.shape == (20, 32 * head.bits_per_dim // 8)
            assert np.isfinite(codes.reconstruction(normalize=True)).all()
    assert all(np.isfinite(row["score"]) for row in checkpoint.train_log)
    monkeypatch.setattr(METHODS.get(method), "fit", lambda *args: pytest.fail("fitted again"))
    assert METHODS.get(method)().checkpoints(spec, head_ctx) == [checkpoint]


@pytest.mark.parametrize("method", HEADS)
def test_every_hyperparameter_changes_the_head(method, head_ctx):
    """Each field of Params, changed alone from the smoke suite's values, changes the fitted head's tensors (the
    fit set's size included: fitted end to end, from the training sentences)."""
    defaults = head_spec(method)
    params = METHODS.get(method).Params(**dict(defaults.params))
    base = fitted_tensors(method, defaults, head_ctx)
    for field in fields(params):
        value = variant(method, field.name, getattr(params, field.name), params)
        tensors = fitted_tensors(method, head_spec(method, **{field.name: value}), head_ctx)
        moved = tensors.keys() != base.keys() or any(not np.array_equal(tensors[k], base[k]) for k in base)
        assert moved, f"{method}: {field.name} = {value!r} leaves the head unchanged"


@pytest.mark.parametrize("method,params,message", [
    ("matryoshka-adaptor", {"dims": (32, 96)}, "matryoshka-adaptor dim 96 is outside the backbone (1..64)"),
    ("bebr", {"dims": (128,)}, "bebr dim 128 is outside the backbone (1..64)"),
])
def test_head_dims_outside_the_backbone_fail_before_fitting(method, params, message):
    spec = head_spec(method, **params)
    with pytest.raises(BenchError, match=re.escape(message)):
        check_head_config(METHODS.get(method)(), spec, Backbone(spec.backbone))


# ---- bad hyperparameters: one clear line each ---------------------------------------------------------------------

@pytest.mark.parametrize("method,changes,message", [
    ("starbucks-srl", {"targets": ((4, 64), (2, 32))}, "starbucks-srl targets must be distinct (layer, dim) pairs"),
    ("starbucks-srl", {"kl": "cosine"}, "starbucks-srl kl must be one of embedding, scores, none; got 'cosine'"),
    ("starbucks-srl", {"kl_temperature": 0.0}, "starbucks-srl kl_temperature must be > 0; got 0.0"),
    ("2dmse", {"n_layers_per_step": 0}, "2dmse n_layers_per_step must be -1 (all) or positive; got 0"),
    ("2dmse", {"layer_weighting": "cubic"}, "2dmse layer_weighting must be one of uniform, linear, log"),
    ("mrl", {"dims": (64, 64)}, "mrl dims must be distinct positive integers"),
    ("separate", {"train_width": "half"}, "separate train_width must be one of target, full; got 'half'"),
    ("pca", {"fit_sentences": -5}, "pca fit_sentences must be a positive integer; got -5"),
    ("matryoshka-adaptor", {"layers": "first"}, "matryoshka-adaptor layers must be one of all, last; got 'first'"),
    ("matryoshka-adaptor", {"k": 0}, "matryoshka-adaptor k must be a positive integer; got 0"),
    ("matryoshka-adaptor", {"beta": -1.0}, "matryoshka-adaptor beta must be >= 0; got -1.0"),
    ("bebr", {"bits": 0}, "bebr bits must be an integer from 1 to 8; got 0"),
    ("bebr", {"temperature": 0.0}, "bebr temperature must be > 0; got 0.0"),
    ("bebr", {"hidden": 0}, "bebr hidden must be a positive integer; got 0"),
])
def test_bad_hyperparameters_fail_with_one_line(method, changes, message):
    with pytest.raises(BenchError, match=re.escape(message)) as err:
        METHODS.get(method)().Params(**changes)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method,params,message", [
    ("separate", {"targets": ((3, 32),)}, "layer 3 is outside the backbone (1..2)"),
    ("starbucks-srl", {"targets": ((1, 32), (2, 128))}, "dim 128 is outside the backbone (1..64)"),
    ("mrl", {"dims": (32, 64, 96)}, "dim 96 is outside the backbone (1..64)"),
    ("mrl", {"weights": (1.0,)}, "mrl has 1 weights for 2 dims; give one weight per dim"),
])
def test_targets_outside_the_backbone_fail_before_training(method, params, message):
    spec = RunSpec(method, "stsb", backbone="tiny-random-bert", train_data="snli", budget=Budget(steps=2),
                   params=freeze_params(params))
    with pytest.raises(BenchError, match=re.escape(message)):
        method_jobs(METHODS.get(method)(), spec, Backbone(spec.backbone))


def test_2dmse_sub_models_cover_every_layer_at_its_dims():
    objective_targets = METHODS.get("2dmse")().jobs(METHODS.get("2dmse")().Params(), LAYERS, HIDDEN, LOSS,
                                                    "mean")[0].targets
    assert set(objective_targets) == {SubModel(layer, d) for layer in range(1, 5) for d in (8, 16, 32, 64)}
