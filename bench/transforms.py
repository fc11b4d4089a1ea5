"""Pure numpy transforms of pooled vectors: truncate, normalize, quantize (int8, binary), compare.

int8 and binary codes are exactly sentence-transformers' `quantize_embeddings` (precision "int8" and "ubinary";
tests use it as the oracle). They are re-implemented here only because that module imports torch and this one
must not. int8 codes decode to their bucket's midpoint, as faiss' ScalarQuantizer QT_8bit decodes (a test checks
it against faiss' sa_decode). What each precision stores and compares: bench/precisions.py.

Multi-bit binary codes (`BinaryCodes`): a head may make its own codes for the binary precisions (bebr's recurrent
residual codes, several sign-bit codes per vector); the tasks then score those instead of the sign bits of the
truncated vectors. Without such a head nothing changes: the binary precisions are the sign bits, by Hamming.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from bench import BenchError


def truncate(vectors: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """Keep the first `dim` coordinates, then (optionally) L2-normalize: the order matters and is recorded."""
    out = np.array(vectors[..., :dim], dtype=np.float32, order="C")  # a copy: inputs may be read-only memmaps
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def int8_ranges(calibration: np.ndarray) -> np.ndarray:
    """(2, dim) per-dimension [min; max] over the calibration vectors: the 256 buckets of every dimension."""
    if calibration.ndim != 2 or calibration.shape[0] == 0:
        raise BenchError(f"the int8 calibration set is empty (shape {calibration.shape}); calibrate on a side "
                         "of the task that has texts (int8_calibration='corpus' or 'queries')")
    return np.stack([calibration.min(axis=0), calibration.max(axis=0)]).astype(np.float32)


def quantize_int8(vectors: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Bucket index of each coordinate in its dimension's [min, max] range, shifted to -128..127."""
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)  # a constant dimension: every value lands in bucket 0
    buckets = np.clip(np.floor((vectors - starts) / steps), 0, 255)  # values outside the calibration range clip
    return (buckets - 128).astype(np.int8)


def dequantize_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Each code back to its bucket's midpoint, in the float vectors' coordinates: what a server storing the codes
    compares the float query with (faiss SQ8 decodes (code + 0.5) / 255 of the range the same way). A constant
    dimension decodes to its one value."""
    steps = (ranges[1] - ranges[0]) / 255
    out = codes.astype(np.float32)
    out += 128.5
    out *= steps
    out += ranges[0]  # in place: rescoring decodes a whole shortlist per query block
    return out


def binarize(vectors: np.ndarray) -> np.ndarray:
    """Sign bits (1 where > 0), packed 8 per byte: (n, dim) float -> (n, dim // 8) uint8."""
    if vectors.shape[-1] % 8:
        raise BenchError(f"binary codes pack 8 dims per byte; dim {vectors.shape[-1]} is not a multiple of 8")
    return np.packbits(vectors > 0, axis=-1)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, dim) arrays."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", a, b)


def hamming_similarity(a: np.ndarray, b: np.ndarray, dim: int) -> np.ndarray:
    """Row-wise 1 - hamming / dim of packed codes. For the +-1 sign vectors this is (1 + cosine) / 2, so it
    ranks pairs exactly as the cosine of the signs does."""
    distance = np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1, dtype=np.int64)
    return 1.0 - distance / dim


@dataclass(frozen=True)
class BinaryCodes:
    """One cell's binary codes: `levels` sign-bit codes of `dim` bits per vector, packed level after level into
    `bits` ((n, levels * dim / 8) uint8), and each level's weight. Their reconstruction is
    sum_u weight_u * s_u, s_u the +-1 vector of code u. The inner product of two reconstructions is the symmetric
    distance of Gan et al. 2023 (SDC), which a bitwise kernel computes from the codes alone:
    sum_{u,v} w_u w_v (dim - 2 hamming(code_u, code'_v)). One level is plain sign binarization (scored by Hamming)."""

    bits: np.ndarray
    dim: int
    weights: tuple[float, ...] = (1.0,)

    @property
    def levels(self) -> int:
        return len(self.weights)

    def reconstruction(self, normalize: bool) -> np.ndarray:
        """(n, dim) float32: sum_u w_u s_u, L2-normalized when `normalize` (then inner products are cosines)."""
        signs = np.unpackbits(self.bits, axis=-1).reshape(len(self.bits), self.levels, self.dim)
        out = np.einsum("nud,u->nd", 2 * signs.astype(np.float32) - 1, np.asarray(self.weights, dtype=np.float32))
        return truncate(out, self.dim, normalize)


def sign_codes(vectors: np.ndarray) -> BinaryCodes:
    """The sign bits of (truncated) vectors as one-level codes."""
    return BinaryCodes(binarize(vectors), vectors.shape[-1])


class LayersWithHead(ABC):
    """A text set's per-layer arrays with a checkpoint's head applied (bench/evaluate.HeadedLayers), as a task reads
    them: `layers[layer - 1]`, and the head's own binary codes of a cell."""

    @abstractmethod
    def __getitem__(self, index: int) -> np.ndarray:
        """The vectors of layer index + 1, through the head."""

    @abstractmethod
    def codes(self, layer: int, dim: int) -> BinaryCodes | None:
        """The head's codes of the cell (layer, dim), or None where it makes none."""


