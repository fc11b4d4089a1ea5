"""`starbucks`: SMAE pre-training through the one training loop, cached by its own spec, then starbucks-srl
fine-tuning from it. The smoke suite's settings (tiny random BERT, 16 pre-training steps of 8 sentences at lr 5e-3,
whose losses leave chance).

Oracles: an uninterrupted run for the resumed one; the training loop's own loss log for the per-pair rows (their
mean is the logged total); the SMAE loss itself (bench/smae.py) for the hyperparameters that act on it.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import pytest
import torch

import methods.starbucks as sb
from bench import BenchError
from bench.cli import main
from bench.hub import Backbone, load_model
from bench.results import load_results
from bench.runner import make_specs
from bench.smae import SMAEModel, make_batch, mlm_head_for
from bench.spec import RunSpec, freeze_params, stable_hash
from bench.suites import get_suite
from methods import METHODS, RunContext
from methods.starbucks_srl import resolve_targets

SMOKE_TARGETS = resolve_targets(None, 2, 64)  # (1,32) (2,64)


def smoke_spec(**params) -> RunSpec:
    spec = make_specs(get_suite("smoke"), "starbucks")[0]
    return replace(spec, params=freeze_params({**dict(spec.params), **params}))


def stage(spec: RunSpec, ctx: RunContext) -> sb.PretrainStage:
    return sb.pretrain(spec, ctx, sb.Starbucks.Params(**dict(spec.params)), SMOKE_TARGETS)


def as_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows)).fillna({"layer": -1, "dim": -1})


@pytest.fixture
def ctx(tmp_path, data_dir) -> RunContext:
    return RunContext(data_dir, tmp_path / "results", tmp_path / "cache")


def test_smoke_suite_sets_a_short_pretraining_and_paper_sts_the_papers():
    smoke = dict(make_specs(get_suite("smoke"), "starbucks")[0].params)
    assert (smoke["pretrain_steps"], smoke["pretrain_batch_size"], smoke["pretrain_lr"]) == (16, 8, 5e-3)
    paper = get_suite("paper-sts")
    assert paper.backbone == "bert-base-uncased"
    params = sb.Starbucks.Params(**paper.method_params["starbucks"])  # valid as it stands
    assert (params.mlm_rate, params.mae_rate, params.pretrain_lr, params.pretrain_schedule,
            params.pretrain_warmup_ratio, params.pretrain_weight_decay) == (0.2, 0.4, 1e-4, "cosine", 0.05, 0.001)
    assert params.corpus == "hf:HuggingFaceFW/fineweb:sample-100BT" and params.pretrain_max_seq_len == 512


def test_pretraining_logs_per_pair_losses_that_decrease_and_average_to_the_total(ctx):
    result = stage(smoke_spec(), ctx)
    rows = as_frame(result.rows)
    curve = rows[rows.step > 0].pivot_table(index="step", columns=["metric", "layer", "dim"], values="score")
    expected = {(m, -1, -1) for m in ("smae_loss", "smae_lr", "smae_grad_norm")} | {
        (m, t.layer, t.dim) for m in ("smae_mlm_loss", "smae_mae_loss") for t in SMOKE_TARGETS}
    assert set(curve.columns) == expected and list(curve.index) == list(range(1, 17))
    curve = curve.drop(columns=["smae_lr", "smae_grad_norm"], level=0)  # the loop's telemetry (tests/test_train.py)
    parts = curve.drop(columns="smae_loss", level=0)
    # the loop's total is the mean over pairs of (MLM + MAE) / 2, i.e. the mean of the four parts
    assert curve[("smae_loss", -1, -1)].to_numpy() == pytest.approx(parts.mean(axis=1).to_numpy(), abs=1e-5)
    assert (curve.iloc[-2:].mean() < curve.iloc[:2].mean()).all()  # every pair's MLM and MAE loss went down
    # ... and left chance, ln(vocab) = 10.33, by more than a nat (measured: the last two steps average 8.89..8.97)
    assert (curve.iloc[-2:].mean() < math.log(30522) - 1.0).all(), curve.iloc[-2:].mean()
    flags = rows.set_index("metric").score
    assert flags["smae_mlm_head_pretrained"] == 0.0  # the tiny BERT ships no head: recorded
    assert flags["smae_train_seconds"] == result.seconds > 0
    assert (result.encoder_dir / "config.json").exists() and (result.encoder_dir / "tokenizer.json").exists()


def test_pretraining_is_cached_by_its_own_spec_and_resumes_exactly(ctx, tmp_path, monkeypatch):
    spec = smoke_spec()
    reference = stage(spec, ctx)

    # a second run of the same stage reuses it: nothing trains
    monkeypatch.setattr(sb, "_train_smae", lambda *a, **k: pytest.fail("pre-trained again"))
    assert stage(spec, ctx) == reference
    monkeypatch.undo()

    # killed after the step-4 checkpoint, then rerun: the same losses, per pair too, as the uninterrupted run
    resumed_ctx = replace(ctx, cache_dir=tmp_path / "other-cache")
    real_objective = sb.smae_objective

    def dies_at_step_6(*args):
        objective, calls = real_objective(*args), []

        def counting(model, batch, generator):
            calls.append(1)
            if len(calls) == 6:
                raise KeyboardInterrupt
            return objective(model, batch, generator)
        return counting

    monkeypatch.setattr(sb, "smae_objective", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        stage(spec, resumed_ctx)
    monkeypatch.undo()
    resumed = stage(spec, resumed_ctx)
    ref, res = as_frame(reference.rows), as_frame(resumed.rows)
    keep = ~ref.metric.str.endswith("seconds")
    assert ref[keep].score.to_numpy() == pytest.approx(res[keep].score.to_numpy(), abs=1e-6)
    assert ref[keep].drop(columns="score").equals(res[keep].drop(columns="score"))


def test_stage_key_covers_every_pretraining_field_and_only_them():
    """Each SMAE field changes the stage's hash (a new pre-training); a fine-tuning field does not (reuse)."""
    spec = smoke_spec()
    defaults = sb.Starbucks.Params(**dict(spec.params))
    key = stable_hash(sb.pretrain_spec(spec, defaults, SMOKE_TARGETS, ()))
    changed = {"mlm_rate": 0.3, "mae_rate": 0.5, "mae": False, "corpus": "snli", "pretrain_steps": 9,
               "pretrain_batch_size": 4, "pretrain_grad_accum": 2, "pretrain_lr": 2e-4, "pretrain_schedule": "linear",
               "pretrain_warmup_ratio": 0.1, "pretrain_weight_decay": 0.01, "pretrain_max_seq_len": 16}
    srl_fields = {f.name for f in fields(METHODS.get("starbucks-srl").Params)}
    assert set(changed) | srl_fields == {f.name for f in fields(defaults)}
    assert set(changed) == set(sb.Starbucks.fields_outside_objective)  # what the contract tests leave to us
    for name, value in changed.items():
        other = sb.pretrain_spec(spec, replace(defaults, **{name: value}), SMOKE_TARGETS, ())
        assert stable_hash(other) != key, name
    assert stable_hash(sb.pretrain_spec(spec, replace(defaults, kl_weight=1.0), SMOKE_TARGETS, ())) == key
    assert stable_hash(sb.pretrain_spec(replace(spec, seed=1), defaults, SMOKE_TARGETS, ())) != key
    # the evaluation sets kept out of a local corpus (bench/data/decontaminate.py) name its stage
    assert stable_hash(sb.pretrain_spec(spec, defaults, SMOKE_TARGETS, ("stsb",))) != key


