"""Named presets: what to run (backbone, tasks, evaluation grid, training budget, seeds)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bench import BenchError
from bench.models import PUBLIC_MODELS
from bench.spec import Budget, EvalSpec

STS_TASKS = ("stsb", "sickr", "sts12", "sts13", "sts14", "sts15", "sts16")
FOUNDATION_TASKS = STS_TASKS + ("scifact",)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    backbone: str = "minilm"
    backbones: tuple[str, ...] = ()  # several backbones, each run with the same specs (`backbone` is then unused)
    methods: str = "all"  # the default of `--methods`
    tasks: tuple[str, ...] = FOUNDATION_TASKS
    eval: EvalSpec = field(default_factory=EvalSpec)
    budget: Budget = field(default_factory=Budget)
    train_data: str = "snli"
    seeds: tuple[int, ...] = (0,)
    method_params: dict = field(default_factory=dict)  # {method: {hyperparameter: value}} over its defaults
    dtype: str = "fp32"  # compute dtype of training and encoding (bench.spec.DTYPES)


# The smoke suite's SMAE. At the paper's lr (1e-4) its 8 steps of 8 sentences never left chance: every MLM and MAE
# loss stayed at ln(30522) = 10.33, so a broken pre-training looked like a working one. At lr 5e-3 for 16 steps the
# last two steps' mean of every pair's MLM and MAE loss is 8.89..8.97 (from 10.34..10.36 at the first two), and the
# stage takes 0.5..3 s on 2 shared CPU cores (measured: methods.starbucks.pretrain via `bench run`, smoke suite,
# STS-B). Pushed further (8 steps at 1e-2 or 2e-2, 24 at 5e-3: 7.8..8.9) layer 2's pooled vectors collapse onto
# one sign pattern, so its binary cells have constant similarities and a NaN Spearman; here none do.
SMOKE_SMAE = dict(pretrain_steps=16, pretrain_batch_size=8, pretrain_max_seq_len=32, pretrain_lr=5e-3)


def smoke() -> Suite:
    """A tiny random BERT on real data slices: seconds, for tests and CI. Its target rule gives (1,32) (2,64)."""
    return Suite("smoke", "tiny random BERT (2 layers x 64), 8 steps, data slices", backbone="tiny-random-bert",
                 tasks=("stsb", "scifact"), eval=EvalSpec(max_pairs=200, max_queries=20, dims=(16, 32, 64),
                                                         max_doc_len=64, batch_size=32),
                 budget=Budget(steps=8, batch_size=8, lr=1e-4, max_seq_len=32, checkpoint_every=4),
                 method_params={"starbucks": SMOKE_SMAE,
                                **{m: dict(fit_sentences=1024) for m in ("pca", "matryoshka-adaptor", "bebr")}})


# MiniLM (6 x 384) evaluated at the Starbucks target dims: a 6 x 6 grid whose diagonal is the targets
# (1,16) (2,32) (3,64) (4,128) (5,256) (6,384) of starbucks-srl and separate (see methods/starbucks_srl.py).
MINILM_DIMS = (16, 32, 64, 128, 256, 384)
# Per-example values (what intervals and paired tests need) are stored for the diagonal only: every cell's values
# for 12 methods x 3 tasks would be ~100 MB of committed results; the diagonal is where the paper tables test.
MINILM_DIAGONAL = tuple(zip(range(1, 7), MINILM_DIMS))
# The default suite must run `bench run --methods all` (8 trainings, 6 separate models, 3 post-hoc heads and their
# evaluations) in <= 30 minutes on 2 CPU cores; the costs below were measured there (MiniLM, medians):
# - a training step: 0.66 s at 16 SNLI triplets, 1.26 s at 32 (benchmarks/train_step.py); `separate` costs 4.5
#   full-depth trainings (six models, each paying the full embedding matrix's AdamW update);
# - encoding SciFact's 5,183 documents: 56 s at 64 tokens, 96 s at 96, 124 s at 128 (2 minutes per checkpoint);
# - 100 steps x 16 with SciFact at 64 tokens and 40 SMAE steps took 30:18 for `--methods all`: just over.
# So: 80 steps of 16 triplets (at 16 x 100 a Starbucks-style loss already lifted STS-B at (3, 64) from 39.6 to
# 56.5 while plain fine-tuning fell to 36.0), SciFact documents cut to 64 tokens (title and first sentences), one
# intermediate checkpoint (each one writes the model and AdamW state), and 20 SMAE steps for `starbucks`.
# With 12 methods (qat, ese and three post-hoc heads added) that budget took 30:40 (`/usr/bin/time bench run --suite
# default`; per method: separate 469 s, starbucks 213 s, 2dmse 177 s, ese 174 s, mrl 161 s, full 158 s, starbucks-srl
# 155 s, qat 153 s, bebr 118 s (it encodes the frozen backbone that pca, the adaptor and pretrained then reuse),
# matryoshka-adaptor 25 s, pca 14 s, pretrained 14 s; training is ~60 s of each trained method's time). So 64 steps
# now, and no intermediate checkpoint (nothing reads it; each one wrote the model and its AdamW state): 29:43 with
# an empty cache (peak RSS 2.8 GB); separate 443 s, starbucks 222 s, 2dmse 167 s, ese 162 s, full 158 s,
# starbucks-srl 154 s, qat 145 s, mrl 144 s, bebr 120 s, matryoshka-adaptor 26 s, pca 16 s, pretrained 14 s. Training
# is a third of a trained method's time; encoding the three tasks per checkpoint (SciFact's corpus ~60 s) the rest.
# 2026-12-07, on a fresh clone (an Intel Xeon, 2 cores), with models loaded once per process: 27:40, of which train
# 33%, encode 50%, score 16%, start-up, loading and writing under 1%, untimed 0.0% (the profile `bench run` prints).
SHORT_BUDGET = Budget(steps=64, batch_size=16, lr=2e-5, warmup_ratio=0.1, max_seq_len=64, checkpoint_every=64)
# An SMAE step of 32 sentences (64 tokens) cost 3.2 s in that run (128 s for 40), ~4.5 fine-tuning steps of 16.
DEFAULT_SMAE = dict(pretrain_steps=20)
DEFAULT_DOC_LEN = 64


def default() -> Suite:
    """The CPU comparison: every method, STS-B, SICK-R and SciFact. Retrieval setting: SciFact's whole corpus
    (5,183 abstracts, 300 queries) with documents cut to 64 tokens, because encoding that corpus is the largest
    evaluation cost of the suite and `separate`'s six truncated models pay it about 4 times (259 s against 61 s);
    every method is cut the same way, so the comparison is fair, but the absolute nDCG@10 is below the usual
    256-token (or untruncated) figures."""
    return Suite("default", "all-MiniLM-L6-v2, SNLI triplets, 64 steps x 16; STS-B, SICK-R, SciFact (64-token docs)",
                 tasks=("stsb", "sickr", "scifact"), eval=EvalSpec(dims=MINILM_DIMS, max_doc_len=DEFAULT_DOC_LEN,
                                                                       example_cells=MINILM_DIAGONAL),
                 budget=SHORT_BUDGET, method_params={"starbucks": DEFAULT_SMAE})


# Every precision the harness can score but pq32, whose 32 sub-quantizers cannot split the 16-dim cells
COMPRESSIONS = ("fp32", "fp16", "bf16", "fp8", "int8", "int8-fixed", "int4", "int4-fixed", "binary", "binary+rescore",
                "binary+rescore-int8", "binary+rescore-fp32", "pq8", "pq16", "rabitq")


def compression() -> Suite:
    """The compression axis (issue 24) on the default suite's setting: pretrained MiniLM and starbucks-srl (the same
    training as the default suite) on STS-B and SciFact, every cell at every compression, 10 random-subset draws
    beside each prefix below full width, and every query layer x document layer at full width; per-example values
    of every cell, so every budget winner has an interval. Its results live apart from the default suite's
    (results-compression/): the same methods evaluated two ways in one folder would be two configs of one cell."""
    return Suite("compression", "pretrained and starbucks-srl MiniLM: every compression, random subsets, query layers",
                 methods="pretrained,starbucks-srl", tasks=("stsb", "scifact"),
                 eval=EvalSpec(dims=MINILM_DIMS, max_doc_len=DEFAULT_DOC_LEN, precisions=COMPRESSIONS,
                               random_subsets=10, asymmetric_dims=(384,)),
                 budget=SHORT_BUDGET, method_params={"starbucks": DEFAULT_SMAE})


def cpu_full() -> Suite:
    """The default suite's training for longer, at 32 triplets a step (two passes over the 6,503 SNLI triplets),
    every foundation task, retrieval documents at 256 tokens: a few CPU-hours."""
    return Suite("cpu-full", "all-MiniLM-L6-v2, SNLI triplets, 400 steps, every foundation task",
                 eval=EvalSpec(dims=MINILM_DIMS),
                 budget=replace(SHORT_BUDGET, steps=400, batch_size=32, checkpoint_every=100),
                 method_params={"starbucks": dict(pretrain_steps=400)})


def paper_sts() -> Suite:
    """The Starbucks paper's STS setting, for GPU users with the hub: bert-base-uncased, one epoch of AllNLI
    triplets (557,850 / 128 = 4,358 steps) with MultipleNegativesRankingLoss, batch 128, the sentence-transformers
    trainer defaults the paper's scripts kept (lr 5e-5, linear decay, warmup 0.1, no weight decay, clipping at 1,
    seed 42, activation checkpointing; bf16 autocast here where the paper used fp16), evaluated on the STS tasks at the
    paper's dims."""
    return Suite("paper-sts", "bert-base-uncased, AllNLI (hub), the Starbucks paper's STS hyperparameters, GPU",
                 backbone="bert-base-uncased", tasks=STS_TASKS, train_data="all-nli", seeds=(42,),
                 eval=EvalSpec(dims=(32, 64, 128, 256, 512, 768)),
                 budget=Budget(steps=4358, batch_size=128, lr=5e-5, warmup_ratio=0.1, weight_decay=0.0,
                               max_seq_len=512, checkpoint_every=500, grad_checkpointing=True),
                 method_params={"starbucks": PAPER_SMAE}, dtype="bf16")


