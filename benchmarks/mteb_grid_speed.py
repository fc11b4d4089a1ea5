"""An mteb task over the whole layer x dim grid: one encode serving every cell vs the naive way.

    python benchmarks/mteb_grid_speed.py [--task mteb:FILE.py:CLASS] [--backbone minilm] [--dims 24,48,...]
                                         [--repeats 3]

Prints, for one mteb task (default: the local pair-classification task of examples/mteb_local_tasks.py) on the
default backbone, every layer x dim at fp32:
(a) one plain encode of the task's distinct texts at full size (last layer only), as any mteb run pays once;
(b) mteb's scoring of every cell, the vectors handed over ready (no encode): what no elastic evaluation can avoid;
(c) our grid through mteb (bench.evaluate.evaluate_grid: discovery run, one all-layer encode, every cell scored);
(d) the naive way: one mteb.evaluate per cell, each on a truly truncated model that encodes what mteb asks for.
Goal: (c) <= 1.1 x ((a) + (b)). Medians over --repeats (naive: once). Timings depend on the machine: run it on a
quiet one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from grid_speed import plain_encode, timed  # the same plain encode and timer (benchmarks/ is the script's path)
from transformers.utils import logging as hf_logging

from bench.encoder import Encoder
from bench.evaluate import evaluate_grid, grid
from bench.hub import Backbone
from bench.serving import resolve_eval
from bench.spec import EvalSpec
from bench.tasks import TASKS
from bench.tasks.mteb import CellEncoder, MtebTask, TextEncoder, from_file, model_meta, run_mteb
from bench.transforms import truncate
from methods import Checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mteb_local_tasks.py"




class TruncatedModel(TextEncoder):
    """The naive way's model: the first `layer` blocks, its vector cut to `dim` and re-normalized; it encodes every
    list of texts mteb asks for."""

    def __init__(self, backbone: str, layer: int, dim: int, spec: EvalSpec):
        self.encoder, self.dim, self.spec = Encoder.named(backbone, device="cpu", num_layers=layer), dim, spec
        self.mteb_model_meta = model_meta(f"naive-l{layer}-d{dim}", dim)

    def vectors(self, role: str, texts: list[str]) -> np.ndarray:
        last = self.encoder.vectors(texts, self.spec.max_seq_len, self.spec.batch_size)[-1]
        return truncate(last, self.dim, self.spec.normalize)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=f"mteb:{EXAMPLE}:TwitterParaphrasePairs")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--dims", help="comma list (default: halving from the full width)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_QUIET", "1")
    hf_logging.disable_progress_bar()  # the naive way loads a model per cell
    torch.manual_seed(0)
    spec = resolve_eval(EvalSpec(precisions=("fp32",), dims=tuple(int(d) for d in args.dims.split(",")) if args.dims
                                 else None), Backbone(args.backbone))  # the model's own pooling and prompts
    task = TASKS.get(args.task)
    data = task.load(None, spec)  # mteb loads the data and the discovery run records its texts (not timed)
    texts = task.texts(data, spec)
    encoder = Encoder.named(args.backbone, device="cpu")
    cells = grid(encoder.num_layers, encoder.hidden_size, spec)
    n_texts = sum(len(t) for t, _ in texts.values())
    encoder.vectors(next(iter(texts.values()))[0][:64], spec.max_seq_len, spec.batch_size)  # warm-up

    def one_encode():
        return [plain_encode(encoder, t, spec) for t, _ in texts.values()]

    ready = {role: encoder.vectors(t, max_len, spec.batch_size) for role, (t, max_len) in texts.items()}
    aux = task.prepare(data, texts)

    def scoring():  # mteb on every cell, its vectors already made
        for cell in cells:
            vectors = {r: truncate(v[cell.layer - 1], cell.dim, spec.normalize) for r, v in ready.items()}
            run_mteb(data.task, CellEncoder(vectors, aux["index"], "ready"), task.split, spec.batch_size)

    def ours():  # from scratch: a fresh discovery run, an empty encode cache
        fresh = MtebTask(args.task, data.task, None)
        with tempfile.TemporaryDirectory() as cache:
            evaluate_grid(encoder, Checkpoint(args.backbone, args.backbone), fresh, fresh.load(None, spec), spec,
                          cache_dir=Path(cache))

    def naive():  # one mteb.evaluate per cell, each a truly truncated model encoding what mteb asks for
        import mteb

        path, _, name = args.task[len("mteb:"):].rpartition(":")
        for cell in cells:
            fresh_task = from_file(path, name) if path.endswith(".py") else mteb.get_task(name)
            mteb.evaluate(TruncatedModel(args.backbone, cell.layer, cell.dim, spec), [fresh_task], cache=None,
                          show_progress_bar=False)

    a, b = timed(one_encode, args.repeats), timed(scoring, args.repeats)
    c, d = timed(ours, args.repeats), timed(naive, 1)
    goal = a + b
    print(f"{task.meta.display} ({task.meta.family}), {n_texts} distinct texts, {args.backbone} on "
          f"{torch.get_num_threads()} CPU threads, {len(cells)} cells (every layer x "
          f"{spec.dims or 'default dims'}), fp32")
    print(f"(a) one full-size encode (last layer only):      {a:8.2f} s")
    print(f"(b) mteb's scoring of every cell, vectors ready:  {b:8.2f} s")
    print(f"    (a) + (b):                                    {goal:8.2f} s   1.00x")
    print(f"(c) our grid through mteb, from one encode:       {c:8.2f} s   {c / goal:.2f}x   (goal <= 1.10x)")
    print(f"(d) naive: one mteb.evaluate per cell, encoding:  {d:8.2f} s   {d / goal:.2f}x")


if __name__ == "__main__":
    main()
