"""Pure numpy transforms of pooled vectors: truncate, normalize, bytes per vector."""

from __future__ import annotations

import numpy as np


def truncate(vectors: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """Keep the first `dim` coordinates, then (optionally) L2-normalize: the order matters and is recorded."""
    out = np.array(vectors[..., :dim], dtype=np.float32, order="C")  # a copy: inputs may be read-only memmaps
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def bytes_per_vector(dim: int, precision: str) -> int:
    return {"fp32": 4 * dim, "int8": dim, "binary": dim // 8, "binary+rescore": dim // 8}[precision]
