"""Every precision as a server stores and computes it: one frozen record per precision, looked up by name.

A record (`Precision`) is a stored form plus, for retrieval, an optional search strategy:
- the form (`Form`) says what each document is stored as: calibrated on float vectors (`calibrate`), encoded
  (`encode`) and decoded (`rows`), its bytes per vector, the dims it can store, the STS similarity of two stored
  sentences, the vectors mteb scores, and the faiss search over a stored corpus (bench/search.py);
- the strategy (`Rescore`) re-ranks a shortlist of EvalSpec.rescore_multiplier x k from the form's search by the
  float query against a stored copy of the documents (another form's, or the form's own codes), whose bytes count.
STS, mteb, retrieval, the mteb export, the report's markers and the dims checks all ask the record: no scoring code
branches on a precision's name, and an unknown name is one error line. KNOWN is every precision the harness can
score; the default list an EvalSpec evaluates is bench/spec.PRECISIONS, a separate tuple, so a new precision here
changes no default run (nor any run_id).

A new precision (as issue 24's compressions: fp16, bf16, fp8, int4, int8-fixed, int4-fixed, pq8/16/32, rabitq; their
tests are tests/test_compressions.py) is one record in RECORDS plus its tests, and a `Decoded` subclass where no form
fits: `calibrate`, `encode`, `decode`, `bytes` and `index` (the faiss index holding the corpus); the STS cosine, the
vectors mteb scores and the search of the decoded documents follow from them. The compressions' forms import faiss
inside their methods, as the searches do.
Torch-free, and faiss-free at import (the report reads records for its markers): faiss loads in bench/search.py,
imported inside the methods that build a search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from bench import BenchError
from bench.transforms import (BinaryCodes, binarize, dequantize_int4, dequantize_int8, fixed_ranges, from_bfloat16,
                              from_float8_e4m3, hamming_similarity, int8_ranges, paired_cosine, quantize_int4,
                              quantize_int8, sign_codes, to_bfloat16, to_float8_e4m3)

if TYPE_CHECKING:  # annotations only: bench.spec imports this module, and bench.search imports faiss
    from bench.search import Searcher
    from bench.spec import EvalSpec

Rows = Callable[[np.ndarray], np.ndarray]  # corpus positions (any shape) -> their decoded vectors (shape + (dim,))


class Form:
    """A stored form of a vector. `name`: how a rescoring copy in this form is called; `mteb_dtype`: mteb's
    OutputDType of the stored format; `takes_head_codes`: a head's own binary codes (bebr) replace the form's."""

    name: str
    mteb_dtype: str
    takes_head_codes = False

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        raise NotImplementedError

    def check_dims(self, precision: str, dims: Sequence[int]) -> None:
        """Raise where the form cannot store a dim (every dim fits by default)."""

    def rows(self, corpus: np.ndarray, calibration: np.ndarray, codes: BinaryCodes | None = None) -> Rows:
        """The corpus stored in this form (calibrated on `calibration`), decoded by corpus position: what a
        rescoring search reads."""
        raise NotImplementedError

    def pair_similarity(self, vectors: np.ndarray, left: np.ndarray, right: np.ndarray,
                        codes: BinaryCodes | None = None) -> np.ndarray:
        """STS: the similarity of each (left, right) pair of rows of `vectors`, both stored in this form."""
        raise NotImplementedError

    def served(self, vectors: dict[str, np.ndarray],
               codes: dict[str, BinaryCodes] | None = None) -> dict[str, np.ndarray]:
        """mteb: each role's vectors as a server holding them in this form reconstructs them."""
        raise NotImplementedError

    def search(self, corpus: np.ndarray, calibration: np.ndarray, spec: EvalSpec,
               codes: tuple[BinaryCodes, BinaryCodes] | None = None) -> Searcher:
        """Retrieval: the faiss search of float queries over the corpus stored in this form."""
        raise NotImplementedError


