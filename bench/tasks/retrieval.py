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
Ties cannot favour anyone: Hamming distances (and int8 code products) are integers, so a cutoff often falls inside
a group of equal scores. Each metric is its expected value over every order of each tie group (McSherry & Najork
2008, bench/tasks/ranking.py), and a query is searched further until the tie group at its last cutoff is whole;
without ties the metrics are trec_eval's. Within a search, equal scores are in corpus order (reproducible whatever
faiss returns first); binary+rescore's Hamming shortlist is still cut inside its last tie group by corpus order.
Cost per cell: `index_bytes` (the serialized faiss index: what search holds in memory; binary+rescore reads its
rescoring vectors per query from storage and they are not counted) and `search_ms_per_query` (median of REPEATS
runs over all queries at once, faiss-cpu with one thread on the evaluating machine's CPU, query quantization and
rescoring included).
"""

from __future__ import annotations

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
from bench.tasks.ranking import query_metrics
from bench.transforms import BinaryCodes, binarize, dequantize_int8, head_codes, int8_ranges, quantize_int8, truncate

TOP_K = 100
REPEATS = 3  # timed searches per cell; the median is kept
SEARCH_THREADS = 1  # timed single-threaded: a per-query CPU cost that other work on a shared machine distorts least
# search_index="hnsw" (approximate): graph degree and search breadth. Constants, as they move the results; the
# graph is built in parallel, so its results can differ slightly from run to run.
HNSW_M = 32
HNSW_EF_SEARCH = 128


def per_query_metrics(rankings: list[list[str]], qrels: list[dict[str, int]],
                      scores: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Pure: each metric per query, x100, tie-aware (bench/tasks/ranking.py) over each ranking's `scores` (higher
    is better); without scores the rankings have no ties."""
    scores = scores or [-np.arange(len(r), dtype=np.float64) for r in rankings]
    values = np.array([query_metrics(r, s, q, (10, 10, TOP_K)) for r, s, q in zip(rankings, scores, qrels)])
    values = values.reshape(len(rankings), 3)
    return {"ndcg@10": 100 * values[:, 0], "mrr@10": 100 * values[:, 1], "recall@100": 100 * values[:, 2]}


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


def top_k(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) scores (higher is better) and corpus positions, best first, -1 padded; equal scores in corpus order."""
    if isinstance(index, (faiss.IndexHNSW, faiss.IndexBinaryHNSW)):
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
    scores, ids = index.search(queries, min(k, index.ntotal))
    if isinstance(index, faiss.IndexBinary):
        scores = -scores.astype(np.int64)  # a Hamming distance: smaller is better
    order = np.lexsort((ids, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(ids, order, axis=-1)


def rescore(queries: np.ndarray, shortlist: np.ndarray, documents: Callable[[np.ndarray], np.ndarray], k: int,
            block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's shortlist by the float query's inner product with `documents(ids)`, keep k: (scores,
    ids). Only shortlisted ids can come back; -1 (no candidate) stays -1. Queries go in blocks to bound memory."""
    out = []
    for start in range(0, len(queries), block):
        ids = shortlist[start:start + block]
        scores = np.matmul(documents(np.maximum(ids, 0)), queries[start:start + block, :, None])[..., 0]
        scores[ids < 0] = -np.inf
        order = np.lexsort((ids, -scores), axis=-1)[:, :k]
        out.append((np.take_along_axis(scores, order, axis=-1), np.take_along_axis(ids, order, axis=-1)))
    return np.concatenate([s for s, _ in out]), np.concatenate([i for _, i in out])


