"""Frozen descriptions of what a run is. run_id is a hash of the spec, so equal specs share results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from bench import BenchError

PRECISIONS = ("fp32", "int8", "binary", "binary+rescore")
INT8_CALIBRATIONS = ("corpus", "queries")
RESCORE_DOCS = ("int8", "fp32")
SEARCH_INDEXES = ("flat", "hnsw")


def check_precision_dims(precisions: tuple[str, ...], dims: tuple[int, ...]) -> None:
    """Known precisions only; binary codes pack 8 dims per byte, so with a binary precision every dim must be a
    multiple of 8."""
    for p in precisions:
        if p not in PRECISIONS:
            raise BenchError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    binary = [p for p in precisions if p.startswith("binary")]
    odd = sorted({d for d in dims if d % 8})
    if binary and odd:
        raise BenchError(f"precision {binary[0]} packs 8 dims per byte, but dims {', '.join(map(str, odd))} are not "
                         "multiples of 8; choose dims like 16,24,32 or drop the binary precisions")


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
    precisions: tuple[str, ...] = PRECISIONS
    batch_size: int = 64
    max_seq_len: int = 128  # STS sentences
    max_query_len: int = 64  # retrieval queries
    max_doc_len: int = 256  # retrieval documents
    max_queries: int | None = None  # a slice of the task, for smoke runs
    max_pairs: int | None = None
    # int8 ranges come from one side and are reused for the other: retrieval "corpus" or "queries"; an STS task
    # has one pool of sentences, which is its calibration set under either value.
    int8_calibration: str = "corpus"
    rescore_multiplier: int = 4  # binary+rescore: shortlist = k * multiplier by Hamming
    rescore_docs: str = "int8"  # binary+rescore: float query against "int8" (dequantized) or "fp32" documents
    search_index: str = "flat"  # faiss: "flat" (exact) or "hnsw" (approximate, for large corpora)
    # Per-example values (for intervals and paired tests) are stored for these (layer, dim) cells only, at every
    # precision; None: every cell. Scores are unaffected. It keeps committed results small: SICK-R's 9,927 pair
    # similarities x 36 cells x 3 precisions are 4.3 MB per run.
    example_cells: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self):
        if self.pooling not in ("mean", "cls"):
            raise BenchError(f"unknown pooling {self.pooling!r}; use 'mean' or 'cls'")
        if not self.precisions:
            raise BenchError(f"no precision to evaluate; pass some of {', '.join(PRECISIONS)}")
        check_precision_dims(self.precisions, self.dims or ())
        for name, allowed in (("int8_calibration", INT8_CALIBRATIONS), ("rescore_docs", RESCORE_DOCS),
                              ("search_index", SEARCH_INDEXES)):
            if getattr(self, name) not in allowed:
                raise BenchError(f"unknown {name} {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        if self.example_cells is not None and not all(
                len(c) == 2 and all(isinstance(x, int) and x > 0 for x in c) for c in self.example_cells):
            raise BenchError(f"example_cells must be (layer, dim) pairs of positive integers, got {self.example_cells!r}")
        for name in ("batch_size", "max_seq_len", "max_query_len", "max_doc_len", "rescore_multiplier"):
            if getattr(self, name) <= 0:
                raise BenchError(f"{name} must be positive, got {getattr(self, name)}")


SCHEDULES = ("linear", "cosine", "constant_with_warmup")  # transformers.get_scheduler names, with warmup
OPTIMIZERS = ("adamw", "sgd")
# Budget fields added after reference results were committed, at the default that reproduces the old behaviour:
# at that default they stay out of the run's identity and of its recorded budget (absent means that default), so
# existing run ids and references stay valid and old and new rows of one budget read the same.
LATER_BUDGET_DEFAULTS = {"optimizer": "adamw"}


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
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step (per process)
    max_grad_norm: float = 1.0  # gradient clipping, as the HF/sentence-transformers trainer does by default
    checkpoint_every: int = 50  # steps between resumable checkpoints (does not change the result)
    grad_checkpointing: bool = False  # activation checkpointing: less memory, same numbers
    # "sgd": plain SGD (no momentum), whose step is proportional to the gradient; tests use it to see gradient-scale
    # bugs that AdamW's normalization hides
    optimizer: str = "adamw"

    def __post_init__(self):
        if self.steps < 0:
            raise BenchError(f"budget steps must be >= 0, got {self.steps}")
        for name in ("batch_size", "max_seq_len", "grad_accum", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise BenchError(f"budget {name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise BenchError(f"budget lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise BenchError(f"budget warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in SCHEDULES:
            raise BenchError(f"unknown budget schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise BenchError(f"unknown budget optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise BenchError("budget weight_decay and max_grad_norm must be >= 0 (0 turns them off)")


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
                "train_data": self.train_data, "budget": budget_identity(self.budget), "seed": self.seed}

    @property
    def model_key(self) -> str:
        return stable_hash(self.model_fields())

    @property
    def params_hash(self) -> str:
        return stable_hash(dict(self.params))

    @property
    def run_id(self) -> str:
        return stable_hash({**self.model_fields(), "task": self.task, "eval": asdict(self.eval)})


def budget_identity(budget: Budget) -> dict:
    """The budget's fields as they enter run ids and result rows: LATER_BUDGET_DEFAULTS left out at their default."""
    fields = asdict(budget)
    for name, default in LATER_BUDGET_DEFAULTS.items():
        if fields[name] == default:
            del fields[name]
    return fields


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