class Decoded(Form):
    """A form a server decodes: float query . decoded document for retrieval, the cosine of the two decoded
    vectors for STS, the decoded vectors for mteb. Subclasses say how it is calibrated, coded and indexed."""

    def calibrate(self, sets: Sequence[np.ndarray]) -> object:
        """The form's parameters from calibration vectors (several sets: one calibration over all of them)."""
        return None

    def encode(self, vectors: np.ndarray, params: object) -> np.ndarray:
        raise NotImplementedError

    def decode(self, stored: np.ndarray, params: object) -> np.ndarray:
        raise NotImplementedError

    def index(self, corpus: np.ndarray, params: object, search_index: str):
        """The faiss index holding the corpus in this form, searched by float queries' inner products."""
        raise NotImplementedError

    def rows(self, corpus: np.ndarray, calibration: np.ndarray, codes: BinaryCodes | None = None) -> Rows:
        params = self.calibrate([calibration])
        stored = self.encode(corpus, params)
        return lambda ids: self.decode(stored[ids], params)

    def pair_similarity(self, vectors: np.ndarray, left: np.ndarray, right: np.ndarray,
                        codes: BinaryCodes | None = None) -> np.ndarray:
        params = self.calibrate([vectors])  # STS has one pool of texts: its sentences calibrate themselves
        decoded = self.decode(self.encode(vectors, params), params)
        return paired_cosine(decoded[left], decoded[right])

    def served(self, vectors: dict[str, np.ndarray],
               codes: dict[str, BinaryCodes] | None = None) -> dict[str, np.ndarray]:
        params = self.calibrate(list(vectors.values()))  # an mteb task has no corpus side: every role calibrates
        return {role: self.decode(self.encode(v, params), params) for role, v in vectors.items()}

    def search(self, corpus: np.ndarray, calibration: np.ndarray, spec: EvalSpec,
               codes: tuple[BinaryCodes, BinaryCodes] | None = None) -> Searcher:
        from bench.search import Searcher, top_k  # faiss: see the module docstring
        index = self.index(corpus, self.calibrate([calibration]), spec.search_index)
        return Searcher(index, lambda q, k: top_k(index, q, k))


class Float32(Decoded):
    """4 bytes per dim, the vectors as they are (decoding is the identity: no copy is made)."""

    name, mteb_dtype = "fp32", "float32"

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return 4 * dim

    def encode(self, vectors: np.ndarray, params: object) -> np.ndarray:
        return vectors

    def decode(self, stored: np.ndarray, params: object) -> np.ndarray:
        return stored

    def index(self, corpus: np.ndarray, params: object, search_index: str):
        from bench.search import float_index
        return float_index(corpus, search_index)


class Int8(Decoded):
    """1 byte per dim: each coordinate's bucket in its dimension's calibrated [min, max] range (256 buckets),
    decoded to the bucket's midpoint as faiss SQ8 decodes (bench.transforms)."""

    name, mteb_dtype = "int8", "int8"

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return dim

    def calibrate(self, sets: Sequence[np.ndarray]) -> np.ndarray:
        """(2, dim) ranges; several sets: the widest range over them (no concatenated copy of a large corpus)."""
        per_set = [int8_ranges(s) for s in sets]
        if len(per_set) == 1:
            return per_set[0]
        return np.stack([np.min([r[0] for r in per_set], axis=0), np.max([r[1] for r in per_set], axis=0)])

    def encode(self, vectors: np.ndarray, params: np.ndarray) -> np.ndarray:
        return quantize_int8(vectors, params)

    def decode(self, stored: np.ndarray, params: np.ndarray) -> np.ndarray:
        return dequantize_int8(stored, params)

    def index(self, corpus: np.ndarray, params: np.ndarray, search_index: str):
        from bench.search import int8_index
        return int8_index(corpus, params, search_index)


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


class Binary(Form):
    """Sign bits, 8 dims per byte (a head's multi-bit codes: bits_per_dim sign bits per dim), compared by Hamming
    distance: 1 - hamming / dim for STS, the +-1 signs for mteb (whose cosine, dot product and distance are all
    functions of it), a Hamming search for retrieval. A head's codes of several levels are compared by their
    symmetric distance (SDC), the inner product of their reconstructions (bench.transforms.BinaryCodes)."""

    name, mteb_dtype = "binary", "binary"
    takes_head_codes = True

    def bytes(self, dim: int, bits_per_dim: int = 1) -> int:
        return dim * bits_per_dim // 8

    def check_dims(self, precision: str, dims: Sequence[int]) -> None:
        odd = sorted({d for d in dims if d % 8})
        if odd:
            raise BenchError(f"precision {precision} packs 8 dims per byte, but dims {', '.join(map(str, odd))} are "
                             "not multiples of 8; choose dims like 16,24,32 or drop the binary precisions")

    def rows(self, corpus: np.ndarray, calibration: np.ndarray, codes: BinaryCodes | None = None) -> Rows:
        """The documents' own codes as +-1 (their reconstruction where a head makes several levels;
        sentence-transformers' semantic_search_faiss rescores with 0/1 bits, which rank the same)."""
        codes = sign_codes(corpus) if codes is None else codes
        return lambda ids: BinaryCodes(codes.bits[ids.ravel()], codes.dim, codes.weights).reconstruction(
            normalize=False).reshape(*ids.shape, codes.dim)

    def pair_similarity(self, vectors: np.ndarray, left: np.ndarray, right: np.ndarray,
                        codes: BinaryCodes | None = None) -> np.ndarray:
        if codes is not None and codes.levels > 1:
            reconstructed = codes.reconstruction(normalize=True)
            return paired_cosine(reconstructed[left], reconstructed[right])
        bits = binarize(vectors) if codes is None else codes.bits
        return hamming_similarity(bits[left], bits[right], vectors.shape[1])

    def served(self, vectors: dict[str, np.ndarray],
               codes: dict[str, BinaryCodes] | None = None) -> dict[str, np.ndarray]:
        if codes:
            return {role: codes[role].reconstruction(normalize=False) for role in vectors}
        return {role: np.where(v > 0, 1.0, -1.0).astype(np.float32) for role, v in vectors.items()}

    def search(self, corpus: np.ndarray, calibration: np.ndarray, spec: EvalSpec,
               codes: tuple[BinaryCodes, BinaryCodes] | None = None) -> Searcher:
        """Hamming over the sign bits of float queries and documents (in one seeded tie order), or over a head's
        (corpus, queries) codes: the search then serves exactly those queries (bench.search.code_search)."""
        from bench.search import Searcher, code_search, shuffled_binary_search
        if codes is None:
            index, search_bits = shuffled_binary_search(sign_codes(corpus).bits, spec)
            return Searcher(index, lambda q, k: search_bits(binarize(q), k), True)
        return Searcher(*code_search(*codes, spec))


