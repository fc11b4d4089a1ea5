"""What float16 storage of the encodings does to the scores: every cell of all-MiniLM-L6-v2 on STS-B and SciFact.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/fp16_scores.py --data-dir ../shared/data

A score comparison, not a timing. The reference suite's evaluation (bench/reproduce.py: the default suite's grid,
every layer x dims 16..384 x every precision, SciFact documents cut to 64 tokens) is scored twice per task from one
float32 encode: on the stored float32 vectors, and on the same vectors rounded to float16, which is exactly what
`store_dtype="float16"` stores (the encoder writes the same float32 batches and the cast rounds them; the script
checks that on the query side against a real float16 encode). Prints, per task and precision, the largest and mean
|float16 - float32| of the main metric over the cells, and how many cells moved at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.data import resolve_data_dir
from bench.encoder import Encoder, Texts
from bench.evaluate import cells_to_score, encode_cached
from bench.hub import cache_root
from bench.reproduce import reference_suite
from bench.storage import Plan, Storage, StoredLayers
from bench.tasks import TASKS

MAIN_METRIC = {"stsb": "spearman", "scifact": "ndcg@10"}


def encodings(encoder: Encoder, task, data, spec, cache: Path, storage: Storage) -> dict[str, np.ndarray]:
    return {name: encode_cached(encoder, f"backbone:{reference_suite().backbone}", f"{task.name}/{name}",
                                Texts(texts, max_len), Plan(spec.batch_size, storage), cache)[0]
            for name, (texts, max_len) in task.texts(data, spec).items()}


def scores(task, data, arrays: dict[str, np.ndarray], storage: Storage, cells, spec) -> dict[tuple, float]:
    """(layer, dim, precision) -> the task's main metric, for every cell and precision the task scores."""
    stored = {name: StoredLayers(v, storage.layers) for name, v in arrays.items()}
    aux = task.prepare(data, task.texts(data, spec))
    out = {}
    for cell in cells:
        for precision in (p for p in spec.precisions if p in task.meta.precisions):
            metrics, _ = task.score_cell(data, stored, aux, cell.layer, cell.dim, precision, spec)
            out[(cell.layer, cell.dim, precision)] = metrics[MAIN_METRIC[task.name]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, help="default: $BENCH_CACHE_DIR or ./cache")
    args = parser.parse_args()
    data_dir, cache = resolve_data_dir(args.data_dir), (args.cache_dir or cache_root()) / "encodings"
    suite = reference_suite()
    spec = suite.eval
    encoder = Encoder.named(suite.backbone, spec.pooling, device="cpu")
    cells = cells_to_score(encoder.num_layers, encoder.hidden_size, spec)
    storage = Storage.for_cells(cells, "float32")
    print(f"float16 vs float32 storage, {suite.backbone} (stored: layers {storage.layers}, dims <= {storage.width}), "
          f"{len(cells)} cells per precision; |change| of the main metric (x100)")
    print(f"{'task':8s} {'metric':9s} {'precision':15s} {'max':>8s} {'mean':>8s} {'moved':>7s}  worst cell")
    for name in MAIN_METRIC:
        task = TASKS.get(name)
        data = task.load(data_dir, spec)
        fp32 = encodings(encoder, task, data, spec, cache, storage)
        fp16 = {side: np.asarray(v).astype(np.float16) for side, v in fp32.items()}
        if name == "scifact":  # what float16 storage writes is the rounded float32 encode, bit for bit
            texts, max_len = task.texts(data, spec)["queries"]
            real, _ = encode_cached(encoder, f"backbone:{suite.backbone}", "scifact/queries", Texts(texts, max_len),
                                    Plan(spec.batch_size, Storage(storage.layers, storage.width, "float16")), cache)
            assert np.array_equal(np.asarray(real), fp16["queries"]), "float16 storage != rounded float32"
        base = scores(task, data, fp32, storage, cells, spec)
        half = scores(task, data, fp16, storage, cells, spec)
        for precision in dict.fromkeys(p for _, _, p in base):
            keys = [k for k in base if k[2] == precision]
            change = np.array([abs(half[k] - base[k]) for k in keys])
            worst = keys[int(change.argmax())]
            print(f"{name:8s} {MAIN_METRIC[name]:9s} {precision:15s} {change.max():8.4f} {change.mean():8.4f} "
                  f"{int((change > 0).sum()):3d}/{len(keys):<3d}  ({worst[0]},{worst[1]}) "
                  f"{base[worst]:.4f} -> {half[worst]:.4f}")


if __name__ == "__main__":
    main()