def test_masking_fields_change_the_smae_loss(data_dir):
    """The fields that act inside the objective move its value (the contract tests' rule, on the SMAE loss)."""
    encoder, tokenizer = load_model(Backbone("tiny-random-bert"))
    torch.manual_seed(0)
    model = SMAEModel(encoder, mlm_head_for(Backbone("tiny-random-bert"), encoder)[0]).eval()
    texts = ["A man plays a flute on the stage.", "Two dogs run through the snow.", "The market rallied today."]

    def loss(mlm_rate=0.2, mae_rate=0.4, mae=True) -> float:
        batch = make_batch(tokenizer, texts, 32, mlm_rate, mae_rate, torch.Generator().manual_seed(0))
        with torch.no_grad():
            return model(batch, SMOKE_TARGETS, mae).total.item()

    base = loss()
    for change in ({"mlm_rate": 0.5}, {"mae_rate": 0.8}, {"mae": False}):
        assert loss(**change) != pytest.approx(base, abs=1e-6), change


@pytest.mark.parametrize("changes,message", [
    ({"mlm_rate": 1.0}, "starbucks mlm_rate must be in (0, 1); got 1.0"),
    ({"corpus": "snli+wiki"}, "starbucks corpus source 'wiki' is unknown"),
    ({"pretrain_steps": 0}, "starbucks pretrain_steps must be positive (without pre-training it is "
                            "starbucks-srl); got 0"),
    ({"pretrain_lr": 0.0}, "starbucks pretrain_* parameters: budget lr must be positive, got 0.0"),
    ({"pretrain_schedule": "cubic"}, "starbucks pretrain_* parameters: unknown budget schedule 'cubic'"),
    ({"kl": "cosine"}, "starbucks-srl kl must be one of"),  # the fine-tuning's own checks still apply
])
def test_bad_pretraining_parameters_fail_with_one_line(changes, message):
    with pytest.raises(BenchError, match=re.escape(message)) as err:
        sb.Starbucks.Params(**changes)
    assert "\n" not in str(err.value)


