"""Issue 24's compressions, each one record of bench/precisions.py: fp16, bf16, fp8 (e4m3), int4, int8-fixed and
int4-fixed. Known, in no default list.

Oracles: numpy's float16, torch's bfloat16 and float8_e4m3fn conversions, faiss' ScalarQuantizer (QT_fp16,
QT_bf16, QT_4bit: its own training, sa_encode and sa_decode), sentence-transformers' int8 buckets
(`quantize_embeddings` with given ranges), scipy's cosine and a numpy brute-force search.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from scipy.spatial.distance import cosine
from sentence_transformers.util.quantization import quantize_embeddings

from bench import BenchError
from bench.cli import main
from bench.export_mteb import cell_meta
from bench.precisions import KNOWN, PRECISION_RECORDS, precision
from bench.results import load_results
from bench.spec import PRECISIONS, EvalSpec, RunSpec
from bench.tasks.mteb import served_vectors
from bench.tasks.retrieval import make_searcher
from bench.tasks.sts import pair_similarity
from bench.transforms import (FIXED_RANGE_AT_256, fixed_ranges, from_bfloat16, from_float8_e4m3, int8_ranges,
                              quantize_int8, to_bfloat16, to_float8_e4m3, truncate)

NEW = ("fp16", "bf16", "fp8", "int4", "int8-fixed", "int4-fixed")
PQ = ("pq8", "pq16", "pq32", "rabitq")  # learned codes, tested at the end


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return truncate(np.random.default_rng(seed).standard_normal((n, dim)), dim, normalize=True)


def stored(name: str, vectors: np.ndarray, calibration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, decoded) of `vectors` at precision `name`, calibrated on `calibration`."""
    form = precision(name).form
    params = form.calibrate([calibration])
    codes = form.encode(vectors, params)
    return codes, form.decode(codes, params)


