"""Every precision as a server stores and computes it: one frozen record per precision, looked up by name.

A record (`Precision`) is a stored form plus, for retrieval, an optional search strategy:
- the form (`Form`, bench/forms.py; the compressions' in bench/compressions.py) says what each document is stored as: calibrated on float vectors (`calibrate`), encoded
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
from typing import TYPE_CHECKING

import numpy as np

from bench import BenchError
from bench.compressions import BFloat16, Float8, Float16, Int4, Int4Fixed, Int8Fixed, ProductQuantized, RaBitQ
from bench.forms import Decoded  # noqa: F401 - re-exported: the base a new form subclasses
from bench.forms import Binary, Float32, Form, Int8
from bench.transforms import BinaryCodes

if TYPE_CHECKING:  # annotations only: bench.spec imports this module, and bench.search imports faiss
    from bench.search import Searcher
    from bench.spec import EvalSpec


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
