"""Retrieval family (BEIR format): nDCG@10, MRR@10, Recall@100, searched through faiss at each precision.

Every precision is searched the way a server stores and computes it, always with float32 query vectors in
(bench/precisions.py holds one record per precision; "bytes" is every byte a query reads per document):
- fp32: stores the float vectors (4 bytes per dim); float query . document, IndexFlatIP.
- int8: stores each document as int8 codes (1 byte per dim; per-dimension ranges calibrated on `int8_calibration`);
  the float query . each decoded document (bucket midpoints), faiss IndexScalarQuantizer QT_8bit: asymmetric, as
  faiss SQ8 and most vector stores serve int8.
- binary: stores the sign bits (dim / 8 bytes); Hamming distance of the query's and document's bits,
  IndexBinaryFlat.
- binary+rescore: stores the bits only (dim / 8 bytes); a Hamming shortlist of rescore_multiplier x the metric's
  cutoff (40 for @10, 400 for @100, each cutoff its own search), re-ranked by the float query . the document's own
  bits as +-1 (sentence-transformers' semantic_search_faiss rescores 0/1 bits: the same ranking).
- binary+rescore-int8 / binary+rescore-fp32: the same shortlist, re-ranked against a stored copy of the documents
  (decoded int8 / float32): bytes dim / 8 + dim / + 4 dim, and `index_bytes` counts the copy.
- A head with multi-bit codes (bebr, bench/transforms.BinaryCodes) replaces the sign bits at the binary
  precisions (dim x bits_per_dim / 8 bytes): one level is searched by Hamming as above; several levels by their
  symmetric distance (SDC, the inner product of the codes' reconstructions, cosine when `normalize`), which is run
  here as an exact float inner-product search over the reconstructions: the same ranking as a bitwise SDC kernel,
  but not its speed, so such cells get no `search_ms_per_query` row; their `index_bytes` is the binary index of the
  codes. binary+rescore rescores against the codes' reconstruction.
Metrics follow trec_eval (what pytrec_eval, BEIR and mteb compute): a grade <= 0 is non-relevant (no gain, no
loss), every judged query counts (one judged only non-relevant scores 0), and a task with `ignore_identical_ids`
drops each query's own document (the same id) from its ranking before the cutoffs, as mteb does for that dataset.
Equal scores are ranked by corpus order, so rankings (and metrics) are reproducible whatever faiss returns first.
Cost per cell: `index_bytes` (the serialized faiss index: what search holds in memory, plus the rescoring copy of
binary+rescore-int8/-fp32) and `search_ms_per_query` (median of REPEATS
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
from bench.precisions import precision as precision_record
from bench.spec import EvalSpec, check_precision_dims
from bench.tasks import TASKS
from bench.transforms import (BinaryCodes, binarize, dequantize_int8, head_codes, int8_ranges,
                              quantize_int8, sign_codes, truncate)

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


METRICS = ("ndcg@10", "mrr@10", "recall@100")  # what per_query_metrics computes, each named by its cutoff


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


def int8_index(corpus: np.ndarray, ranges: np.ndarray, search_index: str) -> faiss.Index:
    """The corpus as int8 codes (faiss ScalarQuantizer QT_8bit, one byte per dim, our per-dimension ranges), searched
    by the float query's inner product with each decoded document: faiss decodes a code to its bucket's midpoint, as
    bench.transforms.dequantize_int8 does. The index is given the decoded midpoints, not the vectors: faiss' own
    encoding rounds (v - min) * 255 / range, which at a bucket edge can land one code off ours; a midpoint lies half
    a step inside its bucket, so it encodes to exactly our code."""
    dim, kind = corpus.shape[1], faiss.ScalarQuantizer.QT_8bit
    if search_index == "hnsw":
        index = faiss.IndexHNSWSQ(dim, kind, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        quantizer = index.storage
    else:
        index = quantizer = faiss.IndexScalarQuantizer(dim, kind, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.concatenate([ranges[0], ranges[1] - ranges[0]]).astype(np.float32),
                               faiss.downcast_index(quantizer).sq.trained)  # QT_8bit's layout: mins, then ranges
    quantizer.is_trained = index.is_trained = True
    index.add(dequantize_int8(quantize_int8(corpus, ranges), ranges))
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


def rescore_documents(corpus: np.ndarray, calibration: np.ndarray, codes: BinaryCodes,
                      kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """The document vectors rescoring reads, by corpus position: "bits" the documents' own codes as +-1 (their
    reconstruction where a head makes several levels; sentence-transformers' semantic_search_faiss rescores with
    0/1 bits, which rank the same), "int8" the stored codes decoded, "fp32" the vectors as they are."""
    if kind == "bits":
        return lambda ids: BinaryCodes(codes.bits[ids.ravel()], codes.dim, codes.weights).reconstruction(
            normalize=False).reshape(*ids.shape, codes.dim)
    if kind == "fp32":
        return lambda ids: corpus[ids]
    ranges = int8_ranges(calibration)
    stored = quantize_int8(corpus, ranges)
    return lambda ids: dequantize_int8(stored[ids], ranges)


@dataclass(frozen=True)
class Searcher:
    """One cell's search index, and its search: (float32 queries, k) -> (n, k) corpus positions, -1 padded.
    `timed`: False where the search emulates a kernel it is not (multi-bit SDC as float search). `copy_bytes`: the
    rescoring copy of the documents a binary+rescore-int8/-fp32 search reads besides its index."""

    index: object  # faiss.Index or faiss.IndexBinary: what the search holds in memory
    search: Callable[[np.ndarray, int], np.ndarray]
    timed: bool = True
    copy_bytes: int = 0

    def index_bytes(self) -> int:
        binary = isinstance(self.index, faiss.IndexBinary)
        return int((faiss.serialize_index_binary if binary else faiss.serialize_index)(self.index).nbytes) + \
            self.copy_bytes


def make_searcher(corpus: np.ndarray, calibration: np.ndarray, precision: str, spec: EvalSpec,
                  codes: tuple[BinaryCodes, BinaryCodes] | None = None) -> Searcher:
    """Index the corpus at `precision` (bench/precisions.py says what each stores and compares); int8 ranges come
    from `calibration` (the same for corpus and queries). `codes`: a head's (corpus, queries) codes of this cell for
    the binary precisions; the search is then run with exactly those queries (the float queries passed to it are
    only rescored). A rescoring search's shortlist is `rescore_multiplier` x the k it is asked for."""
    check_precision_dims((precision,), (corpus.shape[1],))
    record = precision_record(precision)
    if record.code == "fp32":
        index = float_index(corpus, spec.search_index)
        return Searcher(index, lambda q, k: top_k(index, q, k))
    if record.code == "int8":
        index = int8_index(corpus, int8_ranges(calibration), spec.search_index)
        return Searcher(index, lambda q, k: top_k(index, q, k))
    if codes is None:
        codes = (sign_codes(corpus), None)
        index = binary_index(codes[0].bits, spec.search_index)
        shortlist, timed = (lambda q, k: top_k(index, binarize(q), k)), True
    else:
        index, shortlist, timed = code_search(*codes, spec)
    if record.rescore is None:
        return Searcher(index, shortlist, timed)
    documents = rescore_documents(corpus, calibration, codes[0], record.rescore)
    copy_bytes = len(corpus) * record.copy_bytes(corpus.shape[1])
    multiplier = spec.rescore_multiplier
    return Searcher(index, lambda q, k: rescore(q, shortlist(q, k * multiplier), documents, k), timed, copy_bytes)


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


