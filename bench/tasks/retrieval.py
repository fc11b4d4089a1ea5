"""Retrieval family (BEIR format): nDCG@10, MRR@10, Recall@100 with exact search through faiss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from bench.data.beir import RetrievalSet, load_beir
from bench.spec import EvalSpec
from bench.tasks import TASKS
from bench.transforms import truncate

TOP_K = 100
# BEIR sets `bench data fetch` knows; any folder in BEIR layout under the data dir works by its name too.
BEIR_SETS = ("scifact", "nfcorpus", "arguana", "fiqa", "scidocs", "trec-covid", "quora", "nq", "hotpotqa",
             "climate-fever", "dbpedia-entity", "fever", "msmarco", "touche2020", "cqadupstack")


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    """trec_eval's ndcg_cut: gain = relevance, discount log2(rank + 1), ideal from all judged documents."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
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


def flat_search(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k (cosine when the vectors are normalized)."""
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    _, ids = index.search(queries, min(k, corpus.shape[0]))
    return ids


@dataclass(frozen=True)
class RetrievalTask:
    name: str
    family: str = "retrieval"
    main_metric: str = "ndcg@10"
    split: str = "test"

    def load(self, data_dir: Path, spec: EvalSpec) -> RetrievalSet:
        return load_beir(data_dir, self.name, self.split, spec.max_queries)

    def texts(self, data: RetrievalSet, spec: EvalSpec) -> dict[str, tuple[list[str], int]]:
        return {"corpus": (data.corpus_texts, spec.max_doc_len), "queries": (data.query_texts, spec.max_query_len)}

    def prepare(self, data: RetrievalSet, texts: dict) -> dict:
        return {"qrels": [data.qrels[q] for q in data.query_ids]}

    def score_cell(self, data: RetrievalSet, arrays: dict, aux: dict, layer: int, dim: int, precision: str,
                   spec: EvalSpec) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Metrics of one cell, and per-query values for statistics."""
        corpus = truncate(arrays["corpus"][layer - 1], dim, spec.normalize)
        queries = truncate(arrays["queries"][layer - 1], dim, spec.normalize)
        ids = flat_search(corpus, queries, TOP_K)
        rankings = [[data.corpus_ids[i] for i in row if i >= 0] for row in ids]
        per_query = per_query_metrics(rankings, aux["qrels"])
        return retrieval_metrics(per_query), per_query

    def gold(self, data: RetrievalSet) -> dict[str, np.ndarray]:
        return {}


for _name in BEIR_SETS:
    TASKS.register(_name)(RetrievalTask(_name))
