"""Pure numpy transforms. Oracles: sentence-transformers' `quantize_embeddings` for the int8 and binary codes,
scipy's Hamming distance for the binary similarity, plain numpy for truncation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import hamming
from sentence_transformers.util.quantization import quantize_embeddings

from bench import BenchError
from bench.precisions import bytes_per_vector
from bench.transforms import (
    binarize,
    dequantize_int8,
    hamming_similarity,
    int8_ranges,
    quantize_int8,
    truncate,
)


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return truncate(np.random.default_rng(seed).standard_normal((n, dim)), dim, normalize=True)


def test_truncate_keeps_the_first_dims_then_normalizes():
    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
    out = truncate(x, 4, normalize=True)
    np.testing.assert_allclose(out, x[:, :4] / np.linalg.norm(x[:, :4], axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(truncate(x, 4, normalize=False), x[:, :4])


def test_int8_codes_equal_sentence_transformers_given_the_same_ranges():
    corpus, queries = vectors(500, 48, seed=1), vectors(60, 48, seed=2)
    ranges = int8_ranges(corpus)
    for side in (corpus, queries):  # queries fall partly outside the corpus ranges: both clip the same way
        ours = quantize_int8(side, ranges)
        assert ours.dtype == np.int8
        np.testing.assert_array_equal(ours, quantize_embeddings(side, "int8", ranges=ranges))
        np.testing.assert_array_equal(ours, quantize_embeddings(side, "int8", calibration_embeddings=corpus))


def test_int8_constant_dimension_matches_sentence_transformers():
    x = vectors(50, 16)
    x[:, 3] = 0.25  # min == max: a zero-width range
    ranges = int8_ranges(x)
    np.testing.assert_array_equal(quantize_int8(x, ranges), quantize_embeddings(x, "int8", ranges=ranges))


def test_dequantized_int8_is_the_midpoint_of_each_bucket():
    """Within half a step of the value (tests/test_precisions.py checks it against faiss' SQ8 decode)."""
    x = vectors(300, 32)
    ranges = int8_ranges(x)
    step = (ranges[1] - ranges[0]) / 255
    back = dequantize_int8(quantize_int8(x, ranges), ranges)
    assert np.all(np.abs(x - back) <= step / 2 + 1e-6)


def test_binary_codes_equal_sentence_transformers_ubinary():
    x = vectors(100, 64)
    x[0, :8] = 0.0  # zero is not positive: bit 0, as in sentence-transformers
    ours = binarize(x)
    assert ours.dtype == np.uint8 and ours.shape == (100, 8)
    np.testing.assert_array_equal(ours, quantize_embeddings(x, "ubinary"))


def test_hamming_similarity_is_one_minus_scipy_hamming_and_an_affine_cosine_of_signs():
    a, b = vectors(40, 24, seed=3), vectors(40, 24, seed=4)
    ours = hamming_similarity(binarize(a), binarize(b), 24)
    expected = [1 - hamming(x > 0, y > 0) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, expected)
    signs_a, signs_b = np.where(a > 0, 1.0, -1.0), np.where(b > 0, 1.0, -1.0)
    cosine = np.einsum("nd,nd->n", signs_a, signs_b) / 24
    np.testing.assert_allclose(ours, (1 + cosine) / 2)


def test_bytes_per_vector():
    assert [bytes_per_vector(384, p) for p in ("fp32", "int8", "binary", "binary+rescore")] == [1536, 384, 48, 48]
    assert bytes_per_vector(384, "binary+rescore-int8") == 48 + 384  # the rescoring copy counts


def test_binary_dims_must_be_multiples_of_8():
    with pytest.raises(BenchError, match="dims 20 are not multiples of 8"):
        bytes_per_vector(20, "binary")
    with pytest.raises(BenchError, match="not a multiple of 8"):
        binarize(vectors(3, 20))
    assert bytes_per_vector(20, "int8") == 20  # only binary packs bits


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(BenchError, match="unknown precision 'int3'; choose from fp32, int8, binary, binary"):
        bytes_per_vector(64, "int3")


def test_empty_calibration_set_is_a_clear_error():
    with pytest.raises(BenchError, match="int8 calibration set is empty"):
        int8_ranges(np.zeros((0, 16), dtype=np.float32))
