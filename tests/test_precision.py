"""Precision as an axis: int8, binary and binary+rescore search and STS scoring, cost rows, bad input.

Oracles: numpy brute force for every faiss search (Hamming and inner product, ties ranked by corpus order), and
for binary+rescore-int8 end to end (Hamming shortlist, decoded int8 codes, float rescoring); sentence-transformers'
`quantize_embeddings` (codes, decoded to bucket midpoints here) and `pairwise_cos_sim` for int8 search and the STS
int8 similarity; scipy's Hamming distance for the binary STS similarity. tests/test_precisions.py: the records.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.distance import hamming
from sentence_transformers.util import pairwise_cos_sim
from sentence_transformers.util.quantization import quantize_embeddings

from bench import BenchError
from bench.cli import main
from bench.data.beir import RetrievalSet
from bench.data.sts import STSPairs
from bench.encoder import Encoder
from bench.evaluate import evaluate_grid
from bench.spec import EvalSpec, SubModel
from bench.tasks import TASKS
from bench.search import TIE_ORDER_SEED, binary_index, float_index, rescore, top_k
from bench.tasks.retrieval import make_searcher, per_query_metrics
from bench.tasks.sts import pair_similarity
from bench.transforms import binarize, truncate
from methods import Checkpoint


def unit_vectors(n: int, dim: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return scale * truncate(np.random.default_rng(seed).standard_normal((n, dim)), dim, normalize=True)


def brute_force(scores: np.ndarray, k: int) -> np.ndarray:
    """Oracle ranking: best score first, equal scores in corpus order."""
    ids = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((ids, -scores), axis=-1)[:, :k]


def hamming_distances(a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
    return np.unpackbits(a_bits[:, None, :] ^ b_bits[None, :, :], axis=-1).sum(-1, dtype=np.int64)


# --- search equals brute force -------------------------------------------------------------------------------

def test_faiss_hamming_top_k_equals_numpy_brute_force_with_ties():
    corpus, queries = binarize(unit_vectors(400, 16, 1)), binarize(unit_vectors(30, 16, 2))  # 17 distances: ties
    k = 25
    ours = top_k(binary_index(corpus, "flat"), queries, k)[1]
    distances = hamming_distances(queries, corpus)
    oracle = brute_force(-distances, k)
    ours_d, oracle_d = np.take_along_axis(distances, ours, 1), np.take_along_axis(distances, oracle, 1)
    np.testing.assert_array_equal(ours_d, oracle_d)  # the same distances at every rank
    boundary = oracle_d[:, -1:]
    inside = oracle_d < boundary  # ranks before the tie group that straddles k: identical, corpus order among ties
    np.testing.assert_array_equal(ours[inside], oracle[inside])
    assert all(len(set(row)) == k for row in ours)
    cut = (distances == boundary).sum(1) > (oracle_d == boundary).sum(1)
    assert cut.any()  # the test really has ties cut at k (which of them faiss keeps is its choice)


def test_float_flat_top_k_equals_numpy_brute_force_with_ties():
    rng = np.random.default_rng(3)
    corpus = rng.integers(-2, 3, (300, 8)).astype(np.float32)  # small integers: exact scores, many ties
    queries = rng.integers(-2, 3, (20, 8)).astype(np.float32)
    scores = queries @ corpus.T
    ours = top_k(float_index(corpus, "flat"), queries, 300)[1]  # the whole corpus: no tie group is cut
    np.testing.assert_array_equal(ours, brute_force(scores, 300))


def decoded_int8(vectors: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Oracle decode: sentence-transformers' int8 codes back to each bucket's midpoint (faiss SQ8's decode)."""
    lo, hi = calibration.min(0).astype(np.float64), calibration.max(0).astype(np.float64)
    codes = quantize_embeddings(vectors, "int8", calibration_embeddings=calibration).astype(np.float64)
    return lo + (codes + 128.5) * (hi - lo) / 255


def test_int8_search_ranks_by_the_float_query_against_decoded_documents():
    corpus, queries = unit_vectors(300, 32, 4), unit_vectors(20, 32, 5)
    searcher = make_searcher(corpus, corpus, "int8", EvalSpec())
    np.testing.assert_array_equal(searcher.search(queries, 300),
                                  brute_force(queries @ decoded_int8(corpus, corpus).T, 300))