def torch_cast(vectors: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    return torch.from_numpy(vectors).to(dtype).float().numpy()


# --- the records: known, not run by default, exact bytes ---------------------------------------------------------

def test_the_compressions_are_known_but_join_no_default_run(monkeypatch):
    assert set(NEW + PQ) <= set(KNOWN) and not set(NEW + PQ) & set(PRECISIONS)
    assert EvalSpec().precisions == PRECISIONS
    runs = [RunSpec(method="pretrained", task=task) for task in ("stsb", "scifact")]
    with_them = [run.run_id for run in runs]
    old = tuple(p for p in KNOWN if p not in NEW + PQ)  # the registry before them: the run_ids stay
    for module in ("bench.precisions", "bench.spec"):
        monkeypatch.setattr(f"{module}.KNOWN", old)
    monkeypatch.setattr("bench.precisions.PRECISION_RECORDS", {p: PRECISION_RECORDS[p] for p in old})
    assert [RunSpec(method="pretrained", task=task).run_id for task in ("stsb", "scifact")] == with_them


@pytest.mark.parametrize("dim", [64, 33])
def test_bytes_per_vector_are_the_stored_codes(dim):
    """The counted bytes, the codes' own size, and faiss' code size where a faiss scalar quantizer stores them."""
    expected = {"fp16": 2 * dim, "bf16": 2 * dim, "fp8": dim, "int4": (dim + 1) // 2, "int8-fixed": dim,
                "int4-fixed": (dim + 1) // 2}
    vectors = unit_vectors(50, dim)
    for name, size in expected.items():
        assert precision(name).bytes_per_vector(dim) == size, name
        codes, _ = stored(name, vectors, vectors)
        assert codes.nbytes == 50 * size, name
    for kind, name in (("QT_fp16", "fp16"), ("QT_bf16", "bf16"), ("QT_4bit", "int4")):
        assert faiss.ScalarQuantizer(dim, getattr(faiss.ScalarQuantizer, kind)).code_size == expected[name]


def test_an_unknown_compression_is_one_line():
    with pytest.raises(BenchError) as error:
        precision("int5")
    assert str(error.value) == f"unknown precision 'int5'; choose from {', '.join(KNOWN)}"
    assert "\n" not in str(error.value)


# --- the float formats against their oracles ---------------------------------------------------------------------

def float_inputs() -> np.ndarray:
    """Unit-vector coordinates and smaller ones (float8's subnormals below 2^-6), finite and under 448."""
    rng = np.random.default_rng(1)
    return (rng.standard_normal((400, 64)) * np.logspace(-4, 1.5, 64)).astype(np.float32)


def test_fp16_is_numpys_float16_and_faiss_qt_fp16():
    x = float_inputs()
    codes, decoded = stored("fp16", x, x)
    np.testing.assert_array_equal(decoded, x.astype(np.float16).astype(np.float32))
    sq = faiss.ScalarQuantizer(64, faiss.ScalarQuantizer.QT_fp16)
    np.testing.assert_array_equal(sq.decode(codes.view(np.uint8)), decoded)
    # within half a step: 11 significant bits
    assert np.all(np.abs(decoded - x) <= np.maximum(np.abs(x) * 2.0 ** -11, 2.0 ** -25))  # subnormals: 2^-24 steps


def test_bf16_rounds_as_torch_including_ties_to_even():
    x = float_inputs()
    # halfway between two bf16 values
    ties = ((np.arange(2000, dtype=np.uint32) + 0x3C00) << 16 | 0x8000).view(np.float32)
    x = np.concatenate([x.ravel(), ties, -ties])
    codes, decoded = stored("bf16", x[None], x[None])
    np.testing.assert_array_equal(decoded[0], torch_cast(x, torch.bfloat16))
    np.testing.assert_array_equal(codes[0], torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy()
                                  .view(np.uint16))
    sq = faiss.ScalarQuantizer(len(x), faiss.ScalarQuantizer.QT_bf16)
    np.testing.assert_array_equal(sq.decode(codes.view(np.uint8)), decoded)
    assert np.all(np.abs(decoded - x) <= np.abs(x) * 2.0 ** -8)  # 8 significant bits


def test_fp8_rounds_as_torch_float8_e4m3fn_including_ties_and_subnormals():
    x = float_inputs().ravel()
    values = from_float8_e4m3(np.arange(127, dtype=np.uint8))
    ties = (values[:-1] + values[1:]) / 2  # exact in float32: one bit more than e4m3 has
    x = np.concatenate([x, ties, -ties, [0.0, -0.0, 448.0, -448.0, 2.0 ** -9, 2.0 ** -10]]).astype(np.float32)
    codes, decoded = stored("fp8", x[None], x[None])
    np.testing.assert_array_equal(decoded[0], torch_cast(x, torch.float8_e4m3fn))
    np.testing.assert_array_equal(codes[0], torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy())
    # within half a step: 4 significant bits, and 2^-10 (half the subnormal step) below 2^-6
    assert np.all(np.abs(decoded - x) <= np.maximum(np.abs(x) * 2.0 ** -4, 2.0 ** -10))
    assert codes.dtype == np.uint8 and from_float8_e4m3(to_float8_e4m3(values)).tolist() == values.tolist()


def test_bf16_and_fp8_bit_patterns_round_trip():
    patterns = np.arange(2 ** 16, dtype=np.uint16)
    finite = patterns[np.isfinite(from_bfloat16(patterns))]
    np.testing.assert_array_equal(to_bfloat16(from_bfloat16(finite)), finite)
    codes = np.array([c for c in range(256) if c & 0x7F != 0x7F], dtype=np.uint8)  # 0x7F, 0xFF: NaN
    np.testing.assert_array_equal(to_float8_e4m3(from_float8_e4m3(codes)), codes)


# --- int4: int8's ranges, 16 buckets, two per byte, as faiss QT_4bit ---------------------------------------------

def test_int4_codes_and_midpoints_are_faiss_qt_4bit():
    corpus, x = unit_vectors(600, 33, 2), unit_vectors(200, 33, 3)  # an odd dim: the last byte is half padding
    corpus[:, 7] = 0.25  # a constant dimension decodes to its one value
    x[:, 7] = 0.25
    codes, decoded = stored("int4", x, corpus)
    index = faiss.IndexScalarQuantizer(33, faiss.ScalarQuantizer.QT_4bit)
    index.train(corpus)  # faiss' own min-max training: our ranges
    np.testing.assert_array_equal(faiss.vector_to_array(index.sq.trained)[:33], int8_ranges(corpus)[0])
    np.testing.assert_allclose(index.sa_decode(codes), decoded, atol=1e-6)
    np.testing.assert_array_equal(index.sa_encode(decoded), codes)  # a midpoint encodes to its own code
    np.testing.assert_array_equal(index.sa_encode(x), codes)  # faiss' own codes, at bucket edges too
    inside = (x >= corpus.min(0)) & (x <= corpus.max(0))
    step = (corpus.max(0) - corpus.min(0)) / 15
    assert np.all(np.abs(decoded - x)[inside] <= np.broadcast_to(step / 2 + 1e-6, x.shape)[inside])
    np.testing.assert_allclose(decoded[:, 7], 0.25, atol=1e-7)


def test_int4_puts_each_dimensions_max_in_the_top_bucket_as_faiss():
    """The calibration set's own extremes: (max - min) / (range / 15) can come out 14.99..., one bucket low;
    faiss computes the position in the range first, and so must we (oracle: faiss QT_4bit's sa_encode)."""
    corpus = unit_vectors(2000, 64, 13)
    form = precision("int4").form
    ranges = form.calibrate([corpus])
    index = faiss.IndexScalarQuantizer(64, faiss.ScalarQuantizer.QT_4bit)
    index.train(corpus)
    tops = corpus[np.argmax(corpus, axis=0)]  # rows holding some dimension's max
    np.testing.assert_array_equal(form.encode(tops, ranges), index.sa_encode(tops))
    np.testing.assert_array_equal(form.encode(corpus, ranges), index.sa_encode(corpus))


# --- fixed ranges: one data-independent range ---------------------------------------------------------------------

def test_fixed_ranges_are_arctic_embeds_at_256_dims_scaled_by_sqrt_dim():
    assert FIXED_RANGE_AT_256 == 0.18
    np.testing.assert_allclose(fixed_ranges(256), [[-0.18] * 256, [0.18] * 256], rtol=1e-6)
    np.testing.assert_allclose(fixed_ranges(64)[1], 0.36, rtol=1e-6)


@pytest.mark.parametrize("name, levels", [("int8-fixed", 256), ("int4-fixed", 16)])
def test_fixed_range_variants_calibrate_on_nothing(name, levels):
    x = unit_vectors(300, 64, 4)
    codes, decoded = stored(name, x, x)
    other_codes, _ = stored(name, x, 3 * unit_vectors(300, 64, 5))
    np.testing.assert_array_equal(codes, other_codes)  # the calibration set does not matter
    ranges = fixed_ranges(64)
    step = (ranges[1] - ranges[0]) / (levels - 1)
    inside = np.abs(x) < ranges[1]
    assert inside.mean() > 0.99  # the range holds almost every coordinate of a unit vector
    assert np.all(np.abs(decoded - x)[inside] <= step[0] / 2 + 1e-6)
    if name == "int8-fixed":  # sentence-transformers' buckets of the same ranges
        np.testing.assert_array_equal(codes, quantize_embeddings(x, "int8", ranges=ranges))
        np.testing.assert_array_equal(codes, quantize_int8(x, ranges))


# --- end to end: STS, mteb and retrieval through each record ------------------------------------------------------

def oracle_decoded(name: str, vectors: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Each format encoded and decoded by its independent oracles."""
    if name == "fp16":
        return vectors.astype(np.float16).astype(np.float32)
    if name in ("bf16", "fp8"):
        return torch_cast(vectors, torch.bfloat16 if name == "bf16" else torch.float8_e4m3fn)
    sq = faiss.ScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_8bit if name.startswith("int8")
                               else faiss.ScalarQuantizer.QT_4bit)
    ranges = fixed_ranges(vectors.shape[1]) if name.endswith("-fixed") else int8_ranges(calibration)
    faiss.copy_array_to_vector(np.concatenate([ranges[0], ranges[1] - ranges[0]]), sq.trained)
    if name.startswith("int8"):  # int8's codes are sentence-transformers' buckets (faiss rounds edges its own way)
        return sq.decode((quantize_embeddings(vectors, "int8", ranges=ranges).astype(np.int16) + 128).astype(np.uint8))
    return sq.decode(sq.compute_codes(vectors))  # int4's are faiss' own


@pytest.mark.parametrize("name", NEW)
def test_sts_mteb_and_retrieval_score_the_decoded_vectors(name):
    """STS: scipy's cosine of the two decoded sentences; mteb: the decoded vectors; retrieval: a numpy brute force
    of the float query against the documents decoded by the format's oracle (calibrated on the corpus)."""
    vectors = unit_vectors(60, 32, 8)
    left, right = np.arange(30), np.arange(30, 60)
    decoded = oracle_decoded(name, vectors, vectors)
    expected = [1 - cosine(decoded[i], decoded[j]) for i, j in zip(left, right)]
    np.testing.assert_allclose(pair_similarity(vectors, left, right, name), expected, atol=1e-5)
    served = served_vectors({"text": vectors}, name)
    np.testing.assert_allclose(served["text"], decoded, atol=1e-6)
    corpus, queries = unit_vectors(500, 32, 9), unit_vectors(20, 32, 10)
    searcher = make_searcher(corpus, corpus, name, EvalSpec(precisions=(name,)))
    scores = queries @ oracle_decoded(name, corpus, corpus).T
    ours_scores, ours = searcher.scored(queries, 10)
    np.testing.assert_allclose(ours_scores, np.take_along_axis(scores, ours, axis=1), atol=1e-5)
    np.testing.assert_allclose(ours_scores, -np.sort(-scores, axis=1)[:, :10], atol=1e-5)
    assert searcher.index_bytes() > 500 * precision(name).bytes_per_vector(32)


def test_bf16_search_keeps_bfloat16_magnitudes():
    """Documents far from unit scale, where float16 would flush or overflow: the search still scores the bfloat16
    documents (oracle: torch's bfloat16 and a numpy brute force)."""
    for scale in (1e-7, 1e6):
        corpus, queries = scale * unit_vectors(300, 32, 11), unit_vectors(10, 32, 12)
        scores = queries @ torch_cast(corpus, torch.bfloat16).T
        ours, _ = make_searcher(corpus, corpus, "bf16", EvalSpec(precisions=("bf16",))).scored(queries, 5)
        np.testing.assert_allclose(ours, -np.sort(-scores, axis=1)[:, :5], rtol=1e-5)


def test_bench_run_accepts_the_compressions_and_refuses_an_unknown_one(tmp_path, data_dir, capsys):
    args = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb", "--layers", "2", "--dims", "16",
            "--data-dir", str(data_dir), "--results-dir", str(tmp_path)]
    assert main([*args, "--precisions", ",".join(NEW)]) == 0
    frame = load_results(tmp_path)
    assert set(frame[frame.metric == "spearman"].precision) == set(NEW)
    capsys.readouterr()
    assert main([*args, "--precisions", "fp16,int5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: unknown precision 'int5'; choose from {', '.join(KNOWN)}"]


# --- pq: faiss product quantization, its code size in the name ------------------------------------------------------

def faiss_pq(corpus: np.ndarray, code_bytes: int) -> faiss.IndexPQ:
    """The oracle: faiss' own IndexPQ, trained by faiss on the same corpus."""
    index = faiss.IndexPQ(corpus.shape[1], code_bytes, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(corpus)
    return index


@pytest.mark.parametrize("code_bytes", [8, 16, 32])
def test_pq_codes_are_faiss_index_pq_and_each_sub_vector_its_nearest_centroid(code_bytes):
    corpus, x = unit_vectors(1500, 64, 14), unit_vectors(100, 64, 15)
    name = f"pq{code_bytes}"
    codes, decoded = stored(name, x, corpus)
    assert precision(name).bytes_per_vector(64) == code_bytes == codes.shape[1]
    assert faiss_pq(corpus, code_bytes).code_size == code_bytes
    oracle = faiss_pq(corpus, code_bytes)
    np.testing.assert_array_equal(codes, oracle.sa_encode(x))
    np.testing.assert_allclose(decoded, oracle.sa_decode(codes), atol=1e-6)
    # each sub-vector's byte is its nearest centroid (numpy brute force over faiss' codebooks)
    sub = 64 // code_bytes
    centroids = faiss.vector_to_array(oracle.pq.centroids).reshape(code_bytes, 256, sub)
    parts = x.reshape(len(x), code_bytes, sub)
    distances = ((parts[:, :, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.take_along_axis(distances, codes[..., None].astype(np.int64), -1)[..., 0],
                               distances.min(-1), atol=1e-6)


def test_a_pq_code_size_that_does_not_divide_the_dim_is_one_line():
    with pytest.raises(BenchError) as error:
        EvalSpec(precisions=("fp32", "pq16"), dims=(16, 24))
    assert str(error.value) == ("precision pq16 cuts each vector into 16 sub-vectors, but dims 24 are not multiples "
                                "of 16; choose dims divisible by 16 or a pq code size that divides them")


def test_pq_with_too_few_calibration_vectors_is_one_line():
    vectors = unit_vectors(100, 32)
    with pytest.raises(BenchError, match=r"^precision pq8 trains 256 centroids per sub-vector but has 100 "
                                         r"calibration vectors; score it on a task with at least 256 texts"):
        pair_similarity(vectors, np.arange(50), np.arange(50, 100), "pq8")


def test_pq_scores_sts_and_retrieval_on_the_decoded_vectors():
    """STS: scipy's cosine of faiss' decoded sentences (trained on the STS sentences); retrieval: faiss IndexPQ
    trained on the corpus, its decoded documents searched by a numpy brute force."""
    vectors = unit_vectors(600, 32, 16)
    left, right = np.arange(300), np.arange(300, 600)
    oracle = faiss_pq(vectors, 8)
    decoded = oracle.sa_decode(oracle.sa_encode(vectors))
    expected = [1 - cosine(decoded[i], decoded[j]) for i, j in zip(left, right)]
    np.testing.assert_allclose(pair_similarity(vectors, left, right, "pq8"), expected, atol=1e-5)
    corpus, queries = unit_vectors(800, 32, 17), unit_vectors(20, 32, 18)
    oracle = faiss_pq(corpus, 8)
    scores = queries @ oracle.sa_decode(oracle.sa_encode(corpus)).T
    ours, _ = make_searcher(corpus, corpus, "pq8", EvalSpec(precisions=("pq8",))).scored(queries, 10)
    np.testing.assert_allclose(ours, -np.sort(-scores, axis=1)[:, :10], atol=1e-5)


def test_bench_run_refuses_a_pq_code_size_that_does_not_divide_a_dim(tmp_path, data_dir, capsys):
    args = ["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb", "--dims", "16,24",
            "--precisions", "fp32,pq16", "--data-dir", str(data_dir), "--results-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: precision pq16 cuts each vector into 16 sub-vectors"), err
    assert not list(tmp_path.glob("*.csv.gz"))


# --- rabitq: faiss RaBitQ, 1 bit per dim plus its per-vector factors -----------------------------------------------

def faiss_rabitq(corpus: np.ndarray) -> faiss.IndexRaBitQ:
    """The oracle: faiss' own IndexRaBitQ, trained by faiss on the corpus, searching float queries (qb = 0)."""
    index = faiss.IndexRaBitQ(corpus.shape[1], faiss.METRIC_INNER_PRODUCT)
    index.qb = 0
    index.train(corpus)
    return index


@pytest.mark.parametrize("dim", [64, 33, 384])
def test_rabitq_bytes_are_faiss_code_size(dim):
    assert precision("rabitq").bytes_per_vector(dim) == faiss_rabitq(unit_vectors(50, dim)).code_size
    assert precision("rabitq").bytes_per_vector(dim) == (dim + 7) // 8 + 8


def test_rabitq_codes_search_and_sts_are_faiss_index_rabitq():
    """Codes and reconstructions: faiss' sa_encode / sa_decode around the corpus centroid; retrieval: faiss'
    IndexRaBitQ search; STS: scipy's cosine of the two reconstructions."""
    corpus, queries = unit_vectors(800, 64, 19), unit_vectors(20, 64, 20)
    codes, decoded = stored("rabitq", queries, corpus)
    oracle = faiss_rabitq(corpus)
    np.testing.assert_array_equal(codes, oracle.sa_encode(queries))
    np.testing.assert_allclose(decoded, oracle.sa_decode(codes), atol=1e-6)
    oracle.add(corpus)
    expected_scores, expected_ids = oracle.search(queries, 10)
    ours_scores, ours = make_searcher(corpus, corpus, "rabitq", EvalSpec(precisions=("rabitq",))).scored(queries, 10)
    np.testing.assert_allclose(ours_scores, expected_scores, atol=1e-5)
    np.testing.assert_array_equal(ours[:, 0], expected_ids[:, 0])
    vectors = unit_vectors(60, 64, 21)
    left, right = np.arange(30), np.arange(30, 60)
    reconstructed = faiss_rabitq(vectors).sa_decode(faiss_rabitq(vectors).sa_encode(vectors))
    expected = [1 - cosine(reconstructed[i], reconstructed[j]) for i, j in zip(left, right)]
    np.testing.assert_allclose(pair_similarity(vectors, left, right, "rabitq"), expected, atol=1e-5)


def test_rabitq_refuses_hnsw_in_one_line():
    corpus = unit_vectors(100, 32)
    with pytest.raises(BenchError, match=r"^precision rabitq has no HNSW search here"):
        make_searcher(corpus, corpus, "rabitq", EvalSpec(precisions=("rabitq",), search_index="hnsw"))


def test_the_mteb_export_names_each_compressions_stored_format():
    dtypes = {name: cell_meta("m", "r", 1, 64, name).output_dtypes[0].value for name in NEW + PQ}
    assert dtypes == {"fp16": "float16", "bf16": "bfloat16", "fp8": "float8_e4m3fn", "int4": "int4",
                      "int8-fixed": "int8", "int4-fixed": "int4", "pq8": "uint8", "pq16": "uint8", "pq32": "uint8",
                      "rabitq": "binary"}