# The paper's SMAE (ielab/Starbucks smae/pretrain_smae.sh): whole-word masking 0.2 (encoder) / 0.4 (decoder), lr 1e-4,
# cosine, warmup 5%, weight decay 0.001, 512 windows per step (32 per GPU x 2 accumulation x 8 GPUs there, 32 x 16
# accumulation on one GPU here), random 510-token windows of FineWeb sample-100BT. The paper ran one epoch over it (its
# job reserves 80 hours on 8 GPUs); this suite runs 10,000 steps (5.1M windows, ~2.6B tokens): a few hours on one
# H100 by a FLOP estimate, not a measurement. The windows are streamed once and held in memory (~13 GB of text).
PAPER_SMAE = dict(corpus="hf:HuggingFaceFW/fineweb:sample-100BT", mlm_rate=0.2, mae_rate=0.4, pretrain_steps=10_000,
                  pretrain_batch_size=32, pretrain_grad_accum=16, pretrain_lr=1e-4, pretrain_schedule="cosine",
                  pretrain_warmup_ratio=0.05, pretrain_weight_decay=0.001, pretrain_max_seq_len=512)


def public_models() -> Suite:
    """Every registered public elastic model (bench/models.py) as its authors serve it, pretrained only, on STS-B,
    SICK-R and SciFact (whole documents up to 512 tokens, capped by each model's own max sequence length): for users
    with the hub (the models download at their pinned revisions; nomic-embed-text-v1.5 needs --trust-remote-code).
    Each model's dims follow its width and include the dims it was trained for; its trained cells are boxed."""
    return Suite("public-models", "the registered public elastic models as served, pretrained, STS and retrieval (hub)",
                 backbones=tuple(PUBLIC_MODELS), methods="pretrained", tasks=("stsb", "sickr", "scifact"),
                 eval=EvalSpec(max_doc_len=512, batch_size=32))