def test_binary_searcher_is_hamming_over_sign_bits():
    corpus, queries = unit_vectors(200, 24, 6), unit_vectors(10, 24, 7)
    ids = make_searcher(corpus, corpus, "binary", EvalSpec()).search(queries, 200)
    distances = hamming_distances(binarize(queries), binarize(corpus))
    # every document once, by Hamming distance (equal distances in the seeded tie order: any order is right here)
    assert all(sorted(row) == list(range(200)) for row in ids)
    np.testing.assert_array_equal(np.take_along_axis(distances, ids, axis=1), np.sort(distances, axis=1))


# --- rescoring -----------------------------------------------------------------------------------------------

def test_rescoring_never_returns_a_document_outside_the_shortlist():
    rng = np.random.default_rng(8)
    corpus, queries = unit_vectors(500, 16, 9), unit_vectors(150, 16, 10)  # > one block of 64 queries
    shortlist = np.stack([rng.choice(500, 30, replace=False) for _ in queries])
    shortlist[::7, 20:] = -1  # short lists are -1 padded, as faiss pads them
    ranked = rescore(queries, shortlist, lambda ids: corpus[ids])[1]
    for row, allowed, q in zip(ranked, shortlist, queries):
        assert set(row) <= set(allowed)
        real = allowed[allowed >= 0]
        np.testing.assert_array_equal(row[row >= 0], real[np.argsort(-(corpus[real] @ q), kind="stable")])


@pytest.mark.parametrize("precision", ["binary+rescore", "binary+rescore-int8", "binary+rescore-fp32"])
def test_binary_rescore_returns_only_hamming_shortlisted_documents(precision):
    corpus, queries = unit_vectors(400, 32, 11), unit_vectors(40, 32, 12)
    spec = EvalSpec(rescore_multiplier=3)
    ranked = make_searcher(corpus, corpus, precision, spec).search(queries, 10)
    distances = hamming_distances(binarize(queries), binarize(corpus))
    # the shortlist is 30 by Hamming (its last tie group cut by a seeded order): every document returned is within
    # the 30th smallest distance, and the whole shortlist comes back, re-ranked
    edge = np.sort(distances, axis=1)[:, 29]
    assert all((distances[i, r] <= edge[i]).all() for i, r in enumerate(ranked))
    assert ranked.shape == (40, 30)


def test_rescoring_the_whole_corpus_with_fp32_documents_is_exact_float_search():
    corpus, queries = unit_vectors(120, 16, 13), unit_vectors(15, 16, 14)
    spec = EvalSpec(rescore_multiplier=12)  # shortlist 10 * 12 = the whole corpus
    ranked = make_searcher(corpus, corpus, "binary+rescore-fp32", spec).search(queries, 10)
    np.testing.assert_array_equal(ranked, brute_force(queries @ corpus.T, 120))  # the whole shortlist, ranked


def brute_force_binary_rescore_int8(corpus: np.ndarray, queries: np.ndarray, calibration: np.ndarray, k: int,
                                    multiplier: int) -> tuple[np.ndarray, np.ndarray]:
    """Oracle, plain numpy: the Hamming distance of the sign vectors, shortlist k * multiplier (its last tie group
    cut by the seeded order of TIE_ORDER_SEED); the documents' int8 codes (sentence-transformers') decoded to each
    bucket's midpoint; the whole shortlist ranked by the float query's inner product with those, ties in corpus
    order. Also the distances, the shortlist and its scores."""
    distances = ((queries[:, None, :] > 0) != (corpus[None, :, :] > 0)).sum(-1)
    tie_rank = np.argsort(np.random.default_rng(TIE_ORDER_SEED).permutation(len(corpus)))
    shortlist = np.stack([np.lexsort((tie_rank, d))[:k * multiplier] for d in distances])
    documents = decoded_int8(corpus, calibration)
    scores = np.einsum("qsd,qd->qs", documents[shortlist], queries)
    order = np.lexsort((shortlist, -scores), axis=-1)  # shortlist holds corpus positions: ties by position
    return np.take_along_axis(shortlist, order, axis=-1), (distances, shortlist, scores)