def shortlist_metrics(searcher: Searcher, queries: np.ndarray, data: RetrievalSet, qrels: list[dict[str, int]],
                      drop_self: bool) -> dict[str, np.ndarray]:
    """A rescoring search's metrics at cutoffs below TOP_K, each from its own search: a metric @c ranks the
    rescored top c of a shortlist of rescore_multiplier x c by Hamming (40 for @10), not of TOP_K's."""
    out = {}
    for cutoff in sorted({int(m.split("@")[1]) for m in METRICS if int(m.split("@")[1]) < TOP_K}):
        ids = searcher.search(queries, cutoff + drop_self)
        rankings = [ranked_ids(data.corpus_ids, row, query if drop_self else None)
                    for row, query in zip(ids, data.query_ids)]
        out.update({m: v for m, v in per_query_metrics(rankings, qrels).items() if m.endswith(f"@{cutoff}")})
    return out


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
        if precision_record(precision).rescore is not None:
            per_query.update(shortlist_metrics(searcher, queries, data, aux["qrels"], drop_self))
        cost = {"index_bytes": searcher.index_bytes()}
        if searcher.timed:
            cost["search_ms_per_query"] = ms_per_query
        return {**retrieval_metrics(per_query), **cost}, per_query

    def gold(self, data: RetrievalSet) -> dict[str, np.ndarray]:
        return {}


for _meta in TASK_META.values():  # every BEIR set of the catalog
    if _meta.family == "retrieval":
        TASKS.register(_meta.name)(RetrievalTask(_meta))