def rescore_documents(corpus: np.ndarray, calibration: np.ndarray, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """The document vectors rescoring reads, by corpus position: fp32 as they are, or int8 codes dequantized."""
    if kind == "fp32":
        return lambda ids: corpus[ids]
    ranges = int8_ranges(calibration)
    codes = quantize_int8(corpus, ranges)
    return lambda ids: dequantize_int8(codes[ids], ranges)


@dataclass(frozen=True)
class Searcher:
    """One cell's search index, and its scored search: (float32 queries, k) -> (n, k) scores (higher is better) and
    corpus positions, -1 padded. `timed`: False where the search emulates a kernel it is not (multi-bit SDC as
    float search)."""

    index: object  # faiss.Index or faiss.IndexBinary: what the search holds in memory
    scored: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    timed: bool = True

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n, k) corpus positions only."""
        return self.scored(queries, k)[1]

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
    return Searcher(index, lambda q, k: rescore(q, shortlist(q, k * multiplier)[1], documents, k), timed)


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


def timed_search(searcher: Searcher, queries: np.ndarray, k: int,
                 repeats: int = REPEATS) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """The ranking (scores, positions), and the median over `repeats` runs of the search time per query in
    milliseconds (one thread)."""
    threads, seconds = faiss.omp_get_max_threads(), []
    faiss.omp_set_num_threads(SEARCH_THREADS)
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ranking = searcher.scored(queries, k)
            seconds.append(time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(threads)
    return ranking, 1000 * float(np.median(seconds)) / len(queries)


def tie_group_open(scores: np.ndarray, positions: np.ndarray, n_docs: int, needed: int) -> bool:
    """Whether the tie group of the `needed`-th candidate may go on past the searched ones: it reaches the last
    candidate (searched one or more past the needed ones, so one that differs closes it) and the corpus goes on."""
    return needed < len(positions) < n_docs and positions[-1] >= 0 and scores[-1] == scores[needed - 1]


def complete_tie_groups(searcher: Searcher, queries: np.ndarray, ranking: tuple[np.ndarray, np.ndarray],
                        n_docs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query (scores, positions) down to the end of the last needed candidate's tie group: a query whose group
    reaches the end of its search is searched again with k doubled until it closes (at most the corpus), as
    tie-aware metrics need every tie group that reaches a cutoff whole. Searches all queries each round (a head's
    code search ignores which queries it is given) and keeps the open ones' rows. Exact searches grow by a suffix;
    an approximate (hnsw) one is searched anew, with its breadth grown to k."""
    rows, k = list(zip(*ranking)), ranking[1].shape[1]
    needed = k - 1  # the last candidate of the first search only shows whether the needed ones' group goes on
    still_open = [i for i, row in enumerate(rows) if tie_group_open(*row, n_docs, needed)]
    while still_open:
        k = min(2 * k, n_docs)
        scores, positions = searcher.scored(queries, k)
        for i in still_open:
            rows[i] = scores[i], positions[i]
        still_open = [i for i in still_open if tie_group_open(*rows[i], n_docs, needed)]
    return [trim(scores, positions, needed) for scores, positions in rows]


def trim(scores: np.ndarray, positions: np.ndarray, needed: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates down to the end of the `needed`-th one's tie group (the metrics need no more)."""
    if len(scores) == 0:
        return scores, positions
    keep = scores >= scores[min(needed, len(scores)) - 1]
    return scores[keep], positions[keep]


def ranked_ids(corpus_ids: list[str], scores: np.ndarray, positions: np.ndarray,
               drop: str | None = None) -> tuple[list[str], np.ndarray]:
    """The document ids of a ranking (corpus positions, -1 padded) and their scores, without the document `drop`:
    the query's own id where the task ignores identical ids (mteb and BEIR drop it after the search, as here)."""
    keep = [j for j, i in enumerate(positions) if i >= 0 and corpus_ids[i] != drop]
    return [corpus_ids[positions[j]] for j in keep], np.asarray(scores)[keep]


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
        # One more searched so TOP_K remain after the query's own document, and one more to see whether the last
        # needed candidate's tie group goes on (then that query is searched further).
        drop_self = self.meta.ignore_identical_ids
        repeats = REPEATS if searcher.timed else 1
        ranking, ms_per_query = timed_search(searcher, queries, TOP_K + drop_self + 1, repeats)
        rows = complete_tie_groups(searcher, queries, ranking, len(data.corpus_ids))
        ranked = [ranked_ids(data.corpus_ids, s, p, query if drop_self else None)
                  for (s, p), query in zip(rows, data.query_ids)]
        per_query = per_query_metrics([r for r, _ in ranked], aux["qrels"], [s for _, s in ranked])
        cost = {"index_bytes": searcher.index_bytes()}
        if searcher.timed:
            cost["search_ms_per_query"] = ms_per_query
        return {**retrieval_metrics(per_query), **cost}, per_query

    def gold(self, data: RetrievalSet) -> dict[str, np.ndarray]:
        return {}


for _meta in TASK_META.values():  # every BEIR set of the catalog
    if _meta.family == "retrieval":
        TASKS.register(_meta.name)(RetrievalTask(_meta))