@pytest.mark.parametrize("side", ["corpus", "queries"])
def test_binary_rescore_with_int8_documents_equals_numpy_brute_force(side):
    """Shortlist and rescoring both tested on ties: 32 dims give 33 Hamming distances (tie groups straddle the
    shortlist's cut), and 60 documents repeated later in the corpus give equal rescoring scores (the earlier copy
    first). Calibrated on the corpus or on the queries (then documents outside the range clip)."""
    base = unit_vectors(540, 32, 21)
    corpus = np.concatenate([base, base[::9]])  # every 9th document again, at the end
    queries = unit_vectors(40, 32, 22)
    calibration = corpus if side == "corpus" else queries
    k, multiplier = 10, 4
    spec = EvalSpec(rescore_multiplier=multiplier, int8_calibration=side)
    ours = make_searcher(corpus, calibration, "binary+rescore-int8", spec).search(queries, k)
    expected, (distances, shortlist, scores) = brute_force_binary_rescore_int8(corpus, queries, calibration, k,
                                                                               multiplier)
    np.testing.assert_array_equal(ours, expected)
    # the ties are really there: a tie group cut by the shortlist, and duplicate documents ranked in the top k
    edge = np.take_along_axis(distances, shortlist[:, -1:], axis=1)
    assert ((distances == edge).sum(1) > (np.take_along_axis(distances, shortlist, 1) == edge).sum(1)).any()
    original = {540 + j: 9 * j for j in range(60)}  # copy position -> the document it repeats
    assert any(original[d] in row[:k] for row in expected for d in row[:k] if d >= 540)  # both copies in a top k


# --- cost ----------------------------------------------------------------------------------------------------

def test_index_bytes_are_the_stored_codes_plus_a_small_header():
    """The rescoring variants count their copy of the documents: bits + 1 or 4 bytes per dim."""
    corpus = unit_vectors(1000, 64, 15)
    for precision, per_vector in (("fp32", 256), ("int8", 64), ("binary", 8), ("binary+rescore", 8),
                                  ("binary+rescore-int8", 8 + 64), ("binary+rescore-fp32", 8 + 256)):
        size = make_searcher(corpus, corpus, precision, EvalSpec()).index_bytes()
        assert 1000 * per_vector <= size < 1000 * per_vector + 2048, precision


@pytest.mark.parametrize("precision", ["fp32", "int8", "binary", "binary+rescore"])
def test_hnsw_backend_finds_most_exact_neighbors(precision):
    corpus, queries = unit_vectors(2000, 64, 16), unit_vectors(30, 64, 17)
    exact = make_searcher(corpus, corpus, precision, EvalSpec()).search(queries, 10)
    approx = make_searcher(corpus, corpus, precision, EvalSpec(search_index="hnsw")).search(queries, 10)
    if precision == "binary":  # Hamming ties: any document as close as the exact 10th one is a right answer
        distances = hamming_distances(binarize(queries), binarize(corpus))
        tenth = np.take_along_axis(distances, exact[:, -1:], 1)
        recall = np.mean(np.take_along_axis(distances, approx, 1) <= tenth)
    else:
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.8  # a broken index would find ~0.5% of them; HNSW's build order is not fixed across threads


# --- int8 calibration side -----------------------------------------------------------------------------------

def synthetic_retrieval(n_docs: int = 200, n_queries: int = 12, dim: int = 32):
    corpus = unit_vectors(n_docs, dim, 18)
    queries = unit_vectors(n_queries, dim, 19, scale=0.3)  # a narrower range than the corpus
    data = RetrievalSet(corpus_ids=[f"d{i}" for i in range(n_docs)], corpus_texts=[""] * n_docs,
                        query_ids=[f"q{i}" for i in range(n_queries)], query_texts=[""] * n_queries,
                        qrels={f"q{i}": {f"d{(7 * i + j) % n_docs}": 1 for j in range(3)} for i in range(n_queries)})
    arrays = {"corpus": corpus[None], "queries": queries[None]}
    return data, arrays, corpus, queries


