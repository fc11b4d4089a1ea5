"""The training loop: data order, determinism, exact resume after a kill, checkpoints, loss rows, bad configs, and
the training data (CoSENT on STS-B train against sentence-transformers; AllNLI from a fake hub)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file

from bench import BenchError
from bench.cli import main
from bench.data import fetch
from bench.data.pairs import load_training_set
from bench.encoder import Encoder
from bench.hub import Backbone, load_model
from bench.losses import base_loss
from bench.results import load_results
from bench.runner import make_specs, run_all
from bench.spec import Budget, RunSpec
from bench.suites import smoke, with_overrides
from bench.loop import ExampleOrder, micro_batch
from bench.train import TextCollate, train
from methods import METHODS, RunContext

REPO = Path(__file__).resolve().parents[1]


def test_a_step_reads_the_same_examples_for_any_split_between_accumulation_and_processes():
    """1 process x 2 accumulated micro-batches = 2 processes x 1: what makes DDP and accumulation interchangeable."""
    order = ExampleOrder(50, seed=3)
    for step in range(6):
        accumulated = [i for m in range(2)
                       for i in micro_batch(order, step, m, 0, 1, Budget(batch_size=4, grad_accum=2))]
        distributed = [i for r in range(2) for i in micro_batch(order, step, 0, r, 2, Budget(batch_size=4))]
        assert accumulated == distributed
    epoch = [order[p] for p in range(50)]
    assert sorted(epoch) == list(range(50)) and epoch != list(range(50))  # a shuffled permutation per epoch


def srl_objective(num_layers: int = 2, hidden: int = 64):
    srl = METHODS.get("starbucks-srl")()
    return srl.jobs(srl.Params(), num_layers, hidden, base_loss("triplets"), "mean")[0].objective


def train_tiny(data_dir: Path, out: Path, budget: Budget):
    model, tokenizer = load_model(Backbone("tiny-random-bert"))
    examples = [(t, None) for t in load_training_set(data_dir, "snli").texts[:200]]
    return train(model, tokenizer, examples, TextCollate(tokenizer, 32), srl_objective(), budget, 0, out)


def test_training_on_cpu_is_deterministic_and_writes_safetensors(data_dir, tmp_path):
    budget = Budget(steps=4, batch_size=8, lr=1e-4, checkpoint_every=2)
    first, second = train_tiny(data_dir, tmp_path / "a", budget), train_tiny(data_dir, tmp_path / "b", budget)
    assert [r["score"] for r in first.log] == [r["score"] for r in second.log]
    assert [r["step"] for r in first.log if r["metric"] == "loss"] == [1, 2, 3, 4]
    weights_a = load_file(first.model_dir / "model.safetensors")
    weights_b = load_file(second.model_dir / "model.safetensors")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert not list((tmp_path / "a").glob("step-*"))  # intermediate checkpoints go once the final one is written
    assert Encoder.named(str(first.model_dir)).num_layers == 2
    assert train_tiny(data_dir, tmp_path / "a", budget).log == first.log  # a finished folder is reused as it is


def test_lr_rows_follow_the_schedule_and_grad_norm_rows_are_the_norm_before_clipping(data_dir, tmp_path):
    """Oracles: the lr of step s is transformers' linear warmup/decay formula at s - 1 (the rate that step applied);
    the first step's grad_norm is the L2 norm of the gradients of the first batch's loss, computed here by hand on a
    fresh copy of the model. Clipping at a tiny max_grad_norm changes the weights, not the logged norm of step 1;
    with clipping off the norm is logged all the same."""
    budget = Budget(steps=5, batch_size=8, lr=1e-3, warmup_ratio=0.4, checkpoint_every=10)
    result = train_tiny(data_dir, tmp_path / "clip", budget)
    rows = {(r["metric"], r["step"]): r["score"] for r in result.log}
    warmup = 2  # ceil(0.4 * 5)
    expected_lr = [1e-3 * (s / warmup if s < warmup else (5 - s) / (5 - warmup)) for s in range(5)]
    assert [rows["lr", s] for s in range(1, 6)] == pytest.approx(expected_lr, rel=1e-12, abs=1e-15)

    model, tokenizer = load_model(Backbone("tiny-random-bert"))
    examples = [(t, None) for t in load_training_set(data_dir, "snli").texts[:200]]
    torch.manual_seed(0)
    first = [examples[i] for i in micro_batch(ExampleOrder(len(examples), 0), 0, 0, 0, 1, budget)]
    model.train()
    srl_objective()(model, TextCollate(tokenizer, 32)(first), torch.Generator().manual_seed(0)).backward()
    by_hand = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    assert rows["grad_norm", 1] == pytest.approx(by_hand.item(), rel=1e-5)

    unclipped = train_tiny(data_dir, tmp_path / "off", replace(budget, max_grad_norm=0.0))
    tiny = train_tiny(data_dir, tmp_path / "tiny", replace(budget, max_grad_norm=1e-3))
    norms = [[r["score"] for r in res.log if r["metric"] == "grad_norm"] for res in (result, unclipped, tiny)]
    assert norms[0][0] == norms[1][0] == norms[2][0] and all(len(n) == 5 for n in norms)
    assert norms[2][1:] != norms[0][1:]  # the clipped run moved differently after step 1


KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from dataclasses import replace
from pathlib import Path
import bench.train
from bench.runner import run_all
from bench.runner import make_specs
from bench.suites import smoke, with_overrides
from methods import RunContext

save = bench.train.save_checkpoint
def save_then_die(*args, **kwargs):  # a hard kill right after the first checkpoint: no cleanup, no finally
    save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
bench.train.save_checkpoint = save_then_die
specs = make_specs(with_overrides(smoke(), tasks=("stsb",)), sys.argv[4])
run_all(specs, RunContext(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), "cpu"))
"""

