"""BEIR conventions of the retrieval family, on a tiny hand-made BEIR folder: graded (2, 1) and negative (-1)
judgements, a query judged only non-relevant, and a query whose id is a document's id (as ArguAna's and Quora's
queries are documents of their corpus).

Oracles: pytrec_eval (trec_eval: ndcg_cut.10, recall.100, recip_rank) on our own rankings, and mteb's retrieval
evaluator (`RetrievalEvaluator.evaluate`, pytrec_eval underneath, with its `ignore_identical_ids`) on the full
exact-cosine scores of the same vectors, so it ranks and drops identical ids by itself. mteb's task classes are the
oracle for which catalog sets drop identical ids.
"""

from __future__ import annotations

import json
from dataclasses import replace

import mteb
import numpy as np
import pytest
import pytrec_eval
from mteb._evaluators.retrieval_evaluator import RetrievalEvaluator

from bench.catalog import TASK_META, local_beir_meta
from bench.data.beir import load_beir
from bench.spec import EvalSpec
from bench.tasks.retrieval import RetrievalTask, per_query_metrics

N_DOCS, DIM = 130, 16  # more than 100 documents: recall@100 sees whether the query's own document is backfilled
SELF = "d5"  # a query with a document's id: its vector is that document's, so it ranks itself first
TOL = 1e-9


def vectors() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Seeded random unit vectors: corpus d0..d129, and the queries SELF, q1, q2, q3."""
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    others = rng.standard_normal((3, DIM)).astype(np.float32)
    queries = np.concatenate([corpus[5:6], others / np.linalg.norm(others, axis=1, keepdims=True)])
    return corpus, queries, [SELF, "q1", "q2", "q3"]


def full_ranking(corpus: np.ndarray, query: np.ndarray) -> list[str]:
    return [f"d{i}" for i in np.argsort(-(corpus @ query), kind="stable")]


def hand_made_qrels(corpus: np.ndarray, queries: np.ndarray) -> dict[str, dict[str, int]]:
    """Judgements placed at chosen ranks of each query's full ranking (1-based, the query's own document included)."""
    ranks = {q: full_ranking(corpus, v) for q, v in zip(vectors()[2], queries)}
    at = {q: (lambda r, q=q: ranks[q][r - 1]) for q in ranks}
    assert at[SELF](1) == SELF
    return {SELF: {at[SELF](3): 2, at[SELF](101): 1},  # rank 101 is rank 100 once its own document is dropped
            "q1": {at["q1"](2): 2, at["q1"](5): 1, at["q1"](30): 1},  # graded, one beyond the cutoff of 10
            "q2": {at["q2"](1): -1, at["q2"](4): 1, at["q2"](7): 2},  # a negative grade on top
            "q3": {at["q3"](1): 0, at["q3"](2): -1}}  # judged only non-relevant: scores 0, but counts


@pytest.fixture
def fixture(tmp_path):
    """A BEIR folder <tmp>/fixture with the vectors' corpus, queries and qrels; returns (data dir, vectors)."""
    corpus, queries, query_ids = vectors()
    qrels = hand_made_qrels(corpus, queries)
    folder = tmp_path / "fixture"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n"
                                                 for i in range(N_DOCS)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n"
                                                  for q in query_ids))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, docs in qrels.items() for d, r in docs.items()))
    return tmp_path, corpus, queries


def ours(data_dir, corpus, queries, ignore_identical_ids: bool) -> tuple[list[str], dict[str, np.ndarray]]:
    """Our loader and task on the folder, fp32 exact search of the given vectors: query ids and per-query metrics."""
    task = RetrievalTask(replace(local_beir_meta("fixture"), ignore_identical_ids=ignore_identical_ids))
    spec = EvalSpec(precisions=("fp32",))
    data = task.load(data_dir, spec)
    order = {q: i for i, q in enumerate(vectors()[2])}
    arrays = {"corpus": corpus[None], "queries": queries[[order[q] for q in data.query_ids]][None]}
    _, per_query = task.score_cell(data, arrays, task.prepare(data, {}), 1, DIM, "fp32", spec)
    return data.query_ids, per_query


def test_every_judged_query_is_kept_also_one_judged_only_non_relevant(fixture):
    data = load_beir(fixture[0], "fixture")
    assert data.query_ids == vectors()[2]  # q3 (grades 0 and -1 only) included, as BEIR and mteb keep it


