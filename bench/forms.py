"""The stored forms of a vector that a precision record is built on (bench/precisions.py): what a document is stored
as, its bytes, how a server decodes and compares it, and the faiss search over a stored corpus. `Form` and `Decoded`
are the contracts; float32, int8 and binary are the forms of the default precisions. The compressions of issue 24
(fp16, bf16, fp8, int4, fixed ranges, PQ, RaBitQ) are in bench/compressions.py. Torch-free, and faiss-free at import
(faiss loads inside the methods that build a search).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

import numpy as np

from bench import BenchError
from bench.transforms import (BinaryCodes, binarize, dequantize_int8, hamming_similarity, int8_ranges, paired_cosine,
                              quantize_int8, sign_codes)

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
