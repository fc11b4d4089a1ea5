"""Retrieval family (BEIR format): nDCG@10, MRR@10, Recall@100, searched through faiss at each precision.

Every precision is searched the way it would be served, always with float32 query vectors in:
- fp32: inner product of the (normalized) vectors, IndexFlatIP.
- int8: corpus and queries quantized with the same per-dimension ranges (calibrated on `int8_calibration`), scored
  by the inner product of the codes, as int8 vector stores do; the index holds the codes, one byte per dim
  (IndexScalarQuantizer QT_8bit_direct_signed, which stores int8 values as they are).
- binary: sign bits of corpus and queries, Hamming distance, IndexBinaryFlat.
- binary+rescore: Hamming top k * rescore_multiplier, then that shortlist re-ranked by the float query's inner
  product with the documents' int8 (dequantized) or fp32 vectors (`rescore_docs`), top k kept.
- A head with multi-bit codes (bebr, bench/transforms.BinaryCodes) replaces the sign bits at both binary
  precisions: one level is searched by Hamming as above; several levels by their symmetric distance (SDC, the
  inner product of the codes' reconstructions, cosine when `normalize`), which is run here as an exact float
  inner-product search over the reconstructions: the same ranking as a bitwise SDC kernel, but not its speed, so
  such cells get no `search_ms_per_query` row; their `index_bytes` is the binary index of the codes.
Metrics follow trec_eval (what pytrec_eval, BEIR and mteb compute): a grade <= 0 is non-relevant (no gain, no
loss), every judged query counts (one judged only non-relevant scores 0), and a task with `ignore_identical_ids`
drops each query's own document (the same id) from its ranking before the cutoffs, as mteb does for that dataset.
Equal scores are ranked by corpus order, so rankings (and metrics) are reproducible whatever faiss returns first.
Cost per cell: `index_bytes` (the serialized faiss index: what search holds in memory; binary+rescore reads its
rescoring vectors per query from storage and they are not counted) and `search_ms_per_query` (median of REPEATS
runs over all queries at once, faiss-cpu with one thread on the evaluating machine's CPU, query quantization and
rescoring included).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from bench.catalog import TASK_META, TaskMeta, local_beir_meta
from bench.data.beir import RetrievalSet, load_beir
from bench.spec import EvalSpec, check_precision_dims
from bench.tasks import TASKS
from bench.transforms import BinaryCodes, binarize, dequantize_int8, head_codes, int8_ranges, quantize_int8, truncate

TOP_K = 100
REPEATS = 3  # timed searches per cell; the median is kept
SEARCH_THREADS = 1  # timed single-threaded: a per-query CPU cost that other work on a shared machine distorts least
# search_index="hnsw" (approximate): graph degree and search breadth. Constants, as they move the results; the
# graph is built in parallel, so its results can differ slightly from run to run.
HNSW_M = 32
HNSW_EF_SEARCH = 128


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    """trec_eval's ndcg_cut: gain = relevance, discount log2(rank + 1), ideal from all judged documents; a grade
    <= 0 gains nothing (trec_eval, so pytrec_eval and mteb, counts negative grades as non-relevant, not as a loss)."""
    dcg = sum(max(relevant.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if relevant.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    rel = {d for d, r in relevant.items() if r > 0}
    return len(rel.intersection(ranked[:k])) / len(rel) if rel else 0.0


def per_query_metrics(rankings: list[list[str]], qrels: list[dict[str, int]]) -> dict[str, np.ndarray]:
    """Pure: each metric per query, x100."""
    return {"ndcg@10": 100 * np.array([ndcg_at_k(r, q) for r, q in zip(rankings, qrels)]),
            "mrr@10": 100 * np.array([mrr_at_k(r, q) for r, q in zip(rankings, qrels)]),
            "recall@100": 100 * np.array([recall_at_k(r, q) for r, q in zip(rankings, qrels)])}


def retrieval_metrics(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    """Pure: the mean over queries."""
    return {m: float(np.mean(v)) for m, v in per_query.items()}


def float_index(vectors: np.ndarray, search_index: str) -> faiss.Index:
    """Inner product (cosine when the vectors are normalized) over float32 vectors."""
    dim = vectors.shape[1]
    if search_index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index


def int8_index(codes: np.ndarray, search_index: str) -> faiss.Index:
    """Inner product of int8 codes; the index stores each code in one byte, exactly."""
    dim, kind = codes.shape[1], faiss.ScalarQuantizer.QT_8bit_direct_signed
    if search_index == "hnsw":
        index = faiss.IndexHNSWSQ(dim, kind, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexScalarQuantizer(dim, kind, faiss.METRIC_INNER_PRODUCT)
    index.add(codes.astype(np.float32))
    return index


def binary_index(bits: np.ndarray, search_index: str) -> faiss.IndexBinary:
    """Hamming distance over packed sign bits."""
    dim = 8 * bits.shape[1]
    index = faiss.IndexBinaryHNSW(dim, HNSW_M) if search_index == "hnsw" else faiss.IndexBinaryFlat(dim)
    index.add(bits)
    return index


def top_k(index, queries: np.ndarray, k: int) -> np.ndarray:
    """(n, k) corpus positions, best first, -1 padded; equal scores in corpus order."""
    if isinstance(index, (faiss.IndexHNSW, faiss.IndexBinaryHNSW)):
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
    scores, ids = index.search(queries, min(k, index.ntotal))
    if isinstance(index, faiss.IndexBinary):
        scores = -scores.astype(np.int64)  # a Hamming distance: smaller is better
    return np.take_along_axis(ids, np.lexsort((ids, -scores), axis=-1), axis=-1)


def rescore(queries: np.ndarray, shortlist: np.ndarray, documents: Callable[[np.ndarray], np.ndarray], k: int,
            block: int = 64) -> np.ndarray:
    """Re-rank each query's shortlist by the float query's inner product with `documents(ids)`, keep k. Only
    shortlisted ids can come back; -1 (no candidate) stays -1. Queries go in blocks to bound memory."""
    out = []
    for start in range(0, len(queries), block):
        ids = shortlist[start:start + block]
        scores = np.matmul(documents(np.maximum(ids, 0)), queries[start:start + block, :, None])[..., 0]
        scores[ids < 0] = -np.inf
        order = np.lexsort((ids, -scores), axis=-1)[:, :k]
        out.append(np.take_along_axis(ids, order, axis=-1))
    return np.concatenate(out)


def rescore_documents(corpus: np.ndarray, calibration: np.ndarray, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """The document vectors rescoring reads, by corpus position: fp32 as they are, or int8 codes dequantized."""
    if kind == "fp32":
        return lambda ids: corpus[ids]
    ranges = int8_ranges(calibration)
    codes = quantize_int8(corpus, ranges)
    return lambda ids: dequantize_int8(codes[ids], ranges)


@dataclass(frozen=True)
class Searcher:
    """One cell's search index, and its search: (float32 queries, k) -> (n, k) corpus positions, -1 padded.
    `timed`: False where the search emulates a kernel it is not (multi-bit SDC as float search)."""

    index: object  # faiss.Index or faiss.IndexBinary: what the search holds in memory
    search: Callable[[np.ndarray, int], np.ndarray]
    timed: bool = True

    def index_bytes(self) -> int:
        binary = isinstance(self.index, faiss.IndexBinary)
        return int((faiss.serialize_index_binary if binary else faiss.serialize_index)(self.index).nbytes)


def make_searcher(corpus: np.ndarray, calibration: np.ndarray, precision: str, spec: EvalSpec,
                  codes: tuple[BinaryCodes, BinaryCodes] | None = None) -> Searcher:
    """Index the corpus at `precision`; int8 ranges come from `calibration` (the same for corpus and queries).
    `codes`: a head's (corpus, queries) codes of this cell for the binary precisions; the search is then run
    with exactly those queries (the float queries passed to it are only rescored)."""
    check_precision_dims((precision,), (corpus.shape[1],))
    if precision == "fp32":
        index = float_index(corpus, spec.search_index)
        return Searcher(index, lambda q, k: top_k(index, q, k))
    if precision == "int8":
        ranges = int8_ranges(calibration)
        index = int8_index(quantize_int8(corpus, ranges), spec.search_index)
        return Searcher(index, lambda q, k: top_k(index, quantize_int8(q, ranges).astype(np.float32), k))
    if codes is None:
        index = binary_index(binarize(corpus), spec.search_index)
        shortlist, timed = (lambda q, k: top_k(index, binarize(q), k)), True
    else:
        index, shortlist, timed = code_search(*codes, spec)
    if precision == "binary":
        return Searcher(index, shortlist, timed)
    documents = rescore_documents(corpus, calibration, spec.rescore_docs)
    multiplier = spec.rescore_multiplier
    return Searcher(index, lambda q, k: rescore(q, shortlist(q, k * multiplier), documents, k), timed)


def code_search(corpus: BinaryCodes, queries: BinaryCodes, spec: EvalSpec):
    """A head's codes: (index, search of the given queries' codes, timed). One level: Hamming over its bits;
    several: SDC as an exact float inner-product search over the reconstructions, the binary index of the codes
    standing for what a bitwise kernel would hold."""
    index = binary_index(corpus.bits, spec.search_index)
    if corpus.levels == 1:
        def search(q, k):
            return top_k(index, queries.bits, k)
        return index, search, True
    reconstructed = float_index(corpus.reconstruction(spec.normalize), spec.search_index)
    query_vectors = queries.reconstruction(spec.normalize)

    def sdc_search(q, k):
        return top_k(reconstructed, query_vectors, k)
    return index, sdc_search, False


def timed_search(searcher: Searcher, queries: np.ndarray, k: int, repeats: int = REPEATS) -> tuple[np.ndarray, float]:
    """The ranking, and the median over `repeats` runs of the search time per query in milliseconds (one thread)."""
    threads, seconds = faiss.omp_get_max_threads(), []
    faiss.omp_set_num_threads(SEARCH_THREADS)
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ids = searcher.search(queries, k)
            seconds.append(time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(threads)
    return ids, 1000 * float(np.median(seconds)) / len(queries)


def ranked_ids(corpus_ids: list[str], positions: np.ndarray, drop: str | None = None) -> list[str]:
    """The first TOP_K document ids of a ranking (corpus positions, -1 padded), without the document `drop`: the
    query's own id where the task ignores identical ids (mteb and BEIR drop it after the search, as here)."""
    return [d for d in (corpus_ids[i] for i in positions if i >= 0) if d != drop][:TOP_K]


