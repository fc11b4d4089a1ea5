"""Frozen descriptions of what a run is. run_id is a hash of the spec, so equal specs share results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from bench import BenchError
from bench.precisions import KNOWN, check_dims

# The precisions an EvalSpec evaluates by default (bench/precisions.KNOWN lists every one the harness can score)
PRECISIONS = ("fp32", "int8", "binary", "binary+rescore", "binary+rescore-int8", "binary+rescore-fp32")
POOLINGS = ("cls", "mean", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens")  # sentence-transformers'
# Text roles and their prompts: `default` is what SentenceTransformer.encode(texts) prepends (STS sentences and
# any text without a role), `query` and `document` what encode(prompt_name="query" / "document") prepends.
ROLES = ("default", "query", "document")
HEAD_LAYERS = ("every", "last")
INT8_CALIBRATIONS = ("corpus", "queries")
SEARCH_INDEXES = ("flat", "hnsw")
STORE_DTYPES = ("float32", "float16")
# The compute dtype of training and encoding (matmuls under autocast; pooling, normalisation, quantization and
# scoring stay float32). fp32 is the default so reference numbers do not depend on the machine.
DTYPES = ("fp32", "bf16")


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise BenchError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)} (e.g. --dtype bf16)")


def check_precision_dims(precisions: tuple[str, ...], dims: tuple[int, ...]) -> None:
    """Known precisions only, and every dim storable at each (binary packs 8 dims per byte): their records say."""
    check_dims(precisions, dims)


def check_asymmetric_dims(asymmetric_dims: tuple[int, ...], grid_dims) -> None:
    """The query-layer cells' dims must be dims of the grid they are cut from."""
    off_grid = sorted(set(asymmetric_dims) - set(grid_dims))
    if off_grid:
        raise BenchError(f"asymmetric dims {off_grid} are not among the grid's dims {sorted(set(grid_dims))}; add "
                         "them to --dims or drop them")


