"""Every precision is what a server stores and computes (bench/precisions.py, issue 22).

Oracles: faiss' ScalarQuantizer QT_8bit decode (sa_decode) and sentence-transformers' int8 buckets
(`quantize_embeddings`) for the int8 decode; sentence-transformers' `semantic_search_faiss` (ubinary corpus,
rescore=True: the float query against the documents' 0/1 bits) and a numpy brute force for binary+rescore. The int8
search and STS int8 similarity against decoded documents are in tests/test_precision.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from scipy.spatial.distance import cosine
from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss

from bench import BenchError
from bench.data.beir import RetrievalSet
from bench.export_mteb import cell_meta
from bench.compressions import Float16
from bench.precisions import KNOWN, PRECISION_RECORDS, Precision, bytes_per_vector, precision, supported
from bench.report.interactive import SYMBOLS
from bench.report.plots import MARKERS
from bench.drift import tolerance
from bench.search import TIE_ORDER_SEED
from bench.spec import PRECISIONS, EvalSpec, RunSpec
from bench.tasks import TASKS
from bench.tasks.mteb import served_vectors
from bench.tasks.retrieval import make_searcher, per_query_metrics
from bench.tasks.sts import pair_similarity
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
    # spelled out, as committed run_ids hash it: a new precision joins a run only when asked for (--precisions)
    assert PRECISIONS == ("fp32", "int8", "binary", "binary+rescore", "binary+rescore-int8", "binary+rescore-fp32")
    compressions = ("fp16", "bf16", "fp8", "int4", "int8-fixed", "int4-fixed", "pq8", "pq16", "pq32",
                    "rabitq")  # issue 24
    assert supported("sts") == supported("mteb") == ("fp32", "int8", "binary", *compressions)  # no rescoring
    assert supported("retrieval") == KNOWN


def test_bytes_per_vector_count_every_byte_a_query_reads_per_document():
    assert [bytes_per_vector(64, p) for p in PRECISIONS] == [256, 64, 8, 8, 8 + 64, 8 + 256]
    # a head's multi-bit codes: bits_per_dim bits per dim, plus the same copy
    assert [bytes_per_vector(64, p, bits_per_dim=2) for p in PRECISIONS[2:]] == [16, 16, 16 + 64, 16 + 256]


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


# --- one record per precision: looked up by name, never branched on ------------------------------------------------

# Scoring and display code that asks the record for everything about a precision (bench/spec.py keeps the default
# list, bench/reproduce.py its measured tolerances: tables keyed by name on purpose).
ASKS_THE_RECORD = ("bench/tasks/sts.py", "bench/tasks/mteb.py", "bench/tasks/retrieval.py", "bench/search.py",
                   "bench/export_mteb.py", "bench/report/plots.py", "bench/report/interactive.py", "bench/heads.py")


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant in a module's code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_scoring_code_names_a_precision():
    """A precision's name in scoring code is a branch or a table that a new precision silently misses (as an
    unknown retrieval precision once fell through to binary+rescore): such code asks the record instead."""
    root = Path(__file__).resolve().parent.parent
    named = [(path, line, text) for path in ASKS_THE_RECORD for line, text in _code_strings(root / path)
             if text in KNOWN or text.startswith("binary")]
    assert named == []


class Float16ForTests(Float16):
    """A form registered only here, under a name no default knows: what a new precision adds is one record."""

    name = "fp16-test"


def test_a_new_precision_is_one_record_and_changes_no_run_id(monkeypatch):
    """Registered, the record alone gives STS, mteb and retrieval scores (oracles: scipy's cosine distance, numpy
    brute force over the float16-rounded documents) and its bytes; the default list and every run_id stay."""
    run = RunSpec(method="pretrained", task="stsb")
    before = run.run_id
    record = Precision("fp16-test", Float16ForTests(), "2 bytes per dim", "float query . decoded document", "X", "x")
    monkeypatch.setitem(PRECISION_RECORDS, record.name, record)
    for module in ("bench.precisions", "bench.spec"):  # and known everywhere the registry is read
        monkeypatch.setattr(f"{module}.KNOWN", (*KNOWN, record.name))
    assert RunSpec(method="pretrained", task="stsb").run_id == before and "fp16-test" not in EvalSpec().precisions
    vectors = unit_vectors(60, 32, 8)
    half = vectors.astype(np.float16).astype(np.float32)
    left, right = np.arange(30), np.arange(30, 60)
    expected = [1 - cosine(half[i], half[j]) for i, j in zip(left, right)]
    np.testing.assert_allclose(pair_similarity(vectors, left, right, "fp16-test"), expected, atol=1e-6)
    served = served_vectors({"query": vectors[:10], "document": vectors[10:]}, "fp16-test")
    np.testing.assert_array_equal(np.concatenate([served["query"], served["document"]]), half)
    corpus, queries = unit_vectors(500, 32, 9), unit_vectors(20, 32, 10)
    ours = make_searcher(corpus, corpus, "fp16-test", EvalSpec(precisions=("fp16-test",))).search(queries, 10)
    np.testing.assert_array_equal(ours, brute_force(queries @ corpus.astype(np.float16).astype(np.float32).T, 10))
    assert bytes_per_vector(32, "fp16-test") == 64


def test_every_lookup_refuses_an_unknown_precision_in_one_line():
    """Scoring, export and reproduce tolerances alike (a tolerance table must not hand an unknown name a default)."""
    vectors, pairs = unit_vectors(4, 16), np.arange(2)
    message = f"unknown precision 'int3'; choose from {', '.join(KNOWN)}"
    for call in (lambda: pair_similarity(vectors, pairs, pairs, "int3"), lambda: served_vectors({"text": vectors}, "int3"),
                 lambda: tolerance("spearman", "int3"), lambda: cell_meta("m", "r", 1, 16, "int3"),
                 lambda: bytes_per_vector(16, "int3")):
        with pytest.raises(BenchError) as error:
            call()
        assert str(error.value) == message
    with pytest.raises(BenchError, match=r"^sts tasks cannot score precision 'binary\+rescore'; use fp32, int8, "
                       r"binary, fp16, bf16, fp8, int4, int8-fixed, int4-fixed, pq8, pq16, pq32, rabitq$"):
        pair_similarity(vectors, pairs, pairs, "binary+rescore")


def test_the_report_draws_every_known_precision_without_torch_or_faiss():
    assert set(MARKERS) == set(SYMBOLS) == set(KNOWN)
    code = ("import sys, bench.report, bench.report.plots, bench.report.interactive, bench.precisions; "
            "assert not {'torch', 'faiss'} & set(sys.modules), 'the report imported torch or faiss'")
    subprocess.run([sys.executable, "-c", code], check=True)
