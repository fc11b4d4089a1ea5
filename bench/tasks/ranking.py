"""Tie-aware ranking metrics of one query: nDCG@k, MRR@k and Recall@k as their expected values over every order
of each group of equal scores (McSherry & Najork 2008, "Computing information retrieval performance measures
efficiently in the presence of tied scores"), so no document gains from where it sits in the corpus.

Pure numpy, per query. The candidates come best first with their scores; a tie group that reaches a cutoff must be
complete (the search extends it, bench/tasks/retrieval.py). Without ties every metric is trec_eval's (ndcg_cut,
recip_rank of the top k, recall): a grade <= 0 is non-relevant and gains nothing, the ideal DCG is from all the
query's positive judgements. Written by hand because trec_eval (pytrec_eval) breaks ties by document id.
"""

from __future__ import annotations

import numpy as np


def tie_groups(scores: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal scores, best first."""
    if len(scores) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    return list(zip(starts.tolist(), ends.tolist()))


def discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(n) + 2.0)


def ndcg_at_k(gains: np.ndarray, groups: list[tuple[int, int]], ideal_gains: np.ndarray, k: int) -> float:
    """Each position of a tie group expects the group's mean gain."""
    ideal = np.sort(ideal_gains)[::-1][:k]
    idcg = float(ideal @ discounts(len(ideal)))
    if idcg == 0:
        return 0.0
    disc, dcg = discounts(k), 0.0
    for a, b in groups:
        if a >= k:
            break
        dcg += gains[a:b].mean() * disc[a:min(b, k)].sum()
    return dcg / idcg


def mrr_at_k(relevant: np.ndarray, groups: list[tuple[int, int]], k: int) -> float:
    """1 / rank of the first relevant candidate within the top k, expected over the orders of its tie group: with
    r relevant among n tied, P(first relevant at offset j) = C(n-1-j, r-1) / C(n, r)."""
    for a, b in groups:
        if a >= k:
            break
        n, r = b - a, int(relevant[a:b].sum())
        if r == 0:
            continue
        expected, p = 0.0, r / n  # p: P(offset j), j = 0 first
        for j in range(min(n - r + 1, k - a)):
            expected += p / (a + j + 1)
            p *= (n - j - r) / (n - 1 - j) if n - 1 - j > 0 else 0.0  # C(n-2-j, r-1) / C(n-1-j, r-1)
        return expected
    return 0.0


def recall_at_k(relevant: np.ndarray, groups: list[tuple[int, int]], n_relevant: int, k: int) -> float:
    """A tie group cut by the cutoff contributes its relevant count times the fraction of it inside."""
    if n_relevant == 0:
        return 0.0
    found = 0.0
    for a, b in groups:
        if a >= k:
            break
        found += relevant[a:b].sum() * (min(b, k) - a) / (b - a)
    return found / n_relevant


def query_metrics(ranked: list[str], scores: np.ndarray, qrels: dict[str, int],
                  cutoffs: tuple[int, int, int] = (10, 10, 100)) -> tuple[float, float, float]:
    """(nDCG@k1, MRR@k2, Recall@k3) of one query's candidates `ranked` (best first, `scores` higher is better)."""
    gains = np.array([max(qrels.get(d, 0), 0) for d in ranked], dtype=np.float64)
    relevant = gains > 0
    groups = tie_groups(np.asarray(scores))
    positive = np.array([g for g in qrels.values() if g > 0], dtype=np.float64)
    k_ndcg, k_mrr, k_recall = cutoffs
    return (ndcg_at_k(gains, groups, positive, k_ndcg), mrr_at_k(relevant, groups, k_mrr),
            recall_at_k(relevant, groups, len(positive), k_recall))