VOLATILE = ["created_utc", "git_sha"]


def comparable(frame):
    frame = frame[~frame["metric"].str.contains("seconds|_ms")].drop(columns=VOLATILE)  # timings vary
    return frame.sort_values(["run_id", "split", "metric", "layer", "dim", "precision", "step"]).reset_index(drop=True)


@pytest.mark.parametrize("method", ["2dmse", "separate"])
def test_a_killed_run_resumes_from_its_checkpoint_to_identical_rows(data_dir, tmp_path, monkeypatch, method):
    """Smoke budget: 8 steps, a checkpoint every 4. The killed run leaves step 4; the rerun trains steps 5..8 only
    and writes the same rows (CPU, same seed: identical scores and losses) as an uninterrupted run."""
    specs = make_specs(with_overrides(smoke(), tasks=("stsb",)), method)
    reference = tmp_path / "reference"
    run_all(specs, RunContext(data_dir, reference / "results", reference / "cache", "cpu"))

    killed = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(KILL_AFTER_CHECKPOINT)
    proc = subprocess.run([sys.executable, str(script), str(data_dir), str(killed / "results"), str(killed / "cache"),
                           method], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    checkpoints = list((killed / "cache" / "checkpoints").rglob("step-000004"))
    assert checkpoints and not list((killed / "cache" / "checkpoints").rglob("final"))

    from bench.train import EncoderTraining
    steps_run = []
    one_step = EncoderTraining.compute_gradients
    monkeypatch.setattr(EncoderTraining, "compute_gradients", lambda *a: steps_run.append(1) or one_step(*a))
    run_all(specs, RunContext(data_dir, killed / "results", killed / "cache", "cpu"))
    jobs = 2 if method == "separate" else 1
    assert len(steps_run) == 4 + 8 * (jobs - 1)  # the killed job resumed at step 5; the other trained in full
    now, expected = comparable(load_results(killed / "results")), comparable(load_results(reference / "results"))
    assert len(now) == len(expected) and now.equals(expected)
    train_rows = expected[expected["split"] == "train"]
    assert len(train_rows) == (3 * 8 + 1) * jobs  # and each job's count of dropped training examples
    assert set(train_rows["metric"]) == {"loss", "lr", "grad_norm", "train_examples_removed"}
    if method == "separate":  # each model's curve carries its cell
        assert set(zip(train_rows["layer"], train_rows["dim"])) == {(1, 32), (2, 64)}
    assert (load_results(reference / "results")["metric"] == "train_seconds").sum() == 1


def test_separate_models_hold_only_their_blocks_and_the_full_size_one_is_fulls(data_dir, tmp_path, monkeypatch):
    """Each `separate` model holds only its target's blocks; the full-size one is `full`'s checkpoint (same blocks,
    objective, budget and seed), so running `full` afterwards trains nothing and serves the same folder."""
    ctx = RunContext(data_dir, tmp_path / "r", tmp_path / "c")
    specs = make_specs(with_overrides(smoke(), tasks=("stsb",)), "separate,full")
    checkpoints = METHODS.get("separate")().checkpoints(specs[0], ctx)
    for ck in checkpoints:
        (cell,) = ck.targets
        assert ck.only_targets
        assert json.loads((Path(ck.model) / "config.json").read_text())["num_hidden_layers"] == cell.layer
    from bench.train import EncoderTraining
    monkeypatch.setattr(EncoderTraining, "compute_gradients", lambda *a: pytest.fail("full retrained separate's model"))
    (full,) = METHODS.get("full")().checkpoints(specs[1], ctx)
    assert full.model == checkpoints[-1].model and checkpoints[-1].targets == full.targets


def test_scored_pairs_train_with_sentence_transformers_cosent(data_dir):
    """Oracle: the `full` objective on an STS-B train batch equals CoSENTLoss computed by sentence-transformers on a
    SentenceTransformer wrapping the same model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from bench.hub import resolve_backbone

    st_model = SentenceTransformer(modules=[Transformer(resolve_backbone("tiny-random-bert"), max_seq_length=32),
                                            Pooling(64, "mean")], device="cpu").eval()
    data = load_training_set(data_dir, "stsb")
    assert data.kind == "scored-pairs" and len(data) + data.removed == 5749  # less those sharing an evaluation text
    examples = list(zip(data.texts[:16], data.labels[:16]))
    batch = TextCollate(st_model.tokenizer, 32)(examples)
    full = METHODS.get("full")()
    objective = full.jobs(full.Params(), 2, 64, base_loss("scored-pairs"), "mean")[0].objective
    ours = objective(st_model[0].auto_model, batch, torch.Generator())
    features = [st_model.tokenize([t[i] for t, _ in examples]) for i in range(2)]
    expected = CoSENTLoss(st_model)(features, torch.tensor(data.labels[:16]))
    assert ours.item() == pytest.approx(expected.item(), abs=1e-5)


def fake_all_nli(repo, config, revision):
    assert (repo, config) == ("sentence-transformers/all-nli", "triplet")
    return DatasetDict({"train": Dataset.from_dict({"anchor": ["a1", "a2"], "positive": ["p1", "p2"],
                                                    "negative": ["n1", "n2"]})})


def test_all_nli_comes_from_the_hub_as_triplets(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "load_hub", fake_all_nli)
    data = load_training_set(tmp_path, "all-nli")
    assert data.kind == "triplets" and data.texts == [("a1", "p1", "n1"), ("a2", "p2", "n2")]


def test_all_nli_offline_is_one_clear_line(tmp_path):
    with pytest.raises(BenchError, match="could not load sentence-transformers/all-nli") as err:
        load_training_set(tmp_path, "all-nli")
    assert "\n" not in str(err.value)


# ---- bad configs: one clear error line each -------------------------------------------------------------------------

def run_cli(args: list[str], data_dir: Path, tmp_path: Path, capsys) -> str:
    code = main(["run", "--suite", "smoke", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "c"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    return err


@pytest.mark.parametrize("args,message", [
    (["--methods", "fulll"], "error: unknown method 'fulll': did you mean 'full'?"),
    (["--methods", "mrl", "--steps", "0"], "error: method mrl trains, so the budget needs steps > 0; got 0"),
    (["--methods", "bebr", "--steps", "0"], "error: method bebr trains, so the budget needs steps > 0; got 0"),
    (["--methods", "mrl", "--steps", "-3"], "error: budget steps must be >= 0, got -3"),
    (["--methods", "mrl", "--train-data", "quora"], "error: unknown training data 'quora'; known: snli"),
])
def test_bad_run_configs_fail_with_one_line(args, message, data_dir, tmp_path, capsys):
    assert run_cli(args, data_dir, tmp_path, capsys).startswith(message)
    assert not (tmp_path / "r").exists()  # nothing ran


def test_empty_training_data_is_one_clear_line(data_dir, tmp_path):
    empty = tmp_path / "data"
    (empty / "snli_senteval").mkdir(parents=True)
    (empty / "snli_senteval" / "snli_triplets.tsv").write_text("split\tanchor\tpositive\tnegative\n")
    with pytest.raises(BenchError, match="snli_triplets.tsv is empty") as err:
        load_training_set(empty, "snli")
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="the training data is empty"):
        model, tokenizer = load_model(Backbone("tiny-random-bert"))
        train(model, tokenizer, [], TextCollate(tokenizer, 32), srl_objective(), Budget(steps=2), 0, tmp_path / "o")


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "budget batch_size must be positive, got 0"),
    ("grad_accum", -1, "budget grad_accum must be positive, got -1"),
    ("lr", 0.0, "budget lr must be positive, got 0.0"),
    ("schedule", "step", "unknown budget schedule 'step'; choose from linear, cosine, constant_with_warmup"),
    ("optimizer", "adam", "unknown budget optimizer 'adam'; choose from adamw, sgd"),
])
def test_bad_budgets_fail_with_one_line(field, value, message):
    with pytest.raises(BenchError, match=message):
        Budget(**{field: value})


def test_optimizer_joins_the_run_id_only_away_from_its_default():
    """Added after references were committed: AdamW (the only optimizer before) keeps every existing run id."""
    spec = RunSpec("full", "stsb", train_data="snli", budget=Budget(steps=2))
    assert "optimizer" not in spec.model_fields()["budget"]
    assert replace(spec, budget=Budget(steps=2, optimizer="adamw")).run_id == spec.run_id
    assert replace(spec, budget=Budget(steps=2, optimizer="sgd")).run_id != spec.run_id


def test_fewer_examples_than_a_batch_is_refused(tmp_path):
    model, tokenizer = load_model(Backbone("tiny-random-bert"))
    examples = [(("a", "b", "c"), None)] * 3
    with pytest.raises(BenchError, match="the training data has 3 examples, fewer than one batch of 8"):
        train(model, tokenizer, examples, TextCollate(tokenizer, 32), srl_objective(), Budget(steps=2, batch_size=8),
              0, tmp_path / "o")


# ---- suites -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suite,shape", [("smoke", (2, 64)), ("default", (6, 384)), ("cpu-full", (6, 384)),
                                         ("paper-sts", (12, 768))])
def test_each_suite_evaluates_the_targets_of_its_backbone(suite, shape):
    """The grid holds the target diagonal (so every method is scored at the same cells), and the budget trains."""
    from bench.suites import get_suite
    from methods.starbucks_srl import default_targets

    s = get_suite(suite)
    assert {t.dim for t in default_targets(*shape)} <= set(s.eval.dims) and s.budget.steps > 0


def test_bench_run_without_methods_runs_every_registered_method():
    from bench.cli import build_parser

    args = build_parser().parse_args(["run"])
    specs = make_specs(with_overrides(smoke(), tasks=("stsb",)), args.methods)
    assert sorted({s.method for s in specs}) == METHODS.names()
    assert all(s.budget.steps == smoke().budget.steps for s in specs if s.method != "pretrained")