SUITES = {"smoke": smoke, "default": default, "compression": compression, "cpu-full": cpu_full, "paper-sts": paper_sts,
          "public-models": public_models}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise BenchError(f"unknown suite {name!r}; known: {', '.join(SUITES)} (see `bench ls`)")
    return SUITES[name]()


def with_overrides(suite: Suite, steps: int | None = None, **changes) -> Suite:
    """Command-line overrides: None leaves the suite's value; eval fields go into the EvalSpec, `steps` into the
    training budget (which the runs record, so a shorter run never passes for the suite's). A backbone given
    replaces the suite's backbone(s), and unless dims are given too, the dims follow it: the default rule on the
    width it serves (bench.spec.default_dims), not the suite's dims for its own backbone, and per-example values are
    stored for every cell (the suite's example_cells name its own backbone's diagonal). `steps` is the
    fine-tuning budget only: starbucks' SMAE pre-training steps are its `pretrain_steps` parameter, left as the
    suite sets them."""
    eval_fields = {k: v for k, v in changes.items() if k in EvalSpec.__dataclass_fields__ and v is not None}
    top = {k: v for k, v in changes.items() if k in Suite.__dataclass_fields__ and v is not None}
    if changes.get("backbone") is not None:
        top["backbones"] = ()
        if changes.get("dims") is None:
            eval_fields["dims"] = None
        eval_fields["example_cells"] = None  # the suite's cells are its own backbone's: every cell's values instead
    budget = suite.budget if steps is None else replace(suite.budget, steps=steps)
    return replace(suite, eval=replace(suite.eval, **eval_fields), budget=budget, **top)
