"""Post-pool heads: a per-layer transform of pooled vectors that a checkpoint carries (a PCA rotation, an adaptor),
applied by evaluation to each layer's vectors before truncation, on the cached encodings (no re-encode).

Pure numpy, saved as safetensors (`safetensors.numpy`) with the head's kind in the file's metadata, so evaluation
needs neither torch nor the method that fitted it. A head transforms the layers it has tensors for and passes the
others through unchanged; its output width is the same for every layer (the grid's dims are checked against it).
A new kind is one class with `KIND`, `from_tensors` and `apply`, registered in KINDS.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from bench import BenchError


@dataclass(frozen=True)
class LinearHead:
    """y = x @ weight[l] + bias[l] per transformed layer l (a PCA rotation is one: weight = components^T,
    bias = -mean @ components^T)."""

    KIND = "linear"
    weights: dict[int, np.ndarray]  # layer -> (in, out)
    biases: dict[int, np.ndarray]  # layer -> (out,)

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "LinearHead":
        layers = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("weight."))
        return cls({l: tensors[f"weight.{l}"] for l in layers}, {l: tensors[f"bias.{l}"] for l in layers})

    def tensors(self) -> dict[str, np.ndarray]:
        return {**{f"weight.{l}": w for l, w in self.weights.items()}, **{f"bias.{l}": b for l, b in self.biases.items()}}

    @property
    def out_dim(self) -> int | None:
        return next(iter(self.weights.values())).shape[1] if self.weights else None

    def apply(self, layer: int, vectors: np.ndarray) -> np.ndarray:
        if layer not in self.weights:
            return vectors
        return (np.asarray(vectors, dtype=np.float32) @ self.weights[layer] + self.biases[layer]).astype(np.float32)


KINDS = {LinearHead.KIND: LinearHead}


def save_head(path: Path, head) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in head.tensors().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"kind": head.KIND})
    tmp.replace(path)
    return path


def load_head(path: str | Path):
    """The head saved at `path`; a missing, corrupt or unknown-kind file is one error line."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "np") as fh:
            kind = (fh.metadata() or {}).get("kind", "")
    except (OSError, SafetensorError, ValueError) as exc:
        raise BenchError(f"cannot read the head file {path} ({exc}); delete the checkpoint folder and rerun") from None
    if kind not in KINDS:
        raise BenchError(f"head file {path} has unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind].from_tensors(tensors)


def head_id(path: str | Path | None) -> str:
    """What the rows record: "<kind>:<sha256 of the file, 12 digits>", or "" for no head."""
    if path is None:
        return ""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"{type(load_head(path)).KIND}:{digest}"
