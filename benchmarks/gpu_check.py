"""Encode throughput, training step time and model FLOPs utilization on one device, beside CPU figures.

    python benchmarks/gpu_check.py --device cuda --data-dir DIR [--cpu-figures cpu.json] [--results-dir DIR]
    python benchmarks/gpu_check.py --device cpu --texts 256 --train-steps 3 --json-out cpu.json   # CPU figures

The Python part of benchmarks/gpu_check.sh; it runs on CPU too (tests run it there with tiny sizes).
- encode: `Encoder.encode` (every layer, in --dtype: bf16 autocast on CUDA and fp32 on CPU by default) of --texts
  STS-B train sentences at --seq-len tokens, --batch-size per batch, after one warm-up batch; tokens/s counts real
  (non-padding) tokens.
- train step: forward + backward + clipping + AdamW of the `starbucks-srl` objective (every target from one forward
  pass per column, KL to the full model) on --train-batch SNLI triplets at 64 tokens, in --dtype, as
  bench/train.py runs it; the median of --train-steps steps after 2 warm-up steps.
- MFU (model FLOPs utilization) = model FLOP/s / the device's peak. Model FLOPs: 2 x N x tokens for inference and
  6 x N x tokens for training (forward 2N, backward 4N per token), N = the parameters outside the embedding tables
  and the pooler (those do no per-token matmul), real tokens only; attention's score and value products (about
  4 x layers x seq x hidden per token) are left out, as the usual 6N rule does, so MFU is slightly understated. The
  peak is the dense bf16 tensor-core figure of the GPU's data sheet (PEAK_BF16_TFLOPS, looked up by the name
  torch.cuda.get_device_name() gives; --peak-tflops overrides it, and gives CPU runs an MFU too).
With --results-dir, first a summary of the runs there (the smoke suite and default-suite slice of gpu_check.sh).
Timings synchronize CUDA before reading the clock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.data import resolve_data_dir
from bench.data.pairs import load_triplets
from bench.data.sts import load_stsb
from bench.devices import autocast, pick_device
from bench.encoder import Encoder
from bench.hub import Backbone, load_model
from bench.losses import base_loss
from bench.train import TextCollate, to_device
from methods import METHODS

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s; the first name found in
# torch.cuda.get_device_name() wins, so the longer names come first.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.4, "H100": 989.4, "GH200": 989.4, "B200": 2250.0,
    "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2,
    "RTX A6000": 154.8,
}
FIGURES = ("encode tokens/s", "encode MFU", "train step ms", "train tokens/s", "train MFU")
TRAIN_MAX_LEN = 64


def peak_tflops(device_name: str) -> float | None:
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name in device_name:
            return peak
    return None


def matmul_params(model: torch.nn.Module) -> int:
    """N of the FLOP formulas: parameters outside the embedding tables and the pooler."""
    return sum(p.numel() for name, p in model.named_parameters()
               if "embeddings" not in name and not name.startswith("pooler"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mfu(flops_per_s: float, peak: float | None) -> float | None:
    return None if peak is None else flops_per_s / (peak * 1e12)


def measure_encode(encoder: Encoder, texts: list[str], seq_len: int, batch_size: int, peak: float | None) -> dict:
    tokens = sum(len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"])
    encoder.vectors(texts[:batch_size], seq_len, batch_size)  # warm-up: kernels, allocator
    synchronize(encoder.device)
    t0 = time.perf_counter()
    encoder.vectors(texts, seq_len, batch_size)
    synchronize(encoder.device)
    seconds = time.perf_counter() - t0
    flops = 2 * matmul_params(encoder.model) * tokens
    return {"texts": len(texts), "tokens": tokens, "seconds": seconds, "encode tokens/s": tokens / seconds,
            "encode MFU": mfu(flops / seconds, peak)}


def measure_train(backbone: str, data_dir: Path, device: torch.device, batch: int, steps: int,
                  peak: float | None, dtype: str = "fp32") -> dict:
    model, tokenizer = load_model(Backbone(backbone))
    model.to(device).train()
    num_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    srl = METHODS.get("starbucks-srl")()
    objective = srl.jobs(srl.Params(), num_layers, hidden, base_loss("triplets"), "mean")[0].objective
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    collate = TextCollate(tokenizer, TRAIN_MAX_LEN)
    triplets = load_triplets(data_dir)
    generator = torch.Generator().manual_seed(0)
    times, tokens = [], []
    for step in range(steps + 2):
        examples = [(triplets[(step * batch + i) % len(triplets)], None) for i in range(batch)]
        data = to_device(collate(examples), device)
        synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = objective(model, data, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= 2:
            times.append(time.perf_counter() - t0)
            tokens.append(sum(int(column["attention_mask"].sum()) for column in data["columns"]))
    step_s, step_tokens = statistics.median(times), statistics.median(tokens)
    return {"batch": batch, "steps": steps, "step tokens": step_tokens, "train step ms": 1000 * step_s,
            "train tokens/s": step_tokens / step_s,
            "train MFU": mfu(6 * matmul_params(model) * step_tokens / step_s, peak)}


def summarize_results(results_dir: Path) -> None:
    """Per run: device, the full-size fp32 main metric and the run's seconds."""
    from bench.catalog import TASK_META
    from bench.results import load_results

    frame = load_results(results_dir)
    print(f"runs in {results_dir}:")
    for (method, task), run in frame.groupby(["method", "task"], sort=True):
        metric = TASK_META[task].main_metric
        cells = run[(run["metric"] == metric) & (run["precision"] == "fp32")]
        full = cells[(cells["layer"] == cells["layer"].max()) & (cells["dim"] == cells["dim"].max())]
        seconds = run.loc[run["metric"] == "run_seconds", "score"]
        print(f"  {method:14s} {task:8s} {run['device'].iloc[0]:8s} {metric} at ({full['layer'].iloc[0]}, "
              f"{full['dim'].iloc[0]}) {full['score'].iloc[0]:6.2f}   run {seconds.iloc[0]:6.1f} s")