@pytest.mark.parametrize("ignore_identical_ids", [True, False])
def test_per_query_metrics_equal_mtebs_retrieval_evaluator(fixture, ignore_identical_ids):
    """Per query nDCG@10 and Recall@100 (pytrec_eval's, through mteb), and the mean MRR@10 (mteb's own), with the
    query's own document dropped (ArguAna, Quora) or kept (SciFact). Catches: negative grades summed into DCG,
    a query judged only non-relevant dropped, the query's own document kept, or dropped without backfilling the
    top 100 (SELF's relevant document at rank 101)."""
    data_dir, corpus, queries = fixture
    query_ids, per_query = ours(data_dir, corpus, queries, ignore_identical_ids)
    qrels = load_beir(data_dir, "fixture").qrels
    results = {q: {f"d{i}": float(s) for i, s in enumerate(corpus @ v)} for q, v in zip(vectors()[2], queries)}
    gaps = np.diff(np.sort(corpus @ queries.T, axis=0), axis=0)
    assert gaps.min() > 1e-6  # no near-ties: float32 search and the oracle rank alike
    evaluator = RetrievalEvaluator(None, None, task_metadata=None, hf_split="test", hf_subset="default", top_k=1000,
                                   timer=None)
    theirs = evaluator.evaluate(qrels, results, [10, 100], ignore_identical_ids=ignore_identical_ids)
    for i, q in enumerate(query_ids):
        assert per_query["ndcg@10"][i] / 100 == pytest.approx(theirs.all_scores[q]["ndcg_cut_10"], abs=TOL), q
        assert per_query["recall@100"][i] / 100 == pytest.approx(theirs.all_scores[q]["recall_100"], abs=TOL), q
    assert per_query["mrr@10"].mean() / 100 == pytest.approx(theirs.mrr["MRR@10"], abs=TOL)
    assert len(per_query["ndcg@10"]) == 4 and per_query["ndcg@10"][query_ids.index("q3")] == 0
    assert per_query["ndcg@10"][query_ids.index(SELF)] < 100  # the fixture tells kept from dropped


def test_metrics_equal_pytrec_eval_per_query_on_graded_and_negative_judgements(fixture):
    """per_query_metrics on given rankings (no search) against trec_eval's ndcg_cut.10, recall.100 and
    recip_rank of the top 10 (MRR@10), query by query."""
    data_dir, corpus, queries = fixture
    qrels = load_beir(data_dir, "fixture").qrels
    rankings = {q: full_ranking(corpus, v)[:100] for q, v in zip(vectors()[2], queries)}
    run = {q: {d: float(100 - r) for r, d in enumerate(ranked)} for q, ranked in rankings.items()}
    top10 = {q: {d: s for d, s in docs.items() if s > 90} for q, docs in run.items()}
    oracle = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    ids = list(rankings)
    mine = per_query_metrics([rankings[q] for q in ids], [qrels[q] for q in ids])
    for i, q in enumerate(ids):
        assert mine["ndcg@10"][i] / 100 == pytest.approx(oracle[q]["ndcg_cut_10"], abs=TOL), q
        assert mine["recall@100"][i] / 100 == pytest.approx(oracle[q]["recall_100"], abs=TOL), q
        assert mine["mrr@10"][i] / 100 == pytest.approx(mrr[q]["recip_rank"], abs=TOL), q
    assert 0 < mine["ndcg@10"][ids.index("q2")] < 100  # the negative grade on top is part of the case


# The catalog's BEIR sets and mteb's task of the same dataset (the catalog pins mteb's copies and revisions).
MTEB_NAMES = {"scifact": "SciFact", "nfcorpus": "NFCorpus", "arguana": "ArguAna", "fiqa": "FiQA2018",
              "scidocs": "SCIDOCS", "trec-covid": "TRECCOVID", "quora": "QuoraRetrieval", "nq": "NQ",
              "hotpotqa": "HotpotQA", "climate-fever": "ClimateFEVER", "dbpedia-entity": "DBPedia", "fever": "FEVER",
              "msmarco": "MSMARCO", "touche2020": "Touche2020"}


def test_catalog_drops_identical_ids_where_mteb_does():
    for name, mteb_name in MTEB_NAMES.items():
        task = mteb.get_task(mteb_name)
        assert task.metadata.dataset["path"] == TASK_META[name].source, name
        assert TASK_META[name].ignore_identical_ids == task.ignore_identical_ids, name
    assert TASK_META["arguana"].ignore_identical_ids and TASK_META["quora"].ignore_identical_ids
    assert not TASK_META["scifact"].ignore_identical_ids and not local_beir_meta("mine").ignore_identical_ids