def test_bench_run_starbucks_fine_tunes_from_the_pretrained_encoder(ctx, monkeypatch):
    """End to end on the smoke suite: the fine-tuning starts from the SMAE encoder; the result file holds the
    pre-training rows beside the fine-tuning's; a fine-tuning with other settings reuses the pre-training."""
    started_from = []
    real = sb.method_checkpoints
    monkeypatch.setattr(sb, "method_checkpoints", lambda method, spec, ctx: started_from.append(spec.backbone) or
                        real(method, spec, ctx))
    assert main(["run", "--suite", "smoke", "--tasks", "stsb", "--methods", "starbucks", "--data-dir",
                 str(ctx.data_dir), "--results-dir", str(ctx.results_dir), "--cache-dir", str(ctx.cache_dir)]) == 0
    (pretrained,) = (ctx.cache_dir / "checkpoints").glob("smae-*")
    assert started_from == [str(pretrained / "final" / sb.ENCODER_DIR)]
    frame = load_results(ctx.results_dir)
    train_rows = frame[frame.split == "train"]
    assert {"smae_loss", "smae_mlm_loss", "smae_mae_loss", "loss"} <= set(train_rows.metric)
    mlm = train_rows[train_rows.metric == "smae_mlm_loss"]
    assert set(zip(mlm.layer, mlm.dim)) == {(t.layer, t.dim) for t in SMOKE_TARGETS}
    seconds = frame.set_index("metric").score
    assert seconds["train_seconds"] > seconds["smae_train_seconds"] > 0  # both stages are the method's cost

    monkeypatch.setattr(sb, "_train_smae", lambda *a, **k: pytest.fail("pre-trained again"))
    (checkpoint,) = METHODS.get("starbucks")().checkpoints(smoke_spec(kl_weight=1.0), ctx)  # a new fine-tuning
    assert {r["metric"] for r in checkpoint.train_log} >= {"smae_loss", "loss"}
    assert list((ctx.cache_dir / "checkpoints").glob("smae-*")) == [pretrained]
    assert started_from[-1] == started_from[0]


DDP_SCRIPT = """
import sys
from functools import partial
from pathlib import Path
import torch
from transformers import AutoTokenizer, BertConfig, BertModel
import methods.starbucks as sb
from bench.data.corpus import load_local_corpus
from bench.hub import Backbone, resolve_backbone
from bench.smae import mlm_head_for, tokenize
from bench.spec import Budget, SubModel
from bench.dist import world
from bench.train import train

out, data_dir, accum = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
headless = resolve_backbone("tiny-random-bert")  # (writing it, the first time, reseeds torch)
torch.manual_seed(0)
config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
encoder, tokenizer = BertModel(config), AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
head, _ = mlm_head_for(Backbone(headless), encoder)
targets = (SubModel(1, 32), SubModel(2, 64))
params = sb.Starbucks.Params(pretrain_grad_accum=accum)
model = sb.SMAETrainee(encoder, head, tokenizer, targets, True)
objective = sb.smae_objective(targets, params, tokenizer.mask_token_id, len(tokenizer), 0)
budget = Budget(steps=3, batch_size=4, lr=1e-3, grad_accum=accum, checkpoint_every=2)
result = train(model, tokenizer, load_local_corpus(data_dir)[:64], partial(tokenize, tokenizer, max_length=32),
               objective, budget, 0, out / "run")
rows = sb.loss_rows(result.log, torch.tensor(model.loss_log), targets, accum, True)
torch.save({"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "rows": rows},
           out / f"rank{world()[0]}.pt")
"""


def test_two_process_ddp_pretraining_equals_one_process_with_accumulation(data_dir, tmp_path):
    """torchrun, 2 processes over gloo, against 1 process accumulating 2 micro-batches (dropout off): the same
    masks, the same weights after 3 steps, the same per-pair loss rows (averaged across the processes)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_smae.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_QUIET": "1"}
    for cmd in ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                 str(tmp_path / "ddp"), str(data_dir), "1"],
                [sys.executable, str(script), str(tmp_path / "single"), str(data_dir), "2"]):
        proc = subprocess.run(cmd, cwd=Path(sb.__file__).parents[1], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1, single = (torch.load(tmp_path / d / f"rank{r}.pt") for d, r in (("ddp", 0), ("ddp", 1),
                                                                                   ("single", 0)))
    for name, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][name]), f"{name} differs between the two processes"
        assert torch.allclose(value, single["state"][name], atol=1e-5), f"{name}: DDP != accumulation"
    assert rank0["rows"] == rank1["rows"]
    ddp, acc = as_frame(rank0["rows"]), as_frame(single["rows"])
    assert ddp.drop(columns="score").equals(acc.drop(columns="score")) and len(ddp) == 3 * 7  # 4 pairs, total, lr, norm
    assert ddp.score.to_numpy() == pytest.approx(acc.score.to_numpy(), abs=1e-5)
