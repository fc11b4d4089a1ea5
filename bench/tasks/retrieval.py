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
seeded order of the corpus (bench/search.TIE_ORDER_SEED), the same for every method, so no corpus order decides who is
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

import faiss
import numpy as np

from bench.catalog import TASK_META, TaskMeta, local_beir_meta
from bench.data.beir import RetrievalSet, load_beir
from bench.precisions import scored_by
from bench.search import Searcher
from bench.spec import EvalSpec, check_precision_dims
from bench.tasks import TASKS, Task
from bench.tasks.ranking import query_metrics
from bench.transforms import BinaryCodes, head_codes, truncate

TOP_K = 100
REPEATS = 3  # timed searches per cell; the median is kept
SEARCH_THREADS = 1  # timed single-threaded: a per-query CPU cost that other work on a shared machine distorts least


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


def make_searcher(corpus: np.ndarray, calibration: np.ndarray, precision: str, spec: EvalSpec,
                  codes: tuple[BinaryCodes, BinaryCodes] | None = None) -> Searcher:
    """Index the corpus at `precision` (its record in bench/precisions.py builds the search); calibrated forms
    (int8) take their ranges from `calibration` (the same for corpus and queries). `codes`: a head's (corpus,
    queries) codes of this cell, for a form that takes them; the search is then run with exactly those queries (the
    float queries passed to it are only rescored). A rescoring search's shortlist is `rescore_multiplier` x the k it
    is asked for."""
    check_precision_dims((precision,), (corpus.shape[1],))
    return scored_by(precision, "retrieval").searcher(corpus, calibration, spec, codes)


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
        takes_codes = scored_by(precision, "retrieval").form.takes_head_codes
        corpus_codes = head_codes(arrays["corpus"], layer, dim) if takes_codes else None
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
