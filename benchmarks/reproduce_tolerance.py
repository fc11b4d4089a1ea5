"""How far float noise moves the reference suite's scores, against `bench reproduce`'s tolerances.

On one machine a CPU run is bit-identical, but another CPU (other SIMD kernels, another BLAS) computes the same
numbers with errors of a few float32 ulps. Two probes, each printing per metric and precision the largest change
next to the tolerance (a tolerance should sit well above the change and still catch real drift):
- embeddings: encode the reference suite's pretrained runs once (cached), multiply every coordinate by
  (1 + noise * N(0, 1)), rescore every cell;
- training: run the reference suite's smoke training methods from the tiny random BERT and from a copy of it
  whose weights got the same relative noise (a stand-in for a machine whose kernels round differently).

    .venv/bin/python benchmarks/reproduce_tolerance.py --data-dir ../shared/data [--noise 1e-6,1e-5] [--layers 2,4,6]
        [--probes embeddings,training]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.backbone import Encoder, cache_root, resolve_backbone
from bench.evaluate import encode_cached, grid
from bench.reproduce import rerun, reference_specs, tolerance
from bench.tasks import TASKS


def score_all(task, data, arrays, aux, cells, spec) -> dict:
    out = {}
    for cell in cells:
        for precision in spec.precisions:
            metrics, _ = task.score_cell(data, arrays, aux, cell.layer, cell.dim, precision, spec)
            out.update({(cell.layer, cell.dim, precision, m): s for m, s in metrics.items()
                        if tolerance(m, precision) is not None})
    return out


def embedding_probe(args, levels) -> dict:
    cache = (args.cache_dir or cache_root()) / "encodings"
    worst: dict = defaultdict(float)  # (noise, metric, precision) -> max |change|
    for spec in (s for s in reference_specs() if s.method == "pretrained"):
        ev = spec.eval if args.layers is None else replace(spec.eval, layers=tuple(map(int, args.layers.split(","))))
        task = TASKS.get(spec.task)
        data = task.load(args.data_dir, ev)
        encoder = Encoder.load(spec.backbone, ev.pooling, "cpu")
        texts = task.texts(data, ev)
        arrays = {name: np.asarray(encode_cached(encoder, resolve_backbone(spec.backbone), name, t, n, ev.batch_size,
                                                 cache, role=task.role(name))) for name, (t, n) in texts.items()}
        aux = task.prepare(data, texts)
        cells = grid(encoder.num_layers, encoder.width, ev)
        base = score_all(task, data, arrays, aux, cells, ev)
        for level in levels:
            rng = np.random.default_rng(0)
            noisy = {k: (v * (1 + level * rng.standard_normal(v.shape))).astype(np.float32) for k, v in arrays.items()}
            for (layer, dim, precision, metric), score in score_all(task, data, noisy, aux, cells, ev).items():
                change = abs(score - base[(layer, dim, precision, metric)])
                worst[(level, metric, precision)] = max(worst[(level, metric, precision)], change)
    return worst


def perturbed_copy(model_dir: str, out: Path, level: float) -> str:
    from transformers import AutoModel, AutoTokenizer
    import torch

    model = AutoModel.from_pretrained(model_dir)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + level * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return str(out)


def training_probe(args, levels) -> dict:
    specs = [s for s in reference_specs() if s.method != "pretrained"]
    key = ["method", "task", "layer", "dim", "precision", "split", "metric", "step"]
    worst: dict = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        base = rerun(specs, args.data_dir, Path(tmp) / "base", "cpu")
        for level in levels:
            backbone = perturbed_copy(resolve_backbone(specs[0].backbone), Path(tmp) / f"model{level:g}", level)
            noisy = rerun([replace(s, backbone=backbone) for s in specs], args.data_dir, Path(tmp) / f"{level:g}", "cpu")
            both = base.merge(noisy, on=key, suffixes=("", "_noisy"))
            for metric, precision, a, b in zip(both["metric"], both["precision"], both["score"], both["score_noisy"]):
                if tolerance(metric, precision) is not None:
                    worst[(level, metric, precision)] = max(worst[(level, metric, precision)], abs(a - b))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None, help="encodings (default: $BENCH_CACHE_DIR or ./cache)")
    parser.add_argument("--noise", default="1e-6,1e-5", help="relative noise levels, comma list")
    parser.add_argument("--layers", default=None, help="embedding probe: only these layers (default: every layer)")
    parser.add_argument("--probes", default="embeddings,training")
    args = parser.parse_args()
    levels = [float(x) for x in args.noise.split(",")]
    probes = {"embeddings": embedding_probe, "training": training_probe}
    for name in args.probes.split(","):
        worst = probes[name](args, levels)
        print(f"\n{name} probe\n{'noise':>7} {'metric':<22} {'precision':<15} {'max |change|':>12} {'tolerance':>10}")
        for (level, metric, precision), change in sorted(worst.items()):
            print(f"{level:>7g} {metric:<22} {precision:<15} {change:>12.5f} {str(tolerance(metric, precision)):>10}")


if __name__ == "__main__":
    main()
