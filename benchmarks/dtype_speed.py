"""The cost of bf16 against fp32 on this machine: encode time, training-step time, and the scores it moves.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dtype_speed.py [--data-dir DIR] [--quick]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dtype_speed.py --suite default --bf16-results runs-bf16 \
        [--fp32-results results] [--run]

A timing: run it on a quiet machine. For the backbone (default all-MiniLM-L6-v2, offline):
- encode: `Encoder.encode` of the first --docs SciFact documents at --doc-len tokens, every layer, batch 64, in
  fp32, in bf16 as `bench run --dtype bf16` runs it (autocast over float32 weights) and with the transformer cast to
  bf16 (the alternative: norms and softmax in bf16 too, no per-batch weight casts); --repeats rounds, the variants
  interleaved within each round (a load change hits them alike); medians, and each bf16 variant's ratio to fp32;
- train step: forward + backward + clipping + AdamW of the default suite's starbucks-srl objective at its budget
  (16 SNLI triplets, 64 tokens), fp32 and bf16 autocast on two copies of the model, steps interleaved; medians of
  --train-steps steps after one warm-up step each;
- drift: STS-B test encoded once in each dtype (the pretrained backbone), every layer x dim x precision of the
  default suite's grid scored on both; the largest |bf16 - fp32| of Spearman (x100) per precision, and its cell.
On a CPU without native bf16 (CPU flags avx512_bf16 / amx_bf16) torch emulates it: the script says so and still
measures, which shows why `bench run --dtype bf16` refuses there.

`--suite default`: a bf16 run of the default suite (--bf16-results; `--run` makes it there first with
`bench run --suite default --dtype bf16`) against the fp32 results (--fp32-results, default: the committed results/):
per diagonal cell of the paper table (fp32 precision, main metric x100) bf16 minus fp32 beside the seed-to-seed
difference of the fp32 runs (max - min over seeds, where a cell has 2 or more; else none), then whether any
significance mark of the paper tables (bench/report: tests against the reference method) appears or disappears.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers

from bench.data import resolve_data_dir
from bench.data.pairs import load_triplets
from bench.devices import autocast, cpu_has_native_bf16, pick_device
from bench.encoder import Encoder, Texts
from bench.evaluate import cells_to_score
from bench.loop import make_optimizer
from bench.hub import Backbone, load_model
from bench.losses import base_loss
from bench.serving import resolve_pooling
from bench.spec import EvalSpec
from bench.storage import Plan, Storage, StoredLayers, encode_in_memory
from bench.suites import default
from bench.tasks import TASKS
from bench.train import TextCollate, to_device
from methods import METHODS

ENCODE_BATCH = 64


def native_line(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda bf16 supported: {torch.cuda.is_bf16_supported()}"
    if cpu_has_native_bf16():
        return "cpu native bf16 (avx512_bf16 or amx_bf16): yes"
    return ("cpu native bf16 (avx512_bf16 or amx_bf16): NO, bf16 is emulated here, so its times are not those of a "
            "CPU that computes it (bench run --dtype bf16 refuses on this CPU)")


def timed(device: torch.device, work) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def encode_ratios(backbone: str, docs: list[str], doc_len: int, repeats: int, device: torch.device) -> None:
    """fp32, bf16 autocast and the bf16-cast transformer, interleaved per round; medians and ratios."""
    plain = Encoder.named(backbone, device=str(device))
    cast = Encoder.named(backbone, device=str(device))
    cast.model.to(torch.bfloat16)  # pooling and head stay float32: Encoder casts the hidden states back
    variants = {"fp32": (plain, "fp32"), "bf16 autocast": (plain, "bf16"), "bf16 cast": (cast, "fp32")}
    seconds = {name: [] for name in variants}
    for round_ in range(repeats + 1):  # round 0 warms up (kernels, allocator, weight casts)
        for name, (encoder, dtype) in variants.items():
            encoder.dtype = dtype
            texts = docs[:ENCODE_BATCH] if round_ == 0 else docs
            spent = timed(device, lambda: encoder.vectors(texts, doc_len, ENCODE_BATCH))
            if round_:
                seconds[name].append(spent)
    base = statistics.median(seconds["fp32"])
    print(f"encode {len(docs)} SciFact documents at {doc_len} tokens, every layer, batch {ENCODE_BATCH}, "
          f"medians of {repeats}:")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:14s} {median:8.2f} s   ratio to fp32 {median / base:.2f}")


def train_ratio(backbone: str, data_dir: Path, steps: int, device: torch.device) -> None:
    """The default suite's starbucks-srl step at its budget, fp32 and bf16 autocast on two copies, interleaved."""
    budget = default().budget
    models, optimizers = {}, {}
    for dtype in ("fp32", "bf16"):
        model, tokenizer = load_model(Backbone(backbone))
        models[dtype] = model.to(device).train()
        optimizers[dtype] = make_optimizer(model, budget)
    srl = METHODS.get("starbucks-srl")()
    layers, hidden = models["fp32"].config.num_hidden_layers, models["fp32"].config.hidden_size
    pooling = resolve_pooling("auto", Backbone(backbone))
    objective = srl.jobs(srl.Params(), layers, hidden, base_loss("triplets"), pooling)[0].objective
    collate, triplets = TextCollate(tokenizer, budget.max_seq_len), load_triplets(data_dir)
    seconds = {dtype: [] for dtype in models}
    for step in range(steps + 1):  # step 0 warms up
        examples = [(triplets[(step * budget.batch_size + i) % len(triplets)], None) for i in range(budget.batch_size)]
        batch = to_device(collate(examples), device)
        for dtype, model in models.items():
            def one_step():
                with autocast(device, dtype):
                    loss = objective(model, batch, torch.Generator().manual_seed(step))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), budget.max_grad_norm)
                optimizers[dtype].step()
                optimizers[dtype].zero_grad(set_to_none=True)
            spent = timed(device, one_step)
            if step:
                seconds[dtype].append(spent)
    fp32, bf16 = statistics.median(seconds["fp32"]), statistics.median(seconds["bf16"])
    print(f"train step (starbucks-srl, {budget.batch_size} triplets at {budget.max_seq_len} tokens, medians of "
          f"{steps}): fp32 {fp32:.3f} s, bf16 {bf16:.3f} s, ratio {bf16 / fp32:.2f}")


