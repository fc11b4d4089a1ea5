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
Ties cannot favour anyone: Hamming distances are integers, so a cutoff often falls inside a group of equal
scores. Each metric is its expected value over every order of each tie group (McSherry & Najork 2008,
bench/tasks/ranking.py), and a query is searched further until the tie group at its last cutoff is whole; without
ties the metrics are trec_eval's. A rescoring search ranks its whole shortlist (the metrics see every tie group
inside it, and nothing outside it), and its Hamming shortlist breaks ties at the shortlist's edge by one fixed
seeded order of the corpus (TIE_ORDER_SEED), the same for every method, so no corpus order decides who is
shortlisted and paired comparisons stay paired.
Cost per cell: `index_bytes` (the serialized faiss index: what search holds in memory, plus the rescoring copy of
binary+rescore-int8/-fp32) and `search_ms_per_query` (median of REPEATS
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
from bench.precisions import precision as precision_record
from bench.spec import EvalSpec, check_precision_dims
from bench.tasks import TASKS, Task
from bench.tasks.ranking import query_metrics
from bench.transforms import (BinaryCodes, binarize, dequantize_int8, head_codes, int8_ranges,
                              quantize_int8, sign_codes, truncate)

TOP_K = 100
REPEATS = 3  # timed searches per cell; the median is kept
SEARCH_THREADS = 1  # timed single-threaded: a per-query CPU cost that other work on a shared machine distorts least
# search_index="hnsw" (approximate): graph degree and search breadth. Constants, as they move the results; the
# graph is built in parallel, so its results can differ slightly from run to run.
HNSW_M = 32
HNSW_EF_SEARCH = 128
TIE_ORDER_SEED = 0  # the one order that cuts a Hamming shortlist's last tie group (shuffled_binary_search)


def per_query_metrics(rankings: list[list[str]], qrels: list[dict[str, int]],
                      scores: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Pure: each metric per query, x100, tie-aware (bench/tasks/ranking.py) over each ranking's `scores` (higher
    is better); without scores the rankings have no ties."""
    scores = scores or [-np.arange(len(r), dtype=np.float64) for r in rankings]
    values = np.array([query_metrics(r, s, q, (10, 10, TOP_K)) for r, s, q in zip(rankings, scores, qrels)])
    values = values.reshape(len(rankings), 3)
    return {"ndcg@10": 100 * values[:, 0], "mrr@10": 100 * values[:, 1], "recall@100": 100 * values[:, 2]}


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


def top_k(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) scores (higher is better) and the index's ids, best first, -1 padded (last). Equal scores are put in
    the order of the ids, which are corpus positions for an index built over the corpus as it is, and positions in
    the one seeded order (TIE_ORDER_SEED) for shuffled_binary_search's index, whose search maps them back. Which
    members of a tie group that straddles the k-th place come back at all is faiss' rule: the first indexed for an
    exact binary index (so shuffled_binary_search's seeded order decides a rescoring shortlist's edge), no fixed
    order for a float one; tie-aware metrics search on until such a group is whole (complete_tie_groups)."""
    if isinstance(index, (faiss.IndexHNSW, faiss.IndexBinaryHNSW)):
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
    scores, ids = index.search(queries, min(k, index.ntotal))
    if isinstance(index, faiss.IndexBinary):
        scores = -scores.astype(np.int64)  # a Hamming distance: smaller is better
    order = np.lexsort((ids, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(ids, order, axis=-1)


def rescore(queries: np.ndarray, shortlist: np.ndarray, documents: Callable[[np.ndarray], np.ndarray],
            block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's whole shortlist by the float query's inner product with `documents(ids)`: (scores,
    ids). Only shortlisted ids can come back; -1 (no candidate) stays -1, last. Queries go in blocks to bound
    memory."""
    out = []
    for start in range(0, len(queries), block):
        ids = shortlist[start:start + block]
        scores = np.matmul(documents(np.maximum(ids, 0)), queries[start:start + block, :, None])[..., 0]
        scores[ids < 0] = -np.inf
        order = np.lexsort((ids, -scores), axis=-1)
        out.append((np.take_along_axis(scores, order, axis=-1), np.take_along_axis(ids, order, axis=-1)))
    return np.concatenate([s for s, _ in out]), np.concatenate([i for _, i in out])


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
    """One cell's search index, and its scored search: (float32 queries, k) -> (n, k) scores (higher is better) and
    corpus positions, -1 padded. `timed`: False where the search emulates a kernel it is not (multi-bit SDC as
    float search). `copy_bytes`: the rescoring copy of the documents a binary+rescore-int8/-fp32 search reads
    besides its index. `whole`: a rescoring search returns its whole shortlist (rescore_multiplier x k), ranked:
    nothing past it can be served, so tie groups are never searched further (that would grow the shortlist)."""

    index: object  # faiss.Index or faiss.IndexBinary: what the search holds in memory
    scored: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    timed: bool = True
    copy_bytes: int = 0
    whole: bool = False

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n, k) corpus positions only."""
        return self.scored(queries, k)[1]

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
        index, search_bits = shuffled_binary_search(codes[0].bits, spec)
        shortlist, timed = (lambda q, k: search_bits(binarize(q), k)), True
    else:
        index, shortlist, timed = code_search(*codes, spec)
    if record.rescore is None:
        return Searcher(index, shortlist, timed)
    documents = rescore_documents(corpus, calibration, codes[0], record.rescore)
    copy_bytes = len(corpus) * record.copy_bytes(corpus.shape[1])
    multiplier = spec.rescore_multiplier
    return Searcher(index, lambda q, k: rescore(q, shortlist(q, k * multiplier)[1], documents), timed, copy_bytes,
                    whole=True)


def shuffled_binary_search(bits: np.ndarray, spec: EvalSpec):
    """(index, search(query bits, k) -> (scores, corpus positions)) over the documents' bits, indexed in one fixed
    seeded order (TIE_ORDER_SEED): faiss keeps the first-indexed of equal Hamming distances at the edge of its k,
    so a rescoring shortlist's last tie group is cut by that order, the same for every method, never by an order
    the corpus happens to have. Tie-aware metrics do not need it for plain binary (its groups are completed)."""
    order = np.random.default_rng(TIE_ORDER_SEED).permutation(len(bits))
    index = binary_index(bits[order], spec.search_index)

    def search(query_bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, positions = top_k(index, query_bits, k)
        return scores, np.where(positions >= 0, order[np.maximum(positions, 0)], -1)
    return index, search


def code_search(corpus: BinaryCodes, queries: BinaryCodes, spec: EvalSpec):
    """A head's codes: (index, search of the given queries' codes, timed). One level: Hamming over its bits;
    several: SDC as an exact float inner-product search over the reconstructions, the binary index of the codes
    standing for what a bitwise kernel would hold."""
    if corpus.levels == 1:
        index, search_bits = shuffled_binary_search(corpus.bits, spec)
        return index, (lambda q, k: search_bits(queries.bits, k)), True
    index = binary_index(corpus.bits, spec.search_index)
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
                        n_docs: int, needed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query (scores, positions) down to the end of the last needed candidate's tie group: a query whose group
    reaches the end of its search is searched again with k doubled until it closes (at most the corpus), as
    tie-aware metrics need every tie group that reaches a cutoff whole. Searches all queries each round (a head's
    code search ignores which queries it is given) and keeps the open ones' rows. Exact searches grow by a suffix;
    an approximate (hnsw) one is searched anew, with its breadth grown to k."""
    rows, k = list(zip(*ranking)), ranking[1].shape[1]
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


def ranked_rows(searcher: Searcher, queries: np.ndarray, needed: int, n_docs: int,
                repeats: int = 1) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Per query (scores, positions) down to the end of the `needed`-th candidate's tie group, and the search's
    milliseconds per query. A search is asked for one more than needed, to see whether that group goes on (then
    the query is searched further); a rescoring search ranks its whole shortlist and nothing past it exists."""
    if searcher.whole:
        ranking, ms_per_query = timed_search(searcher, queries, needed, repeats)
        return [trim(s, p, needed) for s, p in zip(*ranking)], ms_per_query
    ranking, ms_per_query = timed_search(searcher, queries, needed + 1, repeats)
    return complete_tie_groups(searcher, queries, ranking, n_docs, needed), ms_per_query


def rankings(rows: list[tuple[np.ndarray, np.ndarray]], data: RetrievalSet,
             drop_self: bool) -> tuple[list[list[str]], list[np.ndarray]]:
    """The document ids and scores of each query's rows, its own document dropped where the task says so."""
    ranked = [ranked_ids(data.corpus_ids, s, p, query if drop_self else None)
              for (s, p), query in zip(rows, data.query_ids)]
    return [ids for ids, _ in ranked], [scores for _, scores in ranked]


def shortlist_metrics(searcher: Searcher, queries: np.ndarray, data: RetrievalSet, qrels: list[dict[str, int]],
                      drop_self: bool) -> dict[str, np.ndarray]:
    """A rescoring search's metrics at cutoffs below TOP_K, each from its own search: a metric @c ranks the
    rescored shortlist of rescore_multiplier x c by Hamming (40 for @10), not TOP_K's."""
    out = {}
    for cutoff in sorted({int(m.split("@")[1]) for m in METRICS if int(m.split("@")[1]) < TOP_K}):
        rows, _ = ranked_rows(searcher, queries, cutoff + drop_self, len(data.corpus_ids))
        ids, scores = rankings(rows, data, drop_self)
        per_query = per_query_metrics(ids, qrels, scores)
        out.update({m: v for m, v in per_query.items() if m.endswith(f"@{cutoff}")})
    return out


@dataclass(frozen=True)
class RetrievalTask(Task):
    meta: TaskMeta

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
        drop_self = self.meta.ignore_identical_ids  # one more needed, so TOP_K remain after the query's own
        rows, ms_per_query = ranked_rows(searcher, queries, TOP_K + drop_self, len(data.corpus_ids),
                                         REPEATS if searcher.timed else 1)
        ids, scores = rankings(rows, data, drop_self)
        per_query = per_query_metrics(ids, aux["qrels"], scores)
        if searcher.whole:
            per_query.update(shortlist_metrics(searcher, queries, data, aux["qrels"], drop_self))
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
