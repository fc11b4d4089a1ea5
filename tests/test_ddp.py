"""Multi-process training through the same loop: torchrun with 2 processes over gloo on CPU.

Oracle: a single process with the same global batch as 2 accumulated micro-batches. The data of a step is the same
(tests/test_train.py), DDP averages the two processes' gradients as accumulation averages the micro-batches', so
the trained weights agree to float precision; and the two processes' parameters are identical (kept in sync).
Dropout is off in this tiny model, so no random mask differs between the two ways.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from pathlib import Path
import torch
from transformers import AutoTokenizer, BertConfig, BertModel
from bench.backbone import resolve_backbone
from bench.data.pairs import load_triplets
from bench.losses import base_loss
from bench.spec import Budget
from bench.train import TextCollate, train, world
from methods import METHODS

out, data_dir, accum = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
model, tokenizer = BertModel(config), AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
srl = METHODS.get("starbucks-srl")()
objective = srl.jobs(srl.Params(), 2, 64, base_loss("triplets"), "mean")[0].objective
examples = [(t, None) for t in load_triplets(data_dir)[:64]]
budget = Budget(steps=3, batch_size=4, lr=1e-3, grad_accum=accum, checkpoint_every=2)
result = train(model, tokenizer, examples, TextCollate(tokenizer, 32), objective, budget, 0, out / "run")
torch.save({"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "log": list(result.log)},
           out / f"rank{world()[0]}.pt")
"""


def run(cmd: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_QUIET": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_ddp_equals_one_process_with_accumulation(data_dir, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path / "ddp"), str(data_dir), "1"], tmp_path)
    run([sys.executable, str(script), str(tmp_path / "single"), str(data_dir), "2"], tmp_path)
    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "single" / "rank0.pt")
    for name, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][name]), f"{name} differs between the two processes"
        assert torch.allclose(value, single["state"][name], atol=1e-5), f"{name}: DDP != accumulation"
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
    assert rows["run_id"].nunique() == 1 and len(list((tmp_path / "results").glob("*.csv"))) == 1
    assert sorted(rows.loc[rows["metric"] == "loss", "step"]) == list(range(1, 9))