def sts_drift(backbone: str, data_dir: Path, max_pairs: int | None, device: torch.device) -> None:
    """Every cell of the grid scored from one fp32 and one bf16 encode of STS-B test."""
    spec = default().eval if backbone == default().backbone else EvalSpec(example_cells=None)
    spec = replace(spec, pooling=resolve_pooling(spec.pooling, Backbone(backbone)), max_pairs=max_pairs)
    task = TASKS.get("stsb")
    data = task.load(data_dir, spec)
    encoder = Encoder.named(backbone, spec.pooling, device=str(device))
    cells = cells_to_score(encoder.num_layers, encoder.width, spec)
    storage = Storage.for_cells(cells, "float32")
    texts = task.texts(data, spec)
    aux = task.prepare(data, texts)
    scores = {}
    for dtype in ("fp32", "bf16"):
        encoder.dtype = dtype
        arrays = {name: StoredLayers(encode_in_memory(encoder, Texts(t, max_len), Plan(spec.batch_size, storage),
                                                      name)[0], storage.layers) for name, (t, max_len) in texts.items()}
        scores[dtype] = {(c.layer, c.dim, p): task.score_cell(data, arrays, aux, c.layer, c.dim, p, spec)[0]["spearman"]
                         for c in cells for p in spec.precisions if p in task.meta.precisions}
    print(f"STS-B test ({len(data)} pairs), {len(cells)} cells x precisions, Spearman x100, "
          "|bf16 - fp32|:")
    for precision in dict.fromkeys(p for _, _, p in scores["fp32"]):
        keys = [k for k in scores["fp32"] if k[2] == precision]
        change = np.array([abs(scores["bf16"][k] - scores["fp32"][k]) for k in keys])
        worst = keys[int(change.argmax())]
        print(f"  {precision:15s} max {change.max():.3f} at ({worst[0]}, {worst[1]}), mean {change.mean():.3f}")
    every = [abs(scores["bf16"][k] - scores["fp32"][k]) for k in scores["fp32"]]
    print(f"  largest over the whole grid: {max(every):.3f}")


# ---- --suite default ---------------------------------------------------------------------------------------------

def diagonal_scores(results_dir: Path) -> pd.DataFrame:
    """Main-metric rows (x100, as stored) of each backbone's paper-table diagonal at fp32, per seed."""
    from bench.report import tables
    from bench.results import load_results

    frame = load_results(results_dir)
    q, parts = tables.quality_rows(frame), []
    for backbone, cells in tables.by_backbone(tables.cell_stats(frame)):
        sizes = tables.target_sizes(cells)
        part = q[(q["backbone"] == backbone) & (q["precision"] == "fp32")]
        parts.append(part[[(int(l), int(d)) in sizes for l, d in zip(part["layer"], part["dim"])]])
    return pd.concat(parts)[["backbone", "method", "task", "layer", "dim", "seed", "score"]]


