"""Ties cannot favour anyone: retrieval metrics are their expected value over every order of each tie group
(bench/tasks/ranking.py), and the search hands them every tie group that reaches a cutoff whole.

Oracles: the closed forms by hand where every document ties, and pytrec_eval (trec_eval's ndcg_cut, recall and
recip_rank, no ties) averaged over ALL orders of the tie groups, by brute force, on small graded examples.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import pytrec_eval

from bench.data.beir import RetrievalSet
from bench.spec import EvalSpec
from bench.tasks import TASKS
from bench.tasks.ranking import query_metrics
from bench.tasks.retrieval import RetrievalTask, per_query_metrics


def binary_cell(corpus: np.ndarray, queries: np.ndarray, corpus_ids: list[str], query_ids: list[str],
                qrels: dict[str, dict[str, int]], task: RetrievalTask | None = None) -> dict[str, np.ndarray]:
    """Per-query metrics of one binary-precision cell of `task` (scifact's by default) on the given vectors."""
    data = RetrievalSet(corpus_ids=corpus_ids, corpus_texts=[""] * len(corpus_ids), query_ids=query_ids,
                        query_texts=[""] * len(query_ids), qrels=qrels)
    task = task or TASKS.get("scifact")
    aux = {"qrels": [qrels[q] for q in query_ids]}
    _, per_query = task.score_cell(data, {"corpus": corpus[None], "queries": queries[None]}, aux, 1,
                                   corpus.shape[1], "binary", EvalSpec(precisions=("binary",)))
    return per_query


# --- (a) every document ties -----------------------------------------------------------------------------------

def test_all_tied_documents_score_the_expected_metric_not_the_corpus_order_one():
    """300 identical documents (one Hamming distance), the relevant one first in corpus order: corpus order would
    give 1.0 everywhere. Also checks the search extension: the tie group (300) is longer than the first search
    (TOP_K + 1), so a truncated group would give recall 100/101 instead of 100/300."""
    n = 300
    corpus = np.ones((n, 16), dtype=np.float32)
    queries = np.ones((1, 16), dtype=np.float32)
    per_query = binary_cell(corpus, queries, [f"d{i}" for i in range(n)], ["q"], {"q": {"d0": 1}})
    assert per_query["mrr@10"][0] / 100 == pytest.approx(sum(1 / (j + 1) for j in range(10)) / n, abs=1e-12)
    assert per_query["ndcg@10"][0] / 100 == pytest.approx(sum(1 / math.log2(j + 2) for j in range(10)) / n,
                                                          abs=1e-12)
    assert per_query["recall@100"][0] / 100 == pytest.approx(100 / n, abs=1e-12)


def test_a_tie_group_that_starts_at_the_last_cutoff_is_searched_whole():
    """99 documents at Hamming distance 0, then 51 at distance 1, the relevant one first of them in corpus order:
    rank 100 opens a group of 51, which only the candidate one past the cutoff shows (recall 1/51, not 1)."""
    corpus = np.ones((150, 16), dtype=np.float32)
    corpus[99:, 0] = -1
    per_query = binary_cell(corpus, np.ones((1, 16), dtype=np.float32), [f"d{i}" for i in range(150)], ["q"],
                            {"q": {"d99": 1}})
    assert per_query["recall@100"][0] / 100 == pytest.approx(1 / 51, abs=1e-12)


# --- (b) closed forms against a brute-force average of pytrec_eval over all tie orders -----------------------------

def tie_orders(scores: np.ndarray) -> list[list[int]]:
    """Every ranking (candidate indices, best first) that orders each tie group one way."""
    groups = [list(np.flatnonzero(scores == s)) for s in sorted(set(scores.tolist()), reverse=True)]
    return [[i for g in choice for i in g] for choice in itertools.product(*map(itertools.permutations, groups))]


def brute_force_expected(ranked: list[str], scores: np.ndarray, qrels: dict[str, int],
                         cutoffs: tuple[int, int, int]) -> tuple[float, float, float]:
    """pytrec_eval (no ties) on each order of the tie groups as its own query, averaged."""
    k_ndcg, k_mrr, k_recall = cutoffs
    orders = tie_orders(scores)
    runs = {f"p{n}": {ranked[i]: float(len(order) - r) for r, i in enumerate(order)} for n, order in enumerate(orders)}
    tops = {p: {d: s for d, s in run.items() if s > len(ranked) - k_mrr} for p, run in runs.items()}
    all_qrels = {p: qrels for p in runs}
    cut = pytrec_eval.RelevanceEvaluator(all_qrels, {f"ndcg_cut.{k_ndcg}", f"recall.{k_recall}"}).evaluate(runs)
    rr = pytrec_eval.RelevanceEvaluator(all_qrels, {"recip_rank"}).evaluate(tops)
    return (np.mean([cut[p][f"ndcg_cut_{k_ndcg}"] for p in runs]), np.mean([rr[p]["recip_rank"] for p in runs]),
            np.mean([cut[p][f"recall_{k_recall}"] for p in runs]))


@pytest.mark.parametrize("seed", range(12))
def test_closed_forms_equal_the_average_over_all_tie_orders(seed):
    """Small random cases: 7 candidates with scores in 0..2 (groups cut by the cutoffs 3 and 5), graded qrels with
    negative and zero grades and a relevant document never retrieved (so the ideal DCG is not the candidates')."""
    rng = np.random.default_rng(seed)
    ranked = [f"d{i}" for i in range(7)]
    scores = np.sort(rng.integers(0, 3, 7))[::-1].astype(np.float64)
    qrels = {d: int(g) for d, g in zip(ranked, rng.integers(-1, 3, 7)) if rng.random() < 0.7}
    qrels["unretrieved"] = int(rng.integers(0, 3))
    if not any(g > 0 for d, g in qrels.items() if d != "unretrieved"):
        qrels["d6"] = 1  # something relevant among the candidates
    cutoffs = (3, 3, 5)
    ours = query_metrics(ranked, scores, qrels, cutoffs)
    np.testing.assert_allclose(ours, brute_force_expected(ranked, scores, qrels, cutoffs), rtol=0, atol=1e-12)


def test_without_ties_the_metrics_are_pytrec_evals():
    """Distinct scores: the one order there is, so per_query_metrics equals trec_eval (as test_beir_conventions
    checks on its fixture); here with the scores given."""
    rng = np.random.default_rng(99)
    ranked = [f"d{i}" for i in range(120)]
    qrels = {f"d{i}": int(rng.integers(-1, 3)) for i in rng.choice(150, 30, replace=False)}
    scores = -np.arange(120, dtype=np.float64)
    ours = per_query_metrics([ranked], [qrels], [scores])
    theirs = brute_force_expected(ranked, scores, qrels, (10, 10, 100))
    np.testing.assert_allclose([ours[m][0] / 100 for m in ("ndcg@10", "mrr@10", "recall@100")], theirs, atol=1e-12)


# --- (c) a binary cell end to end: corpus order changes nothing ----------------------------------------------------

@pytest.mark.parametrize("ignore_identical_ids", [False, True])
def test_binary_cell_scores_the_same_whatever_the_corpus_order(ignore_identical_ids):
    """8 bits: 9 Hamming distances over 400 documents, so tie groups straddle 10 and 100. Permuting the corpus
    leaves every per-query metric unchanged; the same rankings scored in corpus order (no ties) do change, so the
    case can tell. With ignore_identical_ids a query is a document of the corpus, dropped before the cutoffs."""
    rng = np.random.default_rng(5)
    n, dim = 400, 8
    corpus = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((6, dim)).astype(np.float32)
    corpus_ids = [f"d{i}" for i in range(n)]
    query_ids = ["d3", "q1", "q2", "q3", "q4", "q5"]
    queries[0] = corpus[3]
    qrels = {q: {f"d{i}": int(rng.integers(1, 3)) for i in rng.choice(n, 25, replace=False)} for q in query_ids}
    task = TASKS.get("arguana" if ignore_identical_ids else "scifact")
    assert task.meta.ignore_identical_ids == ignore_identical_ids
    first = binary_cell(corpus, queries, corpus_ids, query_ids, qrels, task)
    perm = rng.permutation(n)
    second = binary_cell(corpus[perm], queries, [corpus_ids[i] for i in perm], query_ids, qrels, task)
    for metric in first:
        np.testing.assert_allclose(first[metric], second[metric], rtol=0, atol=1e-9, err_msg=metric)
    # the test has teeth: ranked by Hamming distance with corpus order breaking ties (no tie-awareness), the
    # permutation moves nDCG@10
    distances = ((queries[:, None, :] > 0) != (corpus[None] > 0)).sum(-1)

    def corpus_order_ndcg(order: np.ndarray) -> np.ndarray:
        rankings = [[corpus_ids[i] for i in order[np.argsort(row[order], kind="stable")]] for row in distances]
        return per_query_metrics(rankings, [qrels[q] for q in query_ids])["ndcg@10"]
    assert not np.allclose(corpus_order_ndcg(np.arange(n)), corpus_order_ndcg(perm))