@pytest.mark.parametrize("side", ["corpus", "queries"])
def test_int8_ranges_come_from_the_declared_calibration_side(side):
    data, arrays, corpus, queries = synthetic_retrieval()
    task = TASKS.get("scifact")
    aux = {"qrels": [data.qrels[q] for q in data.query_ids]}
    spec = EvalSpec(int8_calibration=side, normalize=False)
    _, per_query = task.score_cell(data, arrays, aux, 1, 32, "int8", spec)
    calibration = corpus if side == "corpus" else queries
    scores = queries @ decoded_int8(corpus, calibration).T  # the float queries are never quantized
    rankings = [[data.corpus_ids[i] for i in row] for row in brute_force(scores, 100)]
    for name, values in per_query_metrics(rankings, aux["qrels"]).items():
        np.testing.assert_allclose(per_query[name], values, err_msg=name)


# --- STS -----------------------------------------------------------------------------------------------------

def test_sts_int8_similarity_is_the_cosine_of_the_decoded_vectors():
    vectors = unit_vectors(80, 48, 20)
    left, right = np.arange(0, 40), np.arange(40, 80)
    decoded = decoded_int8(vectors, vectors).astype(np.float32)
    oracle = pairwise_cos_sim(decoded[left], decoded[right]).numpy()
    np.testing.assert_allclose(pair_similarity(vectors, left, right, "int8"), oracle, rtol=1e-5, atol=1e-6)


def test_sts_binary_similarity_is_one_minus_hamming_of_sign_bits():
    vectors = unit_vectors(60, 32, 21)
    left, right = np.arange(30), np.arange(30, 60)
    expected = [1 - hamming(vectors[a] > 0, vectors[b] > 0) for a, b in zip(left, right)]
    np.testing.assert_allclose(pair_similarity(vectors, left, right, "binary"), expected)


# --- the whole grid on a tiny model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return Encoder.named("tiny-random-bert", device="cpu")


def sts_slice() -> STSPairs:
    words = "a man is playing a guitar while the woman slices some onions on a wooden board".split()
    rng = np.random.default_rng(22)
    sentences = [" ".join(rng.choice(words, 6)) for _ in range(60)]
    return STSPairs(sentences[:30], sentences[30:], rng.uniform(0, 5, 30), 0.0, 5.0)


def test_grid_rows_carry_precision_bytes_and_cost(tiny):
    spec = EvalSpec(dims=(16, 64), max_doc_len=32)
    data = RetrievalSet(corpus_ids=[f"d{i}" for i in range(40)], corpus_texts=[f"document {i} about topic {i % 7}"
                                                                              for i in range(40)],
                        query_ids=["q0", "q1", "q2"], query_texts=["topic 1", "topic 2", "document 5"],
                        qrels={"q0": {"d1": 1}, "q1": {"d2": 1}, "q2": {"d5": 1}})
    rows, examples = evaluate_grid(tiny, Checkpoint("tiny", "tiny"), TASKS.get("scifact"), data, spec)
    cells = [r for r in rows if r.get("dim", -1) > 0]
    per_dim = {"fp32": 4, "int8": 1, "binary": 1 / 8, "binary+rescore": 1 / 8, "binary+rescore-int8": 1 + 1 / 8,
               "binary+rescore-fp32": 4 + 1 / 8}
    assert {r["precision"] for r in cells} == set(per_dim)
    for r in cells:
        assert r["bytes_per_vector"] == per_dim[r["precision"]] * r["dim"]
        if r["metric"] == "relative_encode_cost":
            assert r["score"] == r["layer"] / 2
    size = {(r["dim"], r["precision"]): r["score"] for r in cells if r["metric"] == "index_bytes" and r["layer"] == 2}
    assert size[64, "fp32"] > size[64, "int8"] > size[64, "binary"] == size[64, "binary+rescore"]
    assert size[64, "binary+rescore-fp32"] > size[64, "binary+rescore-int8"] > size[64, "binary"]
    assert all(r["score"] > 0 for r in cells if r["metric"] == "search_ms_per_query")
    assert examples["2/64/binary+rescore/ndcg@10"].shape == (3,)