@dataclass(frozen=True)
class RetrievalTask:
    meta: TaskMeta

    @property
    def name(self) -> str:
        return self.meta.name

    @classmethod
    def local(cls, name: str) -> "RetrievalTask":
        """A BEIR-layout folder of the data dir that the catalog does not name."""
        return cls(local_beir_meta(name))

    def load(self, data_dir: Path, spec: EvalSpec) -> RetrievalSet:
        return load_beir(data_dir, self.name, self.meta.split, spec.max_queries)

    def texts(self, data: RetrievalSet, spec: EvalSpec) -> dict[str, tuple[list[str], int]]:
        return {"corpus": (data.corpus_texts, spec.max_doc_len), "queries": (data.query_texts, spec.max_query_len)}

    def role(self, name: str) -> str | None:
        """Queries get the model's `query` prompt, the corpus its `document` prompt."""
        return {"corpus": "document", "queries": "query"}[name]

    def prepare(self, data: RetrievalSet, texts: dict) -> dict:
        return {"qrels": [data.qrels[q] for q in data.query_ids]}

    def score_cell(self, data: RetrievalSet, arrays: dict, aux: dict, layer: int, dim: int, precision: str,
                   spec: EvalSpec) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Metrics and cost of one cell, and per-query values for statistics."""
        corpus = truncate(arrays["corpus"][layer - 1], dim, spec.normalize)
        queries = truncate(arrays["queries"][layer - 1], dim, spec.normalize)
        calibration = corpus if spec.int8_calibration == "corpus" else queries
        corpus_codes = head_codes(arrays["corpus"], layer, dim) if precision.startswith("binary") else None
        codes = None if corpus_codes is None else (corpus_codes, head_codes(arrays["queries"], layer, dim))
        searcher = make_searcher(corpus, calibration, precision, spec, codes)
        drop_self = self.meta.ignore_identical_ids  # one more searched, so TOP_K remain after the query's own
        ids, ms_per_query = timed_search(searcher, queries, TOP_K + drop_self, REPEATS if searcher.timed else 1)
        rankings = [ranked_ids(data.corpus_ids, row, query if drop_self else None)
                    for row, query in zip(ids, data.query_ids)]
        per_query = per_query_metrics(rankings, aux["qrels"])
        cost = {"index_bytes": searcher.index_bytes()}
        if searcher.timed:
            cost["search_ms_per_query"] = ms_per_query
        return {**retrieval_metrics(per_query), **cost}, per_query

    def gold(self, data: RetrievalSet) -> dict[str, np.ndarray]:
        """Stored once per run: the id of each query, in the order of the per-query values (what pairs two runs)."""
        return {"query_ids": np.array(data.query_ids, dtype=str)}


for _meta in TASK_META.values():  # every BEIR set of the catalog
    if _meta.family == "retrieval":
        TASKS.register(_meta.name)(RetrievalTask(_meta))