def head_codes(layers, layer: int, dim: int) -> BinaryCodes | None:
    """The codes a head makes itself for the cell (layer, dim), where the task's arrays carry a head
    (`LayersWithHead`); None: the binary precisions are the sign bits of the truncated vectors."""
    return layers.codes(layer, dim) if isinstance(layers, LayersWithHead) else None


# --- issue 24's compressions: bfloat16, float8 e4m3, int4 and fixed ranges (bench/precisions.py's records) -------

def to_bfloat16(vectors: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest, ties to even, as torch rounds. By hand: numpy
    has no bfloat16 and this module must not import torch (ml_dtypes is not installed)."""
    bits = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32)
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))  # round the 16 dropped bits, ties to the even kept bit
    return (rounded >> 16).astype(np.uint16)


def from_bfloat16(stored: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact: bfloat16 is float32's upper half)."""
    return (stored.astype(np.uint32) << 16).view(np.float32)


def _float8_e4m3_values() -> np.ndarray:
    """The 127 non-negative finite float8 e4m3fn values by code (0x7F is NaN): 4 exponent bits (bias 7), 3 mantissa
    bits, subnormals below 2^-6, no infinities, largest 448."""
    codes = np.arange(127)
    exponent, mantissa = codes >> 3, (codes & 7) / 8
    return np.where(exponent == 0, mantissa * 2.0 ** -6, (1 + mantissa) * 2.0 ** (exponent - 7)).astype(np.float32)


FLOAT8_E4M3_VALUES = _float8_e4m3_values()
FLOAT8_E4M3_MAX = float(FLOAT8_E4M3_VALUES[-1])  # 448


def to_float8_e4m3(vectors: np.ndarray) -> np.ndarray:
    """float32 -> float8 e4m3fn codes (uint8: sign bit, then the value's code), rounded to nearest, ties to even, as
    torch's float8_e4m3fn conversion rounds (a test uses it as the oracle). By hand: numpy has no float8, ml_dtypes
    is not installed, and this module must not import torch. Magnitudes above 448 saturate to 448 (torch makes them
    NaN; unit vectors never get there)."""
    magnitude = np.minimum(np.abs(vectors).astype(np.float32), FLOAT8_E4M3_MAX)
    exponent = np.maximum(np.frexp(magnitude)[1] - 1, -6)  # floor(log2 |x|), exactly; subnormals share 2^-6's step
    step = np.ldexp(np.float32(1), exponent - 3).astype(np.float32)  # 3 mantissa bits: 8 steps per binade
    rounded = np.round(magnitude / step) * step  # np.round: ties to even; a power-of-two step keeps it exact
    codes = np.searchsorted(FLOAT8_E4M3_VALUES, rounded).astype(np.uint8)  # an exact match: its own code
    return codes | np.where(np.signbit(vectors), 0x80, 0).astype(np.uint8)


def from_float8_e4m3(codes: np.ndarray) -> np.ndarray:
    """float8 e4m3fn codes (uint8) -> float32 (exact)."""
    values = FLOAT8_E4M3_VALUES[np.minimum(codes & 0x7F, 126)]
    return np.where(codes & 0x80, -values, values).astype(np.float32)


def quantize_int4(vectors: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """int8's buckets with 16 levels: each coordinate's bucket 0..15 in its dimension's [min, max] range, two per
    byte, the even dim in the low nibble: (n, ceil(d/2)). Exactly faiss QT_4bit's codes: its arithmetic, the
    position in the range first, then floor(15 x) (so a dimension's max lands in bucket 15, not 14.999...)."""
    spans = ranges[1] - ranges[0]
    position = np.clip((vectors - ranges[0]) / np.where(spans == 0, 1, spans), 0, 1)  # constant dim: bucket 0
    buckets = np.floor(position * 15).astype(np.uint8)
    if buckets.shape[-1] % 2:  # an odd dim: the last byte's high nibble is padding
        buckets = np.concatenate([buckets, np.zeros((*buckets.shape[:-1], 1), np.uint8)], axis=-1)
    return buckets[..., 0::2] | (buckets[..., 1::2] << 4)


def dequantize_int4(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Packed int4 codes back to their buckets' midpoints, (code + 0.5) / 15 of the range above its min, as faiss
    QT_4bit decodes (and dequantize_int8 with 256 levels)."""
    dim = ranges.shape[1]
    buckets = np.stack([codes & 15, codes >> 4], axis=-1).reshape(*codes.shape[:-1], -1)[..., :dim]
    return ((buckets.astype(np.float32) + 0.5) * ((ranges[1] - ranges[0]) / 15) + ranges[0]).astype(np.float32)


# arctic-embed-m-v1.5 quantizes every coordinate of its 256-dim unit vectors to one range, -0.18 to 0.18, for int8
# and int4 (its model card on the Hugging Face hub, "compressed embeddings"). A unit vector's coordinates shrink as
# 1 / sqrt(dim), so at other dims the range is scaled by sqrt(256 / dim): 2.88 x the coordinates' RMS, as at 256.
FIXED_RANGE_AT_256 = 0.18


def fixed_ranges(dim: int) -> np.ndarray:
    """(2, dim): one data-independent range [-r, r] for every dimension, r = 0.18 * sqrt(256 / dim)."""
    r = FIXED_RANGE_AT_256 * np.sqrt(256 / dim)
    return np.stack([np.full(dim, -r), np.full(dim, r)]).astype(np.float32)