def check_pooling(pooling: str) -> None:
    """"auto", one of POOLINGS, or several joined by "+" (a Pooling that concatenates modes)."""
    if pooling != "auto" and not all(mode in POOLINGS for mode in pooling.split("+")):
        raise BenchError(f"unknown pooling {pooling!r}; choose from auto, {', '.join(POOLINGS)}")


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
    dims: tuple[int, ...] | None = None  # None: default_dims(the width the model serves)
    # "auto": the model's own (its sentence-transformers Pooling, else mean), resolved when specs are made, so a
    # written spec always names the pooling it used; or one of POOLINGS, overriding the model's
    pooling: str = "auto"
    # role -> prompt text. None: the model's own, resolved when specs are made into all three ROLES; a partial
    # tuple overrides those roles ("@name" picks the model's prompt of that name, "@@" starts a literal "@")
    prompts: tuple[tuple[str, str], ...] | None = None
    head_layers: str = "every"  # the modules after pooling (Dense, LayerNorm, Normalize) on "every" layer or the "last"
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
    rescore_multiplier: int = 4  # binary+rescore*: shortlist = multiplier x the metric's cutoff, by Hamming
    search_index: str = "flat"  # faiss: "flat" (exact) or "hnsw" (approximate, for large corpora)
    # Per-example values (for intervals and paired tests) are stored for these (layer, dim) cells only, at every
    # precision; None: every cell. Scores are unaffected. It keeps committed results small: SICK-R's 9,927 pair
    # similarities x 36 cells x 3 precisions are 4.3 MB per run.
    example_cells: tuple[tuple[int, int], ...] | None = None
    # how the cached encodings are stored: "float16" halves their disk and page-cache footprint (every cell is
    # still computed in float32 from the rounded vectors); its effect on scores is in README and bench/storage.py
    store_dtype: str = "float32"
    # Cells beyond the prefix grid (bench/variants.py), scored from the same cached encodings at `variant_precisions`:
    # `random_subsets` seeded draws of `dim` random coordinates at every cell below the full width (0: none), and
    # every (query layer, document layer) pair of the grid's layers at each of `asymmetric_dims` (retrieval only)
    random_subsets: int = 0
    asymmetric_dims: tuple[int, ...] = ()
    variant_precisions: tuple[str, ...] = ("fp32", "int8", "binary")

    def __post_init__(self):
        check_pooling(self.pooling)
        for role, _ in self.prompts or ():
            if role not in ROLES:
                raise BenchError(f"unknown prompt role {role!r}; roles are {', '.join(ROLES)} (e.g. --prompts "
                                 'query="search_query: ",document="search_document: ")')
        if self.head_layers not in HEAD_LAYERS:
            raise BenchError(f"unknown head_layers {self.head_layers!r}; choose from {', '.join(HEAD_LAYERS)}")
        if not self.precisions:
            raise BenchError(f"no precision to evaluate; pass some of {', '.join(KNOWN)}")
        check_precision_dims(self.precisions, self.dims or ())
        for name, allowed in (("int8_calibration", INT8_CALIBRATIONS), ("search_index", SEARCH_INDEXES),
                              ("store_dtype", STORE_DTYPES)):
            if getattr(self, name) not in allowed:
                raise BenchError(f"unknown {name} {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        if self.example_cells is not None and not all(
                len(c) == 2 and all(isinstance(x, int) and x > 0 for x in c) for c in self.example_cells):
            raise BenchError(f"example_cells must be (layer, dim) pairs of positive integers, got {self.example_cells!r}")
        check_precision_dims(self.variant_precisions, self.asymmetric_dims)
        if self.random_subsets < 0 or not all(isinstance(d, int) and d > 0 for d in self.asymmetric_dims):
            raise BenchError(f"random_subsets must be >= 0 and asymmetric_dims positive dims, got "
                             f"{self.random_subsets} and {self.asymmetric_dims!r}")
        if self.dims is not None:  # known before anything trains (else bench/evaluate.py checks them on the grid)
            check_asymmetric_dims(self.asymmetric_dims, self.dims)
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
    dtype: str = "fp32"  # compute dtype of training and encoding alike (DTYPES)

    def __post_init__(self):
        check_dtype(self.dtype)

    def model_fields(self) -> dict:
        """What determines the checkpoint (not the task nor how it is scored). The dtype moves both the weights
        and the encodings; added after results were committed, it joins only when it is not fp32 (as
        LATER_EVAL_FIELDS), so every earlier run_id and checkpoint key stays valid."""
        fields = {"method": self.method, "backbone": self.backbone, "params": dict(self.params),
                  "train_data": self.train_data, "budget": budget_identity(self.budget), "seed": self.seed}
        return fields if self.dtype == "fp32" else {**fields, "dtype": self.dtype}

    @property
    def model_key(self) -> str:
        return stable_hash(self.model_fields())

    @property
    def params_hash(self) -> str:
        return stable_hash(dict(self.params))

    @property
    def run_id(self) -> str:
        return stable_hash({**self.model_fields(), "task": self.task, "eval": eval_hash_fields(self.eval)})


# The variant fields at their "none" value: left out of the run_id (LATER_EVAL_FIELDS) and out of the recorded
# `eval` (recorded_eval), so runs without variants pair with runs from before the fields existed
VARIANT_DEFAULTS = {"random_subsets": 0, "asymmetric_dims": (), "variant_precisions": ("fp32", "int8", "binary")}


def recorded_eval(spec: EvalSpec) -> dict:
    """The EvalSpec as the results' `eval` column records it: every field, but the variant fields only when set."""
    fields = asdict(spec)
    if not spec.random_subsets and not spec.asymmetric_dims:
        for name in VARIANT_DEFAULTS:
            del fields[name]
    return fields


# EvalSpec fields added after results were committed, with the value that means "as before the field existed":
# they join the run_id only when they differ from it, so every earlier run keeps its run_id (and `bench reproduce`
# its references). Prompts that are all empty are no prompts, which is what every earlier run had.
LATER_EVAL_FIELDS = {"prompts": lambda v: v is not None and not any(text for _, text in v),
                     "head_layers": lambda v: v == "every", "example_cells": lambda v: v is None,
                     "store_dtype": lambda v: v == "float32", **{
                         name: (lambda v, d=default: v == d) for name, default in VARIANT_DEFAULTS.items()}}


def eval_hash_fields(spec: EvalSpec) -> dict:
    fields = asdict(spec)
    return {k: v for k, v in fields.items() if not (k in LATER_EVAL_FIELDS and LATER_EVAL_FIELDS[k](v))}


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
