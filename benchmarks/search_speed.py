"""Search speed, index memory and nDCG@10 of each precision on SciFact, default backbone at full size.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/search_speed.py --data-dir ../shared/data

Encodes SciFact once (cached under --cache-dir/encodings, shared with `bench run`), takes the last layer at
full width, and searches all test queries at once with the same searchers the benchmark's retrieval task uses
(bench.tasks.retrieval.make_searcher): float flat IP, int8 (SQ8, float query against decoded documents), binary
Hamming (IndexBinaryFlat), and binary + rescoring of a k x multiplier Hamming shortlist against the documents' own
bits, or stored int8 or fp32 copies (whose bytes the index bytes include). The variants are timed in turns,
`--repeats` times each, and the median is printed: compare ratios from one run, not numbers across runs. One faiss
thread by default, as the grid's latency rows: on a shared, oversubscribed machine OpenMP's multi-threaded binary
search stalls (measured here: 10x slower with 2 threads at load 8 than with 1), which says nothing about the index.
Goals (issue 5): binary+rescore keeps >= 98% of float nDCG@10 with a >= 30x smaller index; binary search is
>= 4x faster than float flat search.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np

from bench.data import resolve_data_dir
from bench.encoder import Encoder, Texts
from bench.evaluate import encode_cached
from bench.hub import cache_root
from bench.spec import EvalSpec
from bench.storage import Plan
from bench.tasks import TASKS
from bench.tasks.retrieval import make_searcher, per_query_metrics
from bench.transforms import truncate

VARIANTS = ["fp32", "int8", "binary", "binary+rescore", "binary+rescore-int8", "binary+rescore-fp32"]  # precisions


def full_size_vectors(backbone: str, data_dir: Path, cache_dir: Path, spec: EvalSpec):
    """SciFact test data and its (corpus, queries) vectors at the backbone's last layer and full width."""
    task = TASKS.get("scifact")
    data = task.load(data_dir, spec)
    encoder = Encoder.named(backbone, spec.pooling)
    arrays = {name: encode_cached(encoder, f"backbone:{backbone}", f"scifact/{name}",
                                  Texts(texts, max_len, task.role(name)), Plan(spec.batch_size),
                                  cache_dir / "encodings")[0]
              for name, (texts, max_len) in task.texts(data, spec).items()}
    layer, dim = encoder.num_layers, encoder.width
    vectors = {name: truncate(a[layer - 1], dim, spec.normalize) for name, a in arrays.items()}
    return data, vectors, (layer, dim)


def measure(data, corpus, queries, spec: EvalSpec, k: int, repeats: int) -> list[dict]:
    """Per variant: median seconds to search all queries, index bytes, nDCG@10. Timed in turns, round-robin."""
    qrels = [data.qrels[q] for q in data.query_ids]
    searchers = [make_searcher(corpus, corpus, precision, spec) for precision in VARIANTS]
    seconds = [[] for _ in VARIANTS]
    for _ in range(repeats):
        for i, searcher in enumerate(searchers):
            t0 = time.perf_counter()
            searcher.search(queries, k)
            seconds[i].append(time.perf_counter() - t0)
    results = []
    for label, searcher, times in zip(VARIANTS, searchers, seconds):
        rankings = [[data.corpus_ids[i] for i in row if i >= 0] for row in searcher.search(queries, k)]
        ndcg = float(np.mean(per_query_metrics(rankings, qrels)["ndcg@10"]))
        results.append(dict(label=label, ms=1000 * float(np.median(times)), bytes=searcher.index_bytes(), ndcg=ndcg))
    return results


def report(results: list[dict], n_queries: int) -> None:
    base = results[0]
    print(f"{'variant':28s} {'search ms (all queries)':>24s} {'speedup':>8s} {'index bytes':>12s} "
          f"{'smaller':>8s} {'nDCG@10':>8s} {'of fp32':>8s}")
    for r in results:
        print(f"{r['label']:28s} {r['ms']:24.2f} {base['ms'] / r['ms']:7.1f}x {r['bytes']:12d} "
              f"{base['bytes'] / r['bytes']:7.1f}x {r['ndcg']:8.2f} {100 * r['ndcg'] / base['ndcg']:7.1f}%")
    by = {r["label"]: r for r in results}
    binary, rescored = by["binary"], by["binary+rescore-int8"]
    checks = [("binary+rescore-int8 keeps >= 98% of fp32 nDCG@10", rescored["ndcg"] >= 0.98 * base["ndcg"]),
              ("binary index >= 30x smaller than fp32", base["bytes"] >= 30 * binary["bytes"]),
              ("binary search >= 4x faster than fp32 flat", base["ms"] >= 4 * binary["ms"])]
    print(f"\n{n_queries} queries; goals:")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, help="default: $BENCH_CACHE_DIR or ./cache")
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10: nDCG@10)")
    parser.add_argument("--multiplier", type=int, default=4, help="binary+rescore shortlist = k x this (default 4)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="faiss OpenMP threads (default 1, as the grid's latency rows; 0: faiss's own)")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    spec = EvalSpec(rescore_multiplier=args.multiplier)
    data, vectors, (layer, dim) = full_size_vectors(args.backbone, resolve_data_dir(args.data_dir),
                                                    args.cache_dir or cache_root(), spec)
    print(f"SciFact test: {len(data.corpus_ids)} documents, {len(data.query_ids)} queries; {args.backbone} layer "
          f"{layer} dim {dim}; k={args.k}, shortlist {args.k * args.multiplier}; faiss-cpu "
          f"{faiss.__version__}, {faiss.omp_get_max_threads()} thread(s); median of {args.repeats} runs each\n")
    report(measure(data, vectors["corpus"], vectors["queries"], spec, args.k, args.repeats), len(data.query_ids))


if __name__ == "__main__":
    main()
