"""Post-pool heads: a per-layer transform of pooled vectors that a checkpoint carries (a PCA rotation, an adaptor),
applied by evaluation to each layer's vectors before truncation, on the cached encodings (no re-encode).

Pure numpy, saved as safetensors (`safetensors.numpy`) with the head's kind in the file's metadata, so evaluation
needs neither torch nor the method that fitted it. A head transforms the layers it has tensors for and passes the
others through unchanged; its output width is the same for every layer (the grid's dims are checked against it).
A new kind is one subclass of `Head` (`KIND`, `from_tensors`, `tensors`, `out_dim`, `apply`), registered in KINDS.
A head that makes its own binary codes also overrides `codes(layer, vectors, dim)`, `bits_per_dim` and the
`PRECISIONS` it serves (evaluation scores it at those only).

Kinds: "linear" (pca), "residual-mlp" (matryoshka-adaptor), "residual-binary" (bebr). The torch modules that train
the last two (methods/_heads.py) compute exactly these functions; tests check that they agree.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from bench import BenchError
from bench.precisions import KNOWN, taking_head_codes
from bench.transforms import BinaryCodes


class Head(ABC):
    """What evaluation reads of every head kind (bench/evaluate.py); the defaults are those of a head that only
    transforms the float vectors."""

    KIND: ClassVar[str]  # the kind written into the file's metadata, which `load_head` reads back
    PRECISIONS: ClassVar[tuple[str, ...]] = KNOWN  # the precisions evaluation scores it at

    @classmethod
    @abstractmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "Head":
        """The head from the tensors `tensors()` saved."""

    @abstractmethod
    def tensors(self) -> dict[str, np.ndarray]:
        """Its tensors, by name, as the file stores them."""

    @property
    @abstractmethod
    def out_dim(self) -> int | None:
        """The width of its output (the same for every layer), or None for a head with no layers."""

    @abstractmethod
    def apply(self, layer: int, vectors: np.ndarray) -> np.ndarray:
        """The vectors of `layer` (1-based) through the head; a layer it has no tensors for passes unchanged."""

    @property
    def bits_per_dim(self) -> int:
        """Sign bits its binary codes store per dimension (1: the plain sign bits of the vectors)."""
        return 1

    def codes(self, layer: int, vectors: np.ndarray, dim: int) -> BinaryCodes | None:
        """Its own binary codes of a cell, from the layer's pooled vectors; None: the binary precisions are the sign
        bits of the (truncated) vectors."""
        return None


@dataclass(frozen=True)
class LinearHead(Head):
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


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    x = np.asarray(vectors, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def residual_mlp(x: np.ndarray, block: dict[str, np.ndarray]) -> np.ndarray:
    """x + relu(x @ w1 + b1) @ w2 + b2: one residual MLP block (w1 (in, hidden), w2 (hidden, in))."""
    hidden = np.maximum(x @ block["w1"] + block["b1"], 0)
    return (x + hidden @ block["w2"] + block["b2"]).astype(np.float32)


BLOCK = ("w1", "b1", "w2", "b2")


def _blocks(tensors: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{"<layer>[.<level>]": {"w1": ..., "b1": ..., "w2": ..., "b2": ...}} from "w1.<layer>[.<level>]" names."""
    keys = sorted({k.split(".", 1)[1] for k in tensors if k.startswith("w1.")})
    return {key: {name: tensors[f"{name}.{key}"] for name in BLOCK} for key in keys}