def format_figure(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if "MFU" in name:
        return f"{100 * value:.1f}%"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def print_side_by_side(here: dict, cpu: dict | None) -> None:
    columns = [here] + ([cpu] if cpu is not None and cpu["device"] != here["device"] else [])
    print(f"\n{'figure':18s}" + "".join(f"{c['device']:>16s}" for c in columns))
    for name in FIGURES:
        print(f"{name:18s}" + "".join(f"{format_figure(name, c[name]):>16s}" for c in columns))
    if len(columns) == 2:
        ratio = here["encode tokens/s"] / cpu["encode tokens/s"], cpu["train step ms"] / here["train step ms"]
        print(f"{here['device']} / cpu: encode {ratio[0]:.1f}x, train step {ratio[1]:.1f}x (cpu figures: "
              f"{cpu['backbone']}, {cpu['texts']} texts, batch {cpu['batch']})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--texts", type=int, default=8192, help="texts to encode (default 8192)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256, help="encode batch (default 256)")
    parser.add_argument("--train-batch", type=int, default=128, help="triplets per training step (default 128)")
    parser.add_argument("--train-steps", type=int, default=20, help="timed training steps (default 20)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"),
                        help="compute dtype (default: bf16 on CUDA, the peaks' dtype; fp32 on CPU)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for a GPU not in the table")
    parser.add_argument("--cpu-figures", type=Path, help="JSON of an earlier `--device cpu --json-out` run")
    parser.add_argument("--json-out", type=Path, help="write this run's figures here")
    parser.add_argument("--results-dir", type=Path, action="append", default=[],
                        help="summarize the runs in this results folder first (repeatable)")
    args = parser.parse_args(argv)
    for folder in args.results_dir:
        summarize_results(folder)
    device = pick_device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    print(f"device: {device.type} ({name}), torch {torch.__version__}, dtype {dtype}, "
          f"peak {'unknown (no MFU)' if peak is None else f'{peak:g} TFLOP/s dense bf16'}")
    data_dir = resolve_data_dir(args.data_dir)
    train_pairs = load_stsb(data_dir, "train")
    sentences = list(dict.fromkeys(train_pairs.sentences1 + train_pairs.sentences2))
    texts = (sentences * (args.texts // len(sentences) + 1))[:args.texts]
    encoder = Encoder.named(args.backbone, device=str(device), dtype=dtype)
    print(f"model FLOPs: inference 2 x N x tokens, training 6 x N x tokens; N = {matmul_params(encoder.model):,} "
          f"parameters of {args.backbone} outside the embeddings and pooler; real tokens only")
    encode = measure_encode(encoder, texts, args.seq_len, args.batch_size, peak)
    print(f"encode: {encode['texts']} texts, {encode['tokens']:,} tokens in {encode['seconds']:.2f} s: "
          f"{encode['encode tokens/s']:,.0f} tokens/s, MFU {format_figure('MFU', encode['encode MFU'])}")
    del encoder
    train = measure_train(args.backbone, data_dir, device, args.train_batch, args.train_steps, peak, dtype)
    print(f"train step (starbucks-srl, {train['batch']} triplets, median of {train['steps']}): "
          f"{train['train step ms']:.1f} ms, {train['step tokens']:,.0f} tokens, {train['train tokens/s']:,.0f} "
          f"tokens/s, MFU {format_figure('MFU', train['train MFU'])}")
    here = {"device": device.type, "device_name": name, "backbone": args.backbone, "dtype": dtype, **encode, **train}
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(here, indent=1))
    cpu = json.loads(args.cpu_figures.read_text()) if args.cpu_figures is not None else None
    print_side_by_side(here, cpu)


if __name__ == "__main__":
    main()
