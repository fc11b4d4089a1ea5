"""Every precision is what a server stores and computes (bench/precisions.py, issue 22).

Oracles: faiss' ScalarQuantizer QT_8bit decode (sa_decode) and sentence-transformers' int8 buckets
(`quantize_embeddings`) for the int8 decode; sentence-transformers' `semantic_search_faiss` (ubinary corpus,
rescore=True: the float query against the documents' 0/1 bits) and a numpy brute force for binary+rescore. The int8
search and STS int8 similarity against decoded documents are in tests/test_precision.py.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss

from bench import BenchError
from bench.data.beir import RetrievalSet
from bench.precisions import KNOWN, precision, supported
from bench.spec import PRECISIONS, EvalSpec
from bench.tasks import TASKS
from bench.search import TIE_ORDER_SEED
from bench.tasks.retrieval import make_searcher, per_query_metrics
from bench.precisions import bytes_per_vector
from bench.transforms import dequantize_int8, int8_ranges, quantize_int8, truncate


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return truncate(np.random.default_rng(seed).standard_normal((n, dim)), dim, normalize=True)


def brute_force(scores: np.ndarray, k: int) -> np.ndarray:
    """Best score first, equal scores in corpus order."""
    ids = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((ids, -scores), axis=-1)[:, :k]


# --- the records -------------------------------------------------------------------------------------------------

def test_unknown_precision_is_one_line_naming_the_known_ones():
    for call in (lambda: precision("int3"), lambda: EvalSpec(precisions=("fp32", "int3")),
                 lambda: make_searcher(unit_vectors(20, 16), unit_vectors(20, 16), "int3", EvalSpec())):
        with pytest.raises(BenchError) as error:
            call()
        assert str(error.value) == f"unknown precision 'int3'; choose from {', '.join(KNOWN)}"


def test_the_default_list_is_separate_from_the_known_precisions():
    assert EvalSpec().precisions == PRECISIONS and set(PRECISIONS) <= set(KNOWN)
    assert PRECISIONS is not KNOWN  # a precision added to the registry does not join every default run
    assert supported("sts") == supported("mteb") == ("fp32", "int8", "binary")  # no search: no rescoring
    assert supported("retrieval") == KNOWN


def test_bytes_per_vector_count_every_byte_a_query_reads_per_document():
    assert [bytes_per_vector(64, p) for p in KNOWN] == [256, 64, 8, 8, 8 + 64, 8 + 256]
    # a head's multi-bit codes: bits_per_dim bits per dim, plus the same copy
    assert [bytes_per_vector(64, p, bits_per_dim=2) for p in KNOWN[2:]] == [16, 16, 16 + 64, 16 + 256]


# --- int8: decoded to bucket midpoints ---------------------------------------------------------------------------

def test_int8_decodes_to_the_bucket_midpoint_as_faiss_sq8_does():
    x = unit_vectors(400, 32, 1)
    x[:, 5] = 0.25  # a constant dimension decodes to its one value
    ranges = int8_ranges(x)
    codes = quantize_int8(x, ranges)
    ours = dequantize_int8(codes, ranges)
    sq = faiss.ScalarQuantizer(32, faiss.ScalarQuantizer.QT_8bit)
    faiss.copy_array_to_vector(np.concatenate([ranges[0], ranges[1] - ranges[0]]), sq.trained)
    np.testing.assert_allclose(ours, sq.decode((codes.astype(np.int16) + 128).astype(np.uint8)), atol=1e-6)
    np.testing.assert_allclose(ours[:, 5], 0.25, atol=1e-7)
    # and it is the middle of sentence-transformers' bucket: its lower edge plus half a step
    step = (ranges[1] - ranges[0]) / 255
    st_codes = quantize_embeddings(x, "int8", ranges=ranges).astype(np.float64)
    np.testing.assert_allclose(ours, ranges[0] + (st_codes + 128 + 0.5) * step, atol=1e-6)


# --- binary+rescore: the float query against the documents' own bits, per cutoff --------------------------------

def oracle_binary_rescore(corpus: np.ndarray, queries: np.ndarray, k: int, multiplier: int):
    """numpy: the Hamming shortlist of k * multiplier (its last tie group cut by the seeded order of
    TIE_ORDER_SEED), all of it re-ranked by query . (+-1 bits): (scores, ids)."""
    signs = np.where(corpus > 0, 1.0, -1.0)
    distances = ((queries[:, None, :] > 0) != (corpus[None, :, :] > 0)).sum(-1)
    tie_rank = np.argsort(np.random.default_rng(TIE_ORDER_SEED).permutation(len(corpus)))
    shortlist = np.stack([np.lexsort((tie_rank, d))[:k * multiplier] for d in distances])
    scores = np.einsum("qsd,qd->qs", signs[shortlist], queries)
    order = np.lexsort((shortlist, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(shortlist, order, axis=-1)


@pytest.mark.parametrize("k", [10, 100])
def test_binary_rescore_is_the_float_query_against_the_documents_own_bits(k):
    corpus, queries = unit_vectors(1500, 64, 2), unit_vectors(30, 64, 3)
    ours = make_searcher(corpus, corpus, "binary+rescore", EvalSpec(rescore_multiplier=4)).search(queries, k)
    np.testing.assert_array_equal(ours, oracle_binary_rescore(corpus, queries, k, 4)[1])


def test_binary_rescore_ranks_as_sentence_transformers_semantic_search_faiss():
    """sentence-transformers rescores the float query against the documents' 0/1 bits; for one query that is
    (q . (+-1 bits) + sum q) / 2, the same ranking. faiss breaks Hamming ties at the shortlist's cut its own way, so
    only queries without a tie across the cut are compared."""
    corpus, queries = unit_vectors(1500, 256, 4), unit_vectors(60, 256, 5)  # 256 dims: fewer ties at the cut
    k, multiplier = 10, 4
    index = faiss.IndexBinaryFlat(256)
    index.add(quantize_embeddings(corpus, "ubinary"))
    hits, _ = semantic_search_faiss(queries, corpus_index=index, corpus_precision="ubinary", top_k=k,
                                    rescore=True, rescore_multiplier=multiplier)
    ours = make_searcher(corpus, corpus, "binary+rescore", EvalSpec(rescore_multiplier=multiplier)).search(queries, k)
    distances = np.sort(((queries[:, None, :] > 0) != (corpus[None, :, :] > 0)).sum(-1), axis=1)
    clean = distances[:, k * multiplier - 1] < distances[:, k * multiplier]
    assert clean.sum() >= 5
    for row, query_hits, ok in zip(ours, hits, clean):
        if ok:
            assert list(row[:k]) == [h["corpus_id"] for h in query_hits]


def test_each_cutoff_has_its_own_shortlist():
    """nDCG@10 and MRR@10 rank the top 10 of a 40-document Hamming shortlist (4 x 10), recall@100 the top 100 of
    400: a query's own rankings, checked against the numpy oracle at both cutoffs."""
    corpus, queries = unit_vectors(2000, 32, 6), unit_vectors(40, 32, 7)
    best = brute_force(queries @ corpus.T, 3)  # the float neighbours are relevant: the rescoring shortlist matters
    data = RetrievalSet(corpus_ids=[f"d{i}" for i in range(len(corpus))], corpus_texts=[""] * len(corpus),
                        query_ids=[f"q{i}" for i in range(len(queries))], query_texts=[""] * len(queries),
                        qrels={f"q{i}": {f"d{j}": 1 for j in row} for i, row in enumerate(best)})
    aux = {"qrels": [data.qrels[q] for q in data.query_ids]}
    spec = EvalSpec(rescore_multiplier=4, normalize=False)
    arrays = {"corpus": corpus[None], "queries": queries[None]}
    _, per_query = TASKS.get("scifact").score_cell(data, arrays, aux, 1, 32, "binary+rescore", spec)
    expected = {}
    for k in (10, 100):
        scores, ids = oracle_binary_rescore(corpus, queries, k, 4)
        metrics = per_query_metrics([[f"d{i}" for i in row] for row in ids], aux["qrels"], list(scores))
        expected.update({m: v for m, v in metrics.items() if m.endswith(f"@{k}")})
    for name, values in expected.items():
        np.testing.assert_allclose(per_query[name], values, err_msg=name)
    # the cutoffs really disagree here: the top 10 of the 400 shortlist is another ranking
    wide = [[f"d{i}" for i in row[:10]] for row in oracle_binary_rescore(corpus, queries, 100, 4)[1]]
    assert not np.allclose(per_query_metrics(wide, aux["qrels"])["ndcg@10"], per_query["ndcg@10"])