FP32, INT8, BINARY = Float32(), Int8(), Binary()


@dataclass(frozen=True)
class Rescore:
    """A search strategy: the form's search shortlists EvalSpec.rescore_multiplier x k documents, then the float
    query re-ranks the whole shortlist against `copy` (a stored copy of the documents in that form, whose bytes
    count) or, with no copy, against the documents' own stored codes."""

    copy: Form | None = None

    @property
    def label(self) -> str:
        """What it rescores against: "bits" (the documents' own codes), or the copy's form."""
        return "bits" if self.copy is None else self.copy.name

    def copy_bytes(self, dim: int) -> int:
        return 0 if self.copy is None else self.copy.bytes(dim)

    def searcher(self, shortlist: Searcher, form: Form, corpus: np.ndarray, calibration: np.ndarray,
                 spec: EvalSpec, corpus_codes: BinaryCodes | None) -> Searcher:
        from bench.search import Searcher, rescore
        own = self.copy is None
        documents = (form if own else self.copy).rows(corpus, calibration, corpus_codes if own else None)
        copy_bytes = len(corpus) * self.copy_bytes(corpus.shape[1])
        multiplier, scored = spec.rescore_multiplier, shortlist.scored
        return Searcher(shortlist.index, lambda q, k: rescore(q, scored(q, k * multiplier)[1], documents),
                        shortlist.timed, copy_bytes, whole=True)


@dataclass(frozen=True)
class Precision:
    """`form`: what is stored per document and how it is compared; `rescore`: a retrieval search strategy on top
    (None: the form's own search); `families`: the task families that can score it (STS and mteb have no search,
    so no rescoring); `stored`, `compared`: what the report and README say; `marker` / `symbol`: its matplotlib
    marker and plotly symbol in the report's figures."""

    name: str
    form: Form
    stored: str
    compared: str
    marker: str
    symbol: str
    families: tuple[str, ...] = ("sts", "retrieval", "mteb")
    rescore: Rescore | None = None

    def bytes_per_vector(self, dim: int, bits_per_dim: int = 1) -> int:
        """Every byte one document takes: its stored form plus the rescoring copy, if any."""
        return self.form.bytes(dim, bits_per_dim) + self.copy_bytes(dim)

    def copy_bytes(self, dim: int) -> int:
        """Bytes per document of the rescoring copy (0 where there is none, or it rescores the codes)."""
        return 0 if self.rescore is None else self.rescore.copy_bytes(dim)

    def searcher(self, corpus: np.ndarray, calibration: np.ndarray, spec: EvalSpec,
                 codes: tuple[BinaryCodes, BinaryCodes] | None = None) -> Searcher:
        """The cell's retrieval search (bench/tasks/retrieval.make_searcher checks the name and dims first)."""
        search = self.form.search(corpus, calibration, spec, codes)
        if self.rescore is None:
            return search
        return self.rescore.searcher(search, self.form, corpus, calibration, spec, None if codes is None else codes[0])


