"""Peak memory of grid evaluation grows with the corpus's vectors, not its tokens: SciFact vs a 5x and 10x corpus.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/memory_scaling.py --data-dir ../shared/data

Each corpus size runs in a fresh subprocess that loads the encoder and calls bench.evaluate.evaluate_grid on the
whole default grid (every layer x default dims x all four precisions, all test queries). Encodings come from the
cache as memmaps, so the forward pass is not part of the measurement (encoding streams batch by batch into the
memmap). Linux only: the peak is the kernel's RSS high-water mark (VmHWM in /proc/self/status, the counter behind
ru_maxrss), reset through /proc/self/clear_refs once the model is loaded, so it is the grid's own peak. ru_maxrss
itself is not used: after a fork + exec it also holds the parent's RSS at spawn time, and loading the model
(imports included) peaks higher than grid evaluation of a small corpus does.

A k x corpus is SciFact's documents repeated k times with light perturbation: copy 0 is the real encoding,
copies 1-9 add Gaussian noise of 1% of the vectors' spread to every coordinate (and " [copy k]" to the text, so
each copy is its own document). The noise goes on the cached vectors rather than the text so that no 50,000-
document forward pass is needed; those vectors are cache entries under their own model ids in <cache>/memory_scaling.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.backbone import Encoder, cache_root
from bench.data import resolve_data_dir
from bench.data.beir import RetrievalSet
from bench.evaluate import encode_cached, evaluate_grid, texts_key
from bench.spec import EvalSpec
from bench.tasks import TASKS

SIZES = (1, 5, 10)  # three sizes: two points would fit any line
NOISE = 0.01


def repeated(data: RetrievalSet, copies: int) -> RetrievalSet:
    """The corpus `copies` times; copy k > 0 gets its own id and a marked text."""
    ids = [d if k == 0 else f"{d}#copy{k}" for k in range(copies) for d in data.corpus_ids]
    texts = [t if k == 0 else f"{t} [copy {k}]" for k in range(copies) for t in data.corpus_texts]
    return RetrievalSet(ids, texts, data.query_ids, data.query_texts, data.qrels)


def model_id(backbone: str, copies: int) -> str:
    return f"backbone:{backbone}" if copies == 1 else f"memory-benchmark:{backbone}:perturbed-x{copies}"


def cache_dir_for(cache: Path, copies: int) -> Path:
    return cache / "encodings" if copies == 1 else cache / "memory_scaling"


def write_perturbed(encoder: Encoder, backbone: str, data: RetrievalSet, real: dict, copies: int, cache: Path,
                    spec: EvalSpec) -> None:
    """Cache entries for the repeated corpus (real vectors + noise) and the unchanged queries."""
    big = repeated(data, copies)
    folder = cache_dir_for(cache, copies)
    folder.mkdir(parents=True, exist_ok=True)
    texts = TASKS.get("scifact").texts(big, spec)
    for name, (side_texts, max_len) in texts.items():
        tag = encoder.serving_tag(TASKS.get("scifact").role(name))
        path = folder / f"{texts_key(model_id(backbone, copies), tag, max_len, side_texts)}.npy"
        if path.exists():
            continue
        source = real[name]
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                        shape=(source.shape[0], len(side_texts), source.shape[2]))
        rng = np.random.default_rng(0)
        for layer in range(source.shape[0]):  # one layer at a time: this process stays small too
            vectors = np.asarray(source[layer])
            n = vectors.shape[0]
            for k in range(len(side_texts) // n):
                noise = NOISE * vectors.std() * rng.standard_normal(vectors.shape) if k else 0.0
                out[layer, k * n:(k + 1) * n] = vectors + noise
        out.flush()


def status_kib(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(backbone: str, data_dir: Path, cache: Path, copies: int) -> None:
    """One measurement, printed as a JSON line."""
    spec = EvalSpec()
    task = TASKS.get("scifact")
    data = repeated(task.load(data_dir, spec), copies)
    encoder = Encoder.load(backbone, spec.pooling, device="cpu")
    load_peak = status_kib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # high-water mark := resident now
    before = status_kib("VmRSS")
    rows, _ = evaluate_grid(encoder, model_id(backbone, copies), task, data, spec,
                            cache_dir=cache_dir_for(cache, copies))
    peak = status_kib("VmHWM")
    seconds = next(r["score"] for r in rows if r["metric"] == "grid_eval_seconds")
    print(json.dumps(dict(copies=copies, documents=len(data.corpus_ids), load_peak_kib=load_peak,
                          before_kib=before, peak_kib=peak,
                          cells=len({(r["layer"], r["dim"], r["precision"]) for r in rows if r.get("dim", -1) > 0}),
                          grid_seconds=seconds)))


def measure(backbone: str, data_dir: Path, cache: Path, copies: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(copies), "--backbone", backbone, "--data-dir", str(data_dir),
           "--cache-dir", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"child for {copies}x failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, help="default: $BENCH_CACHE_DIR or ./cache")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir, cache = resolve_data_dir(args.data_dir), (args.cache_dir or cache_root()).resolve()
    if args.child:
        return child(args.backbone, data_dir, cache, args.child)

    spec = EvalSpec()
    task = TASKS.get("scifact")
    data = task.load(data_dir, spec)
    encoder = Encoder.load(args.backbone, spec.pooling)
    real = {name: encode_cached(encoder, model_id(args.backbone, 1), f"scifact/{name}", texts, max_len,
                                spec.batch_size, cache_dir_for(cache, 1), role=task.role(name))
            for name, (texts, max_len) in task.texts(data, spec).items()}
    tokens = sum(len(ids) for ids in encoder.tokenizer(data.corpus_texts, truncation=True,
                                                       max_length=spec.max_doc_len)["input_ids"])
    for copies in SIZES[1:]:
        write_perturbed(encoder, args.backbone, data, real, copies, cache, spec)
    layers, hidden = encoder.num_layers, encoder.hidden_size
    del real, encoder

    results = [measure(args.backbone, data_dir, cache, copies) for copies in SIZES]
    print(f"grid evaluation of SciFact, {args.backbone}: peak RSS of a fresh process per corpus size "
          f"({results[0]['cells']} cells of layer x dim x precision, {len(data.query_ids)} queries)")
    print(f"{'corpus':>8s} {'documents':>10s} {'load peak':>10s} {'grid start':>11s} {'grid peak':>10s} "
          f"{'grid adds':>10s} {'vectors':>8s} {'token states':>13s} {'grid s':>7s}   (MiB)")
    for r in results:
        vectors = layers * r["documents"] * hidden * 4 / 2**20
        token_states = layers * tokens * r["copies"] * hidden * 4 / 2**20  # had we kept every token's states
        print(f"{r['copies']:>7d}x {r['documents']:10d} {r['load_peak_kib'] / 1024:10.0f} "
              f"{r['before_kib'] / 1024:11.0f} {r['peak_kib'] / 1024:10.0f} {(r['peak_kib'] - r['before_kib']) / 1024:10.0f} "
              f"{vectors:8.0f} {token_states:13.0f} {r['grid_seconds']:7.0f}")
    small, large = results[0], results[-1]
    added = np.array([r["peak_kib"] - r["before_kib"] for r in results]) / 1024
    documents = np.array([r["documents"] for r in results])
    slope, intercept = np.polyfit(documents, added, 1)
    worst = np.abs(added - (intercept + slope * documents)).max()
    print(f"\n{large['copies']}x / 1x: grid peak RSS ratio {large['peak_kib'] / small['peak_kib']:.2f}, what the grid "
          f"adds {added[-1] / added[0]:.2f}, corpus {large['documents'] / small['documents']:.0f}")
    print(f"linear fit of what the grid adds: {intercept:.0f} MiB + {1000 * slope:.1f} MiB per 1,000 documents "
          f"(pooled vectors: {1000 * layers * hidden * 4 / 2**20:.1f} MiB per 1,000); largest residual {worst:.0f} MiB")


if __name__ == "__main__":
    main()