def paper_marks(results_dir: Path) -> set[tuple]:
    """(backbone, precision, method, layer, dim, task) of every significance mark the report's paper tables carry,
    computed as bench.report.build_report computes them."""
    from bench import report
    from bench.report import notes, tables
    from bench.results import load_results

    frame = load_results(results_dir, examples=True)
    cells = tables.cell_stats(frame)
    sizes = {backbone: tables.target_sizes(part) for backbone, part in tables.by_backbone(cells)}
    sig = report._statistics(frame, sizes)
    marks = set()
    for backbone in sizes:
        part = report._at_sizes(sig[sig["backbone"] == backbone], sizes[backbone])
        for precision in sorted(set(part["precision"])):
            marks |= {(backbone, precision, *key) for key in notes.significance_marks(part, precision)}
    return marks


def compare_suite(bf16_dir: Path, fp32_dir: Path) -> None:
    key = ["backbone", "method", "task", "layer", "dim"]
    fp32, bf16 = diagonal_scores(fp32_dir), diagonal_scores(bf16_dir)
    spread = fp32.groupby(key)["score"].agg(lambda s: s.max() - s.min() if len(s) > 1 else np.nan)
    both = bf16.groupby(key)["score"].mean().rename("bf16").to_frame().join(
        fp32.groupby(key)["score"].mean().rename("fp32"), how="inner").join(spread.rename("seeds"))
    print(f"diagonal cells, fp32 precision, main metric x100: {bf16_dir} (bf16) - {fp32_dir} (fp32)")
    print(f"  {'backbone':16s} {'method':20s} {'task':8s} {'cell':9s} {'bf16-fp32':>9s}  seed-to-seed")
    for (backbone, method, task, layer, dim), row in both.iterrows():
        seeds = "none (1 seed)" if np.isnan(row["seeds"]) else f"{row['seeds']:.3f}"
        print(f"  {backbone:16s} {method:20s} {task:8s} {f'({layer},{dim})':9s} {row['bf16'] - row['fp32']:+9.3f}  "
              f"{seeds}")
    diff = (both["bf16"] - both["fp32"]).abs()
    print(f"  largest |bf16 - fp32|: {diff.max():.3f} over {len(both)} cells")
    before, after = paper_marks(fp32_dir), paper_marks(bf16_dir)
    gone, new = sorted(before - after), sorted(after - before)
    print(f"paper-table significance marks: {len(before)} at fp32, {len(after)} at bf16; "
          + ("none changes" if not gone and not new else f"{len(gone)} lost, {len(new)} gained"))
    for label, marks in (("lost", gone), ("gained", new)):
        for backbone, precision, method, layer, dim, task in marks:
            print(f"  {label}: {method} {task} ({layer},{dim}) {precision} [{backbone}]")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=default().backbone)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--docs", type=int, default=1024, help="SciFact documents to encode (default 1024)")
    parser.add_argument("--doc-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed encode rounds (default 3)")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps per dtype (default 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes (64 docs, 1 round, 2 steps, 200 pairs): "
                                                             "to see that it runs, not for figures")
    parser.add_argument("--suite", choices=("default",), help="compare a bf16 run of the suite with fp32 results")
    parser.add_argument("--bf16-results", type=Path, help="--suite: the bf16 run's results folder")
    parser.add_argument("--fp32-results", type=Path, default=Path("results"), help="--suite: default results/")
    parser.add_argument("--run", action="store_true", help="--suite: run the bf16 suite into --bf16-results first")
    args = parser.parse_args(argv)
    transformers.logging.disable_progress_bar()  # no "Loading weights" bars between the figures
    data_dir = resolve_data_dir(args.data_dir)
    if args.suite:
        if args.bf16_results is None:
            parser.error("--suite needs --bf16-results DIR (with --run to make that run there)")
        if args.run:
            from bench.cli import main as bench_main

            code = bench_main(["run", "--suite", args.suite, "--dtype", "bf16", "--data-dir", str(data_dir),
                               "--results-dir", str(args.bf16_results)])
            if code:
                raise SystemExit(code)
        compare_suite(args.bf16_results, args.fp32_results)
        return
    docs_n, repeats, steps, pairs = (64, 1, 2, 200) if args.quick else (args.docs, args.repeats, args.train_steps,
                                                                        None)
    device = pick_device(args.device)
    print(f"{args.backbone} on {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          + native_line(device))
    scifact = TASKS.get("scifact")
    spec = EvalSpec(max_doc_len=args.doc_len)
    docs = scifact.texts(scifact.load(data_dir, spec), spec)["corpus"][0][:docs_n]
    encode_ratios(args.backbone, docs, args.doc_len, repeats, device)
    train_ratio(args.backbone, data_dir, steps, device)
    sts_drift(args.backbone, data_dir, pairs, device)


if __name__ == "__main__":
    main()
