"""The faiss searches the precisions build (bench/precisions.py): one index per stored form, its scored top k, the
Hamming shortlist in one seeded tie order, a head's code search, and rescoring a shortlist against decoded documents.

Every search takes float32 queries (a form turns them into what it compares) and returns (n, k) scores (higher is
better) and corpus positions, best first, -1 padded. The retrieval task (bench/tasks/retrieval.py) ranks, completes
tie groups and computes metrics on top of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import faiss
import numpy as np

from bench.transforms import BinaryCodes, dequantize_int8, quantize_int8

if TYPE_CHECKING:  # the spec is read, never built, here
    from bench.spec import EvalSpec

# search_index="hnsw" (approximate): graph degree and search breadth. Constants, as they move the results; the
# graph is built in parallel, so its results can differ slightly from run to run.
HNSW_M = 32
HNSW_EF_SEARCH = 128
TIE_ORDER_SEED = 0  # the one order that cuts a Hamming shortlist's last tie group (shuffled_binary_search)


def float_index(vectors: np.ndarray, search_index: str) -> faiss.Index:
    """Inner product (cosine when the vectors are normalized) over float32 vectors."""
    dim = vectors.shape[1]
    if search_index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index


def int8_index(corpus: np.ndarray, ranges: np.ndarray, search_index: str) -> faiss.Index:
    """The corpus as int8 codes (faiss ScalarQuantizer QT_8bit, one byte per dim, our per-dimension ranges), searched
    by the float query's inner product with each decoded document: faiss decodes a code to its bucket's midpoint, as
    bench.transforms.dequantize_int8 does. The index is given the decoded midpoints, not the vectors: faiss' own
    encoding rounds (v - min) * 255 / range, which at a bucket edge can land one code off ours; a midpoint lies half
    a step inside its bucket, so it encodes to exactly our code."""
    dim, kind = corpus.shape[1], faiss.ScalarQuantizer.QT_8bit
    if search_index == "hnsw":
        index = faiss.IndexHNSWSQ(dim, kind, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        quantizer = index.storage
    else:
        index = quantizer = faiss.IndexScalarQuantizer(dim, kind, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.concatenate([ranges[0], ranges[1] - ranges[0]]).astype(np.float32),
                               faiss.downcast_index(quantizer).sq.trained)  # QT_8bit's layout: mins, then ranges
    quantizer.is_trained = index.is_trained = True
    index.add(dequantize_int8(quantize_int8(corpus, ranges), ranges))
    return index


def binary_index(bits: np.ndarray, search_index: str) -> faiss.IndexBinary:
    """Hamming distance over packed sign bits."""
    dim = 8 * bits.shape[1]
    index = faiss.IndexBinaryHNSW(dim, HNSW_M) if search_index == "hnsw" else faiss.IndexBinaryFlat(dim)
    index.add(bits)
    return index


def top_k(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) scores (higher is better) and the index's ids, best first, -1 padded (last). Equal scores are put in
    the order of the ids, which are corpus positions for an index built over the corpus as it is, and positions in
    the one seeded order (TIE_ORDER_SEED) for shuffled_binary_search's index, whose search maps them back. Which
    members of a tie group that straddles the k-th place come back at all is faiss' rule: the first indexed for an
    exact binary index (so shuffled_binary_search's seeded order decides a rescoring shortlist's edge), no fixed
    order for a float one; tie-aware metrics search on until such a group is whole (complete_tie_groups)."""
    if isinstance(index, (faiss.IndexHNSW, faiss.IndexBinaryHNSW)):
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
    scores, ids = index.search(queries, min(k, index.ntotal))
    if isinstance(index, faiss.IndexBinary):
        scores = -scores.astype(np.int64)  # a Hamming distance: smaller is better
    order = np.lexsort((ids, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(ids, order, axis=-1)


def rescore(queries: np.ndarray, shortlist: np.ndarray, documents: Callable[[np.ndarray], np.ndarray],
            block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's whole shortlist by the float query's inner product with `documents(ids)`: (scores,
    ids). Only shortlisted ids can come back; -1 (no candidate) stays -1, last. Queries go in blocks to bound
    memory."""
    out = []
    for start in range(0, len(queries), block):
        ids = shortlist[start:start + block]
        scores = np.matmul(documents(np.maximum(ids, 0)), queries[start:start + block, :, None])[..., 0]
        scores[ids < 0] = -np.inf
        order = np.lexsort((ids, -scores), axis=-1)
        out.append((np.take_along_axis(scores, order, axis=-1), np.take_along_axis(ids, order, axis=-1)))
    return np.concatenate([s for s, _ in out]), np.concatenate([i for _, i in out])


@dataclass(frozen=True)
class Searcher:
    """One cell's search index, and its scored search: (float32 queries, k) -> (n, k) scores (higher is better) and
    corpus positions, -1 padded. `timed`: False where the search emulates a kernel it is not (multi-bit SDC as
    float search). `copy_bytes`: the rescoring copy of the documents a binary+rescore-int8/-fp32 search reads
    besides its index. `whole`: a rescoring search returns its whole shortlist (rescore_multiplier x k), ranked:
    nothing past it can be served, so tie groups are never searched further (that would grow the shortlist)."""

    index: object  # faiss.Index or faiss.IndexBinary: what the search holds in memory
    scored: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    timed: bool = True
    copy_bytes: int = 0
    whole: bool = False

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n, k) corpus positions only."""
        return self.scored(queries, k)[1]

    def index_bytes(self) -> int:
        binary = isinstance(self.index, faiss.IndexBinary)
        return int((faiss.serialize_index_binary if binary else faiss.serialize_index)(self.index).nbytes) + \
            self.copy_bytes


def shuffled_binary_search(bits: np.ndarray, spec: EvalSpec):
    """(index, search(query bits, k) -> (scores, corpus positions)) over the documents' bits, indexed in one fixed
    seeded order (TIE_ORDER_SEED): faiss keeps the first-indexed of equal Hamming distances at the edge of its k,
    so a rescoring shortlist's last tie group is cut by that order, the same for every method, never by an order
    the corpus happens to have. Tie-aware metrics do not need it for plain binary (its groups are completed)."""
    order = np.random.default_rng(TIE_ORDER_SEED).permutation(len(bits))
    index = binary_index(bits[order], spec.search_index)

    def search(query_bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, positions = top_k(index, query_bits, k)
        return scores, np.where(positions >= 0, order[np.maximum(positions, 0)], -1)
    return index, search


def code_search(corpus: BinaryCodes, queries: BinaryCodes, spec: EvalSpec):
    """A head's codes: (index, search of the given queries' codes, timed). One level: Hamming over its bits;
    several: SDC as an exact float inner-product search over the reconstructions, the binary index of the codes
    standing for what a bitwise kernel would hold."""
    if corpus.levels == 1:
        index, search_bits = shuffled_binary_search(corpus.bits, spec)
        return index, (lambda q, k: search_bits(queries.bits, k)), True
    index = binary_index(corpus.bits, spec.search_index)
    reconstructed = float_index(corpus.reconstruction(spec.normalize), spec.search_index)
    query_vectors = queries.reconstruction(spec.normalize)

    def sdc_search(q, k):
        return top_k(reconstructed, query_vectors, k)
    return index, sdc_search, False
