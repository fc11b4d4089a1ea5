"""Multi-process training through the same loop: torchrun with 2 processes over gloo on CPU.

Oracle: plain SGD written out in this file. With SGD (no momentum), no clipping, no weight decay and a constant
learning rate, a step is w <- w - lr x (mean over the step's micro-batches of the gradient of each micro-batch's
loss), and the trained weights are proportional to that mean; AdamW, which divides each update by the gradient's
own scale, and clipping would hide a gradient that is summed instead of averaged, or missing a micro-batch or a
process. Two runs of bench.train are held against it: 2 processes x 1 micro-batch (DDP) and 1 process x 2
accumulated micro-batches. Every rank is shown to have trained: each read its own examples (disjoint, and together
what the accumulating run read) and each ended with parameters moved from the initial ones and equal to the
other's. Dropout is off in this tiny model, so no random mask differs between the ways.

Tolerance 1e-5 on the relative L2 error of the weight change (over 3 steps at lr 0.5 the largest weight moves by
0.56). Measured by breaking the loop by hand: float noise 2.3e-7 on all three runs; a loss multiplied by the world
size (gradients summed over processes) 0.996 for DDP; the loss not divided by the accumulation steps 0.996 for
accumulation; rank 1's loss zeroed (one process's micro-batch missing) 0.61.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LR, STEPS, BATCH = 0.5, 3, 4

COMMON = """
import torch
from transformers import AutoTokenizer, BertConfig, BertModel
from bench.data.pairs import load_triplets
from bench.hub import resolve_backbone
from bench.losses import base_loss
from methods import METHODS


def tiny_model():
    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertModel(config), AutoTokenizer.from_pretrained(resolve_backbone("minilm"))


def srl_objective():
    srl = METHODS.get("starbucks-srl")()
    return srl.jobs(srl.Params(), 2, 64, base_loss("triplets"), "mean")[0].objective


def examples(data_dir):
    return [(t, None) for t in load_triplets(data_dir)[:64]]
"""

SCRIPT = COMMON + """
import sys
from pathlib import Path
from bench.spec import Budget
from bench.dist import world
from bench.train import TextCollate, train

out, data_dir, accum, lr, steps, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), \\
    int(sys.argv[5]), int(sys.argv[6])
model, tokenizer = tiny_model()
initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
seen = []  # the examples of every micro-batch this process read


class RecordingCollate(TextCollate):
    def __call__(self, batch_examples):
        seen.append([texts for texts, _ in batch_examples])
        return super().__call__(batch_examples)


budget = Budget(steps=steps, batch_size=batch, lr=lr, grad_accum=accum, checkpoint_every=2, optimizer="sgd",
                max_grad_norm=0.0, weight_decay=0.0, warmup_ratio=0.0, schedule="constant_with_warmup")
result = train(model, tokenizer, examples(data_dir), RecordingCollate(tokenizer, 32), srl_objective(), budget, 0,
               out / "run")
torch.save({"initial": initial, "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "log": list(result.log), "seen": seen}, out / f"rank{world()[0]}.pt")
"""


def run(cmd: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_QUIET": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def plain_sgd(data_dir, step_batches: list[list[list[tuple]]]) -> dict:
    """The oracle: for each step, the gradient of each micro-batch's loss, averaged, times lr, subtracted."""
    namespace: dict = {}
    exec(COMMON, namespace)  # the same model, tokenizer and objective as the trained runs
    model, tokenizer = namespace["tiny_model"]()
    objective = namespace["srl_objective"]()
    from bench.train import TextCollate

    collate = TextCollate(tokenizer, 32)
    model.train()
    for micro_batches in step_batches:
        model.zero_grad()
        losses = [objective(model, collate([(t, None) for t in texts]), torch.Generator().manual_seed(0))
                  for texts in micro_batches]
        torch.stack(losses).mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= LR * p.grad
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def change_error(state: dict, expected: dict, initial: dict) -> float:
    """Relative L2 error of the weight change from the initial weights, over all parameters."""
    diff = sum(((state[k] - expected[k]).double() ** 2).sum() for k in expected if expected[k].is_floating_point())
    moved = sum(((expected[k] - initial[k]).double() ** 2).sum() for k in expected if expected[k].is_floating_point())
    return float((diff / moved).sqrt())


def moved(state: dict, initial: dict) -> float:
    return max(float((state[k] - initial[k]).abs().max()) for k in state if state[k].is_floating_point())


def test_two_process_ddp_and_accumulation_equal_plain_sgd(data_dir, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    def args(accum: int) -> list[str]:
        return [str(data_dir), str(accum), str(LR), str(STEPS), str(BATCH)]

    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path / "ddp"), *args(1)], tmp_path)
    run([sys.executable, str(script), str(tmp_path / "single"), *args(2)], tmp_path)
    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "single" / "rank0.pt")

    # every rank read its own examples: per step, rank r read what the accumulating run's micro-batch r read
    assert len(rank0["seen"]) == len(rank1["seen"]) == STEPS and len(single["seen"]) == 2 * STEPS
    for step in range(STEPS):
        mine, theirs = rank0["seen"][step], rank1["seen"][step]
        assert not set(mine) & set(theirs), f"step {step + 1}: both ranks read the same examples"
        assert [mine, theirs] == single["seen"][2 * step:2 * step + 2]

    expected = plain_sgd(data_dir, [single["seen"][2 * s:2 * s + 2] for s in range(STEPS)])
    initial = rank0["initial"]
    for name, run_ in (("rank 0", rank0), ("rank 1", rank1), ("accumulation", single)):
        assert moved(run_["state"], initial) > 1e-3, f"{name}: parameters never moved"
        error = change_error(run_["state"], expected, initial)
        assert error < 1e-5, f"{name}: weights differ from plain SGD on the averaged gradient ({error:.2e})"
    for name, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][name]), f"{name} differs between the two processes"
    assert [r["score"] for r in rank0["log"]] == [r["score"] for r in rank1["log"]]
    assert torch.allclose(torch.tensor([r["score"] for r in rank0["log"]]),
                          torch.tensor([r["score"] for r in single["log"]]), atol=1e-5)
    assert (tmp_path / "ddp" / "run" / "final" / "model.safetensors").exists()


def test_bench_run_under_torchrun_trains_together_and_writes_once(data_dir, tmp_path):
    """`bench run` itself under torchrun: both processes train (DDP), one evaluates and writes the results."""
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bench.cli",
         "run", "--suite", "smoke", "--methods", "full", "--tasks", "stsb", "--data-dir", str(data_dir),
         "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"],
        tmp_path)
    from bench.results import load_results

    rows = load_results(tmp_path / "results")
    assert rows["run_id"].nunique() == 1 and len(list((tmp_path / "results").glob("*.csv.gz"))) == 1
    assert sorted(rows.loc[rows["metric"] == "loss", "step"]) == list(range(1, 9))
