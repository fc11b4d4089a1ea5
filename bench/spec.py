"""Frozen descriptions of what a run is. run_id is a hash of the spec, so equal specs share results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from bench import BenchError

PRECISIONS = ("fp32", "int8", "binary", "binary+rescore")


@dataclass(frozen=True, order=True)
class SubModel:
    """The first `layer` transformer blocks, the first `dim` coordinates of the pooled vector."""

    layer: int
    dim: int

    def check_inside(self, num_layers: int, hidden_size: int) -> None:
        if not 1 <= self.layer <= num_layers:
            raise BenchError(f"layer {self.layer} is outside the backbone (1..{num_layers}); pick a layer in that range")
        if not 1 <= self.dim <= hidden_size:
            raise BenchError(f"dim {self.dim} is outside the backbone (1..{hidden_size}); pick a dim in that range")


@dataclass(frozen=True)
class EvalSpec:
    """How a checkpoint is scored. Every field moves scores, so every field is recorded with the results."""

    layers: tuple[int, ...] | None = None  # None: every layer 1..L
    dims: tuple[int, ...] | None = None  # None: default_dims(hidden_size)
    pooling: str = "mean"
    normalize: bool = True  # L2-normalize after truncation
    precisions: tuple[str, ...] = ("fp32",)
    batch_size: int = 64
    max_seq_len: int = 128  # STS sentences
    max_query_len: int = 64  # retrieval queries
    max_doc_len: int = 256  # retrieval documents
    max_queries: int | None = None  # a slice of the task, for smoke runs
    max_pairs: int | None = None
    int8_calibration: str = "corpus"  # int8 ranges: "corpus" side (retrieval) / all texts of the task (STS)
    rescore_multiplier: int = 4  # binary+rescore: shortlist = k * multiplier by Hamming

    def __post_init__(self):
        if self.pooling not in ("mean", "cls"):
            raise BenchError(f"unknown pooling {self.pooling!r}; use 'mean' or 'cls'")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise BenchError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        for name in ("batch_size", "max_seq_len", "max_query_len", "max_doc_len", "rescore_multiplier"):
            if getattr(self, name) <= 0:
                raise BenchError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class Budget:
    """The training budget; identical for every method in a comparison."""

    steps: int = 0
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    weight_decay: float = 0.01
    max_seq_len: int = 64
    grad_accum: int = 1

    def __post_init__(self):
        if self.steps < 0:
            raise BenchError(f"budget steps must be >= 0, got {self.steps}")
        if self.batch_size <= 0:
            raise BenchError(f"budget batch_size must be positive, got {self.batch_size}")


@dataclass(frozen=True)
class RunSpec:
    """One trained (or untrained) model evaluated on one task: the unit of a result file."""

    method: str
    task: str
    backbone: str = "minilm"
    params: tuple[tuple[str, object], ...] = ()  # the method's hyperparameters, sorted (key, value)
    train_data: str = "none"
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    eval: EvalSpec = field(default_factory=EvalSpec)

    def model_fields(self) -> dict:
        """What determines the checkpoint (not the task nor how it is scored)."""
        return {"method": self.method, "backbone": self.backbone, "params": dict(self.params),
                "train_data": self.train_data, "budget": asdict(self.budget), "seed": self.seed}

    @property
    def model_key(self) -> str:
        return stable_hash(self.model_fields())

    @property
    def params_hash(self) -> str:
        return stable_hash(dict(self.params))

    @property
    def run_id(self) -> str:
        return stable_hash({**self.model_fields(), "task": self.task, "eval": asdict(self.eval)})


def stable_hash(obj) -> str:
    """12 hex digits of sha256 over canonical JSON: stable across processes and machines."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_dims(hidden_size: int, smallest: int = 16) -> tuple[int, ...]:
    """Halve from the full width down to `smallest`: 384 -> (24, 48, 96, 192, 384), 768 -> (24, ..., 768)."""
    dims = [hidden_size]
    while dims[-1] % 2 == 0 and dims[-1] // 2 >= smallest:
        dims.append(dims[-1] // 2)
    return tuple(sorted(dims))


def freeze_params(params: dict) -> tuple[tuple[str, object], ...]:
    """Dataclass hyperparameters -> a hashable, sorted tuple (lists become tuples)."""
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v
    return tuple(sorted((k, freeze(v)) for k, v in params.items()))