_SHORTLIST = "Hamming shortlist of rescore_multiplier x the metric's cutoff"
RECORDS = (
    Precision("fp32", FP32, "4 bytes per dim (float32)", "float query . float document; STS: cosine", "o", "circle"),
    Precision("int8", INT8, "1 byte per dim: the bucket of each coordinate in its dimension's calibrated range",
              "float query . decoded document (bucket midpoints, faiss SQ8's decode); STS: cosine of the two decoded "
              "vectors", "s", "square"),
    Precision("binary", BINARY, "1 bit per dim (sign), bits_per_dim bits for a head's multi-bit codes",
              "Hamming distance of query and document bits (a head's codes: their symmetric distance)",
              "^", "triangle-up"),
    Precision("binary+rescore", BINARY, "the binary bits only",
              f"{_SHORTLIST}, then float query . the document's own bits as +-1", "D", "diamond",
              ("retrieval",), Rescore()),
    Precision("binary+rescore-int8", BINARY, "the binary bits plus an int8 copy (1 byte per dim)",
              f"{_SHORTLIST} as binary+rescore, then float query . decoded int8 document", "d", "diamond-wide",
              ("retrieval",), Rescore(INT8)),
    Precision("binary+rescore-fp32", BINARY, "the binary bits plus a float32 copy (4 bytes per dim)",
              f"{_SHORTLIST} as binary+rescore, then float query . float document", "p", "pentagon",
              ("retrieval",), Rescore(FP32)),
    # issue 24's compressions: known, but in no default list (bench/spec.PRECISIONS)
    Precision("fp16", Float16(), "2 bytes per dim (float16)", "float query . decoded document; STS: cosine of the two "
              "decoded vectors", "h", "hexagon"),
    Precision("bf16", BFloat16(), "2 bytes per dim (bfloat16)", "float query . decoded document; STS: cosine of the "
              "two decoded vectors", "H", "hexagon2"),
    Precision("fp8", Float8(), "1 byte per dim (float8 e4m3fn)", "float query . decoded document; STS: cosine of the "
              "two decoded vectors", "8", "octagon"),
    Precision("int4", Int4(), "half a byte per dim: the bucket of each coordinate in its dimension's calibrated range "
              "(16 buckets)", "float query . decoded document (bucket midpoints, faiss SQ4's decode); STS: cosine of "
              "the two decoded vectors", "v", "triangle-down"),
    Precision("int8-fixed", Int8Fixed(), "1 byte per dim: the bucket of each coordinate in one fixed range for every "
              "dimension, +-0.18 x sqrt(256 / dim)", "as int8", "<", "triangle-left"),
    Precision("int4-fixed", Int4Fixed(), "half a byte per dim: int4 buckets of int8-fixed's range", "as int4", ">",
              "triangle-right"),
    *(Precision(f"pq{m}", ProductQuantized(m), f"{m} bytes: faiss product quantization, {m} sub-vectors x 256 "
                "centroids trained on the calibration side", "float query . decoded document (faiss IndexPQ); STS: "
                "cosine of the two decoded vectors", marker, symbol)
      for m, marker, symbol in ((8, "*", "star"), (16, "P", "cross"), (32, "X", "x"))),
    Precision("rabitq", RaBitQ(), "1 bit per dim plus 8 bytes of per-vector factors (faiss RaBitQ, centred on the "
              "calibration side's centroid)", "faiss IndexRaBitQ's estimate of float query . document; STS: cosine "
              "of the two reconstructions", "1", "hourglass"),
)
PRECISION_RECORDS = {p.name: p for p in RECORDS}
KNOWN = tuple(PRECISION_RECORDS)
FULL = "fp32"  # the full model's precision: its cell (deepest layer, widest dim) is what every other cell is cut from


def precision(name: str) -> Precision:
    """The record of `name`; an unknown name is one error line listing the known ones."""
    try:
        return PRECISION_RECORDS[name]
    except KeyError:
        raise BenchError(f"unknown precision {name!r}; choose from {', '.join(KNOWN)}") from None


def scored_by(name: str, family: str) -> Precision:
    """The record of `name`, which a task of `family` must be able to score (one error line if not)."""
    record = precision(name)
    if family not in record.families:
        raise BenchError(f"{family} tasks cannot score precision {name!r}; use {', '.join(supported(family))}")
    return record


def supported(family: str) -> tuple[str, ...]:
    """The known precisions a task family can score, in KNOWN order."""
    return tuple(p.name for p in RECORDS if family in p.families)


def taking_head_codes() -> tuple[str, ...]:
    """The known precisions whose form a head's own binary codes can replace (what such a head serves)."""
    return tuple(p.name for p in RECORDS if p.form.takes_head_codes)


def check_dims(names: Sequence[str], dims: Sequence[int]) -> None:
    """Known names only (all checked first), and every dim storable in each one's form."""
    for record in [precision(name) for name in names]:
        record.form.check_dims(record.name, dims)


def bytes_per_vector(dim: int, name: str, bits_per_dim: int = 1) -> int:
    """Every byte one document takes at precision `name` (Precision.bytes_per_vector: the stored form plus any
    rescoring copy); a head with multi-bit codes stores `bits_per_dim` sign bits per dimension."""
    check_dims((name,), (dim,))
    return precision(name).bytes_per_vector(dim, bits_per_dim)