def test_sts_grid_has_no_binary_rescore_rows_and_cost_is_relative_to_the_backbone(tiny):
    spec = EvalSpec(dims=(16, 64))
    rows, examples = evaluate_grid(tiny, Checkpoint("tiny", "tiny"), TASKS.get("stsb"), sts_slice(), spec,
                                   backbone_layers=6)
    precisions = {r["precision"] for r in rows if r.get("dim", -1) > 0}
    assert precisions == {"fp32", "int8", "binary"}
    assert examples["1/16/binary/similarity"].shape == (30,)
    cost = {r["layer"]: r["score"] for r in rows if r.get("metric") == "relative_encode_cost"}
    assert cost == {1: 1 / 6, 2: 2 / 6}  # a checkpoint cut to 2 blocks of a 6-layer backbone costs 2/6


# --- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(dims=(16, 20), precisions=("fp32", "binary")), "precision binary packs 8 dims per byte, but dims 20"),
    (dict(precisions=("fp32", "int3")), "unknown precision 'int3'; choose from fp32, int8, binary, binary"),
    (dict(precisions=()), "no precision to evaluate"),
    (dict(int8_calibration="train"), "unknown int8_calibration 'train'; choose from corpus, queries"),
    (dict(search_index="ivf"), "unknown search_index 'ivf'; choose from flat, hnsw"),
    (dict(rescore_multiplier=0), "rescore_multiplier must be positive"),
])
def test_bad_eval_spec_is_one_clear_error(kwargs, message):
    with pytest.raises(BenchError, match=message):
        EvalSpec(**kwargs)


def test_non_multiple_of_8_dims_for_binary_are_allowed_without_binary():
    assert EvalSpec(dims=(20,), precisions=("fp32", "int8")).dims == (20,)


def test_binary_with_odd_default_or_checkpoint_dims_fails_before_encoding():
    encoder = SimpleNamespace(num_layers=2, hidden_size=100, width=100)  # no encode(): the check comes first
    with pytest.raises(BenchError, match="dims 25, 50, 100 are not multiples of 8"):  # default dims of 100
        evaluate_grid(encoder, Checkpoint("x", "x"), TASKS.get("stsb"), sts_slice(), EvalSpec())
    with pytest.raises(BenchError, match="dims 12 are not multiples of 8"):
        evaluate_grid(encoder, Checkpoint("x", "x", targets=(SubModel(1, 12),), only_targets=True), TASKS.get("stsb"),
                      sts_slice(), EvalSpec())


def test_empty_calibration_set_is_a_clear_error():
    corpus = unit_vectors(10, 16)
    with pytest.raises(BenchError, match="int8 calibration set is empty"):
        make_searcher(corpus, corpus[:0], "int8", EvalSpec())


def test_cli_reports_an_unknown_precision(capsys):
    assert main(["run", "--suite", "smoke", "--precisions", "fp32,int3"]) == 2
    assert "unknown precision 'int3'" in capsys.readouterr().err


def test_per_example_values_are_stored_only_for_the_example_cells_and_scores_do_not_change(tiny):
    """example_cells keeps committed results small: the cells outside it keep their scores and lose only their
    per-example values."""
    every, only = EvalSpec(dims=(16, 64)), EvalSpec(dims=(16, 64), example_cells=((1, 16),))
    rows_all, examples_all = evaluate_grid(tiny, Checkpoint("tiny", "tiny"), TASKS.get("stsb"), sts_slice(), every)
    rows_one, examples_one = evaluate_grid(tiny, Checkpoint("tiny", "tiny"), TASKS.get("stsb"), sts_slice(), only)
    assert {k.rsplit("/", 2)[0] for k in examples_one} == {"1/16"}
    assert {k: examples_all[k] for k in examples_one}.keys() == examples_one.keys()
    scores = [[(r["layer"], r["dim"], r["precision"], r["metric"], r["score"]) for r in rows if r.get("dim", -1) > 0
               and "ms" not in r["metric"]] for rows in (rows_all, rows_one)]
    assert scores[0] == scores[1]
    with pytest.raises(BenchError, match="example_cells must be"):
        EvalSpec(example_cells=((1, 0),))
