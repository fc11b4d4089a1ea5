"""Every precision as a server stores and computes it: one frozen record per precision, looked up by name.

A record says what is stored per document, what the search compares with what, and so every byte a query reads
per document (`bytes_per_vector`). KNOWN is every precision the harness can score; the default list an EvalSpec
evaluates is bench/spec.PRECISIONS, a separate tuple, so a new precision here changes no default run. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import BenchError

# bytes per document of each stored form: search codes (binary: `bits_per_dim` sign bits per dim, bebr's multi-bit
# codes) and the rescoring copy a binary precision reads for its shortlist ("bits": the codes themselves, no copy)
_CODE_BYTES = {"fp32": lambda dim, bits: 4 * dim, "int8": lambda dim, bits: dim,
               "binary": lambda dim, bits: dim * bits // 8}
_COPY_BYTES = {None: lambda dim: 0, "bits": lambda dim: 0, "int8": lambda dim: dim, "fp32": lambda dim: 4 * dim}


@dataclass(frozen=True)
class Precision:
    """`code`: the form the search index holds (fp32, int8 or binary); `rescore`: what the float query rescores a
    Hamming shortlist against (None: no rescoring; "bits": the documents' own bits as +-1; "int8" / "fp32": a
    stored copy of the documents, decoded int8 or float, whose bytes count). `families`: task families that can
    score it (STS and mteb have no search, so no rescoring)."""

    name: str
    code: str
    stored: str
    compared: str
    families: tuple[str, ...]
    rescore: str | None = None

    def bytes_per_vector(self, dim: int, bits_per_dim: int = 1) -> int:
        """Every byte one document takes: its search code plus the rescoring copy, if any."""
        return _CODE_BYTES[self.code](dim, bits_per_dim) + self.copy_bytes(dim)

    def copy_bytes(self, dim: int) -> int:
        """Bytes per document of the rescoring copy (0 where there is none, or it rescores the bits)."""
        return _COPY_BYTES[self.rescore](dim)


_ALL = ("sts", "retrieval", "mteb")
_RECORDS = (
    Precision("fp32", "fp32", "4 bytes per dim (float32)", "float query . float document; STS: cosine",
              _ALL),
    Precision("int8", "int8", "1 byte per dim: the bucket of each coordinate in its dimension's calibrated range",
              "float query . decoded document (bucket midpoints, faiss SQ8's decode); STS: cosine of the two decoded "
              "vectors", _ALL),
    Precision("binary", "binary", "1 bit per dim (sign), bits_per_dim bits for a head's multi-bit codes",
              "Hamming distance of query and document bits (a head's codes: their symmetric distance)", _ALL),
    Precision("binary+rescore", "binary", "the binary bits only",
              "Hamming shortlist of rescore_multiplier x the metric's cutoff, then float query . the document's "
              "own bits as +-1", ("retrieval",), rescore="bits"),
    Precision("binary+rescore-int8", "binary", "the binary bits plus an int8 copy (1 byte per dim)",
              "Hamming shortlist as binary+rescore, then float query . decoded int8 document",
              ("retrieval",), rescore="int8"),
    Precision("binary+rescore-fp32", "binary", "the binary bits plus a float32 copy (4 bytes per dim)",
              "Hamming shortlist as binary+rescore, then float query . float document",
              ("retrieval",), rescore="fp32"),
)
PRECISION_RECORDS = {p.name: p for p in _RECORDS}
KNOWN = tuple(PRECISION_RECORDS)


def precision(name: str) -> Precision:
    """The record of `name`; an unknown name is one error line listing the known ones."""
    try:
        return PRECISION_RECORDS[name]
    except KeyError:
        raise BenchError(f"unknown precision {name!r}; choose from {', '.join(KNOWN)}") from None


def supported(family: str) -> tuple[str, ...]:
    """The known precisions a task family can score, in KNOWN order."""
    return tuple(p.name for p in _RECORDS if family in p.families)