@dataclass(frozen=True)
class ResidualMLPHead(Head):
    """matryoshka-adaptor's f per transformed layer l: y = u + relu(u @ w1 + b1) @ w2 + b2 with u = x / |x| (each
    layer's pooled vector at unit length, as the paper's API embeddings are)."""

    KIND = "residual-mlp"
    blocks: dict[int, dict[str, np.ndarray]]  # layer -> w1, b1, w2, b2

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "ResidualMLPHead":
        return cls({int(key): block for key, block in _blocks(tensors).items()})

    def tensors(self) -> dict[str, np.ndarray]:
        return {f"{name}.{layer}": block[name] for layer, block in self.blocks.items() for name in BLOCK}

    @property
    def out_dim(self) -> int | None:
        return next(iter(self.blocks.values()))["w2"].shape[1] if self.blocks else None

    def apply(self, layer: int, vectors: np.ndarray) -> np.ndarray:
        if layer not in self.blocks:
            return vectors
        return residual_mlp(unit(vectors), self.blocks[layer])


@dataclass(frozen=True)
class ResidualBinaryHead(Head):
    """bebr's recurrent residual binarization per layer (methods/bebr.py): u = x / |x|, r_0 = u; for each level
    t: z_t = block_t(r_t) (a residual MLP), code_t = sign bits of z_t, s_t = +-1 of code_t,
    r_{t+1} = u - sum_{v <= t} w_v s_v. The d-dim cell keeps the first d bits of every level: its codes'
    reconstruction sum_t w_t s_t[:d] is the first d dims of the full one. The float vectors pass through unchanged
    (binary+rescore-int8/-fp32 rescore with them); the head serves the binary precisions only."""

    KIND = "residual-binary"
    PRECISIONS = taking_head_codes()  # the precisions whose form its codes replace (bench/precisions.py)
    blocks: dict[int, list[dict[str, np.ndarray]]]  # layer -> one residual MLP block per level
    weights: dict[int, np.ndarray]  # layer -> (levels,) the weight of each level's +-1 vector

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "ResidualBinaryHead":
        blocks: dict[int, dict[int, dict]] = {}
        for key, block in _blocks(tensors).items():
            layer, level = map(int, key.split("."))
            blocks.setdefault(layer, {})[level] = block
        weights = {int(k.split(".")[1]): tensors[k] for k in tensors if k.startswith("weights.")}
        if set(blocks) != set(weights) or len({len(w) for w in weights.values()}) > 1 or \
                any(sorted(levels) != list(range(len(weights[layer]))) for layer, levels in blocks.items()):
            raise BenchError("a residual-binary head file has inconsistent levels across layers; delete the "
                             "checkpoint folder and rerun")
        return cls({layer: [levels[t] for t in sorted(levels)] for layer, levels in blocks.items()}, weights)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"weights.{layer}": w for layer, w in self.weights.items()}
        for layer, levels in self.blocks.items():
            out.update({f"{name}.{layer}.{t}": block[name] for t, block in enumerate(levels) for name in BLOCK})
        return out

    @property
    def bits_per_dim(self) -> int:
        return len(next(iter(self.weights.values())))

    @property
    def out_dim(self) -> int | None:
        return next(iter(self.blocks.values()))[0]["w2"].shape[1] if self.blocks else None

    def apply(self, layer: int, vectors: np.ndarray) -> np.ndarray:
        return vectors

    def codes(self, layer: int, vectors: np.ndarray, dim: int) -> BinaryCodes:
        if layer not in self.blocks:
            raise BenchError(f"this bebr head has no codes for layer {layer}; delete the checkpoint folder and rerun")
        u = unit(vectors)
        residual, reconstruction, bits = u, np.zeros_like(u), []
        for block, weight in zip(self.blocks[layer], self.weights[layer]):
            positive = residual_mlp(residual, block) > 0
            bits.append(np.packbits(positive[:, :dim], axis=-1))
            reconstruction += weight * np.where(positive, np.float32(1), np.float32(-1))
            residual = u - reconstruction
        return BinaryCodes(np.concatenate(bits, axis=-1), dim, tuple(float(w) for w in self.weights[layer]))


KINDS = {kind.KIND: kind for kind in (LinearHead, ResidualMLPHead, ResidualBinaryHead)}


def save_head(path: Path, head: Head) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in head.tensors().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"kind": head.KIND})
    tmp.replace(path)
    return path


def load_head(path: str | Path) -> Head:
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
