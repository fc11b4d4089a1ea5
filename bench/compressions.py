"""Compressions beyond the default precisions (issue 24): fp16, bf16, fp8 (e4m3), int4, fixed-range int8 and int4,
product quantization and RaBitQ, each a stored form (bench/forms.py) that bench/precisions.py makes a record of.
Each is scored as a server would: the float query against the decoded documents (faiss's own index types where they
exist: scalar quantizers, IndexPQ, IndexRaBitQ), the cosine of two decoded vectors for STS. Torch-free, and faiss-free
at import.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench import BenchError
from bench.forms import Decoded, Int8
from bench.transforms import (dequantize_int4, fixed_ranges, from_bfloat16, from_float8_e4m3, quantize_int4, to_bfloat16,
                              to_float8_e4m3)


def scalar_quantizer_index(decoded: np.ndarray, kind: str, search_index: str, ranges: np.ndarray | None = None):
    """A faiss ScalarQuantizer index (`kind`: QT_fp16, QT_bf16, QT_4bit...) holding documents already decoded from
    our codes, searched by the float query's inner product with each document as faiss decodes it. A decoded value
    is exactly representable in the kind (and, for QT_4bit with our `ranges`, a bucket midpoint: it encodes to our
    code, as bench.search.int8_index explains), so faiss stores our codes and decodes them as we do."""
    import faiss  # only where a search is built (module docstring)
    from bench.search import HNSW_M
    dim, qtype = decoded.shape[1], getattr(faiss.ScalarQuantizer, kind)
    if search_index == "hnsw":
        index = faiss.IndexHNSWSQ(dim, qtype, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        quantizer = index.storage
    else:
        index = quantizer = faiss.IndexScalarQuantizer(dim, qtype, faiss.METRIC_INNER_PRODUCT)
    if ranges is not None:  # the uniform kinds' layout: mins, then ranges
        faiss.copy_array_to_vector(np.concatenate([ranges[0], ranges[1] - ranges[0]]).astype(np.float32),
                                   faiss.downcast_index(quantizer).sq.trained)
        quantizer.is_trained = index.is_trained = True
    index.add(decoded)
    return index


class Float16(Decoded):
    """2 bytes per dim: IEEE half precision (numpy float16, faiss QT_fp16), decoded to float32."""

    name, mteb_dtype = "fp16", "float16"

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return 2 * dim

    def encode(self, vectors: np.ndarray, params: object) -> np.ndarray:
        return vectors.astype(np.float16)

    def decode(self, stored: np.ndarray, params: object) -> np.ndarray:
        return stored.astype(np.float32)

    def index(self, corpus: np.ndarray, params: object, search_index: str):
        return scalar_quantizer_index(self.decode(self.encode(corpus, params), params), "QT_fp16", search_index)


class BFloat16(Float16):
    """2 bytes per dim: bfloat16 (float32's upper half, rounded to nearest even; faiss QT_bf16), decoded to float32."""

    name, mteb_dtype = "bf16", "bfloat16"

    def encode(self, vectors: np.ndarray, params: object) -> np.ndarray:
        return to_bfloat16(vectors)

    def decode(self, stored: np.ndarray, params: object) -> np.ndarray:
        return from_bfloat16(stored)

    def index(self, corpus: np.ndarray, params: object, search_index: str):
        return scalar_quantizer_index(self.decode(self.encode(corpus, params), params), "QT_bf16", search_index)


class Float8(Float16):
    """1 byte per dim: float8 e4m3fn (4 exponent bits, 3 mantissa bits, largest 448), decoded to float32. faiss has
    no float8 scalar quantizer; every e4m3 value is exactly a float16 value, so a QT_fp16 index holds the decoded
    documents exactly and searches as an fp8 index would (its index_bytes: 2 bytes per dim, not 1)."""

    name, mteb_dtype = "fp8", "float8_e4m3fn"

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return dim

    def encode(self, vectors: np.ndarray, params: object) -> np.ndarray:
        return to_float8_e4m3(vectors)

    def decode(self, stored: np.ndarray, params: object) -> np.ndarray:
        return from_float8_e4m3(stored)


class Int4(Int8):
    """Half a byte per dim (two codes per byte): int8's per-dimension calibrated ranges cut into 16 buckets, decoded
    to the bucket's midpoint, as faiss QT_4bit stores and decodes them (bench.transforms.quantize_int4)."""

    name, mteb_dtype = "int4", "int4"

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return (dim + 1) // 2

    def encode(self, vectors: np.ndarray, params: np.ndarray) -> np.ndarray:
        return quantize_int4(vectors, params)

    def decode(self, stored: np.ndarray, params: np.ndarray) -> np.ndarray:
        return dequantize_int4(stored, params)

    def index(self, corpus: np.ndarray, params: np.ndarray, search_index: str):
        decoded = self.decode(self.encode(corpus, params), params)
        return scalar_quantizer_index(decoded, "QT_4bit", search_index, params)


class Int8Fixed(Int8):
    """int8 with one data-independent range for every dimension (bench.transforms.fixed_ranges: arctic-embed's
    [-0.18, 0.18] at 256 dims, scaled by sqrt(256 / dim)): nothing is calibrated."""

    name = "int8-fixed"

    def calibrate(self, sets: Sequence[np.ndarray]) -> np.ndarray:
        return fixed_ranges(sets[0].shape[-1])


class Int4Fixed(Int4):
    """int4 with int8-fixed's data-independent range."""

    name = "int4-fixed"

    def calibrate(self, sets: Sequence[np.ndarray]) -> np.ndarray:
        return fixed_ranges(sets[0].shape[-1])


class ProductQuantized(Decoded):
    """`code_bytes` bytes per vector: faiss product quantization (the vector cut into `code_bytes` sub-vectors, each
    stored as the byte of its nearest of 256 k-means centroids, trained on the calibration set: the corpus side for
    retrieval), decoded to the centroids; searched by faiss IndexPQ, the float query . the decoded document."""

    mteb_dtype = "uint8"
    CENTROIDS = 256  # one byte per sub-vector (faiss nbits = 8)

    def __init__(self, code_bytes: int):
        self.code_bytes, self.name = code_bytes, f"pq{code_bytes}"

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return self.code_bytes

    def check_dims(self, precision: str, dims: Sequence[int]) -> None:
        odd = sorted({d for d in dims if d % self.code_bytes})
        if odd:
            raise BenchError(f"precision {precision} cuts each vector into {self.code_bytes} sub-vectors, but dims "
                             f"{', '.join(map(str, odd))} are not multiples of {self.code_bytes}; choose dims "
                             f"divisible by {self.code_bytes} or a pq code size that divides them")

    def calibrate(self, sets: Sequence[np.ndarray]):
        import faiss  # only where a precision is scored (module docstring)
        vectors = np.ascontiguousarray(np.concatenate(sets) if len(sets) > 1 else sets[0], dtype=np.float32)
        if len(vectors) < self.CENTROIDS:
            raise BenchError(f"precision {self.name} trains {self.CENTROIDS} centroids per sub-vector but has "
                             f"{len(vectors)} calibration vectors; score it on a task with at least {self.CENTROIDS} "
                             "texts on the calibration side, or drop it")
        self.check_dims(self.name, (vectors.shape[1],))
        quantizer = faiss.ProductQuantizer(vectors.shape[1], self.code_bytes, 8)
        quantizer.cp.min_points_per_centroid = 1  # only silences faiss' "please provide more points" warning
        quantizer.train(vectors)  # faiss' k-means: seeded (ClusteringParameters.seed), so the same codes each run
        return quantizer

    def encode(self, vectors: np.ndarray, params) -> np.ndarray:
        return params.compute_codes(np.ascontiguousarray(vectors, dtype=np.float32))

    def decode(self, stored: np.ndarray, params) -> np.ndarray:
        return params.decode(stored)

    def index(self, corpus: np.ndarray, params, search_index: str):
        import faiss
        from bench.search import HNSW_M
        dim = corpus.shape[1]
        if search_index == "hnsw":
            index = faiss.IndexHNSWPQ(dim, self.code_bytes, HNSW_M, 8, faiss.METRIC_INNER_PRODUCT)
            storage = faiss.downcast_index(index.storage)
        else:
            index = storage = faiss.IndexPQ(dim, self.code_bytes, 8, faiss.METRIC_INNER_PRODUCT)
        storage.pq = params
        storage.is_trained = index.is_trained = True
        index.add(np.ascontiguousarray(corpus, dtype=np.float32))
        return index


class RaBitQ(Decoded):
    """faiss RaBitQ (Gao & Long 2024): 1 bit per dim of the document's direction from the calibration set's centroid,
    plus per-vector factors (faiss 1.15: two float32, FACTOR_BYTES; a test pins the sum to faiss' code_size).
    Retrieval is faiss IndexRaBitQ's own search with float queries (qb = 0: no query quantization), i.e. RaBitQ's
    estimate of query . document, which is close to, not exactly, query . its sa_decode reconstruction; STS and
    mteb get the reconstruction (sa_decode). The centroid is the one calibrated parameter (the corpus side)."""

    name, mteb_dtype = "rabitq", "binary"
    FACTOR_BYTES = 8

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return (dim + 7) // 8 + self.FACTOR_BYTES

    def calibrate(self, sets: Sequence[np.ndarray]) -> np.ndarray:
        """The centroid of every calibration vector, as faiss' IndexRaBitQ.train computes it (its float rounding:
        a centroid a rounding away moves sign bits of coordinates near it)."""
        import faiss
        vectors = np.ascontiguousarray(np.concatenate(sets) if len(sets) > 1 else sets[0], dtype=np.float32)
        index = faiss.IndexRaBitQ(vectors.shape[1], faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        return faiss.vector_to_array(index.center)

    @staticmethod
    def quantizer(center: np.ndarray):
        """An empty faiss IndexRaBitQ around `center`, searching float queries."""
        import faiss  # only where a precision is scored (module docstring)
        index = faiss.IndexRaBitQ(len(center), faiss.METRIC_INNER_PRODUCT)
        index.qb = 0
        faiss.copy_array_to_vector(center, index.center)
        index.is_trained = True
        return index

    def encode(self, vectors: np.ndarray, params: np.ndarray) -> np.ndarray:
        return self.quantizer(params).sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))

    def decode(self, stored: np.ndarray, params: np.ndarray) -> np.ndarray:
        return self.quantizer(params).sa_decode(stored)

    def index(self, corpus: np.ndarray, params: np.ndarray, search_index: str):
        if search_index == "hnsw":
            raise BenchError("precision rabitq has no HNSW search here (faiss' IndexHNSWRaBitQ is not wired in); "
                             "use search_index='flat' or drop rabitq")
        index = self.quantizer(params)
        index.add(np.ascontiguousarray(corpus, dtype=np.float32))
        return index
