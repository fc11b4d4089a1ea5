"""`starbucks`: the paper's full method (Zhuang et al. 2024): SMAE pre-training (bench/smae.py) at the method's
(layer, dim) targets, then `starbucks-srl` fine-tuning (its objective, its parameters) from the pre-trained encoder.

The pre-training is a cached stage: cache/checkpoints/smae-<hash>/, the hash over its own spec (backbone, targets,
masking rates, MAE on/off, corpus, its budget, seed), so fine-tunings that differ only in their own settings
(training data, budget, KL) reuse it, and a rerun does not pre-train again. It goes through the one training loop
(bench/train.py): same devices, the run's dtype, DDP, checkpoints and exact resume. The fine-tuning starts from, and
is keyed by, the pre-trained encoder's folder, which carries that hash (so a moved cache retrains the fine-tuning,
not the pre-training).

Pre-training parameters (`pretrain_*` is its budget). Defaults: the paper's masking (whole words, 0.2 for the
encoder, 0.4 for the decoder) and optimiser (lr 1e-4, cosine, warmup 5%, weight decay 0.001), on the local
sentence corpus (bench/data/corpus.py: no sentence of an evaluation set on disk; how many were dropped is the row
`smae_sentences_removed`) for a CPU-sized 40 steps of 32 sentences; `paper-sts` sets the paper's corpus and scale.
A backbone without an MLM head (all-MiniLM-L6-v2 ships none) gets a freshly initialised one: a warning says so and
the row `smae_mlm_head_pretrained` (0 or 1) records it.

Loss rows (split "train", beside the fine-tuning's `loss`): `smae_loss` (the total, per step, with the loop's
`smae_lr` and `smae_grad_norm`), `smae_mlm_loss` and `smae_mae_loss` per step at each target's layer and dim (mean
over micro-batches and processes), `smae_sentences_removed` and `smae_train_seconds`; `train_seconds` covers both
stages.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bench import BenchError
from bench.data.corpus import DEFAULT_CORPUS, HUB_PREFIX, LOCAL_SOURCES, corpus_texts
from bench.data.decontaminate import evaluation_sets
from bench.dist import world
from bench.fingerprint import method_code
from bench.losses import inner_model
from bench.hub import backbone_shape, load_model
from bench.smae import SMAELosses, SMAEModel, mask_batch, mlm_head_for, tokenize
from bench.spec import Budget, RunSpec, SubModel, stable_hash
from bench.train import is_trained, read_result, train
from methods import METHODS, Checkpoint, RunContext
from methods._jobs import method_checkpoints
from methods.starbucks_srl import StarbucksSRL, resolve_targets

log = logging.getLogger("bench")
LOG_KEY = "smae_loss_log"  # the per-pair loss log, saved beside the weights so a resumed run keeps it
ENCODER_DIR = "encoder"  # inside a checkpoint: the encoder alone, an ordinary model folder
META_FILE = "smae.json"


@METHODS.register("starbucks")
class Starbucks(StarbucksSRL):
    # the pre-training's fields: they act before the fine-tuning objective (tests/test_starbucks.py covers them)
    fields_outside_objective = ("mlm_rate", "mae_rate", "mae", "corpus", "pretrain_steps", "pretrain_batch_size",
                                "pretrain_grad_accum", "pretrain_lr", "pretrain_schedule", "pretrain_warmup_ratio",
                                "pretrain_weight_decay", "pretrain_max_seq_len")

    @dataclass(frozen=True)
    class Params(StarbucksSRL.Params):
        mlm_rate: float = 0.2  # whole-word mask rate of the encoder's input
        mae_rate: float = 0.4  # ... of the decoder's copy
        mae: bool = True  # False: the MLM-only variant
        corpus: str = DEFAULT_CORPUS
        pretrain_steps: int = 40
        pretrain_batch_size: int = 32
        pretrain_grad_accum: int = 1
        pretrain_lr: float = 1e-4
        pretrain_schedule: str = "cosine"
        pretrain_warmup_ratio: float = 0.05
        pretrain_weight_decay: float = 0.001
        pretrain_max_seq_len: int = 64

        def __post_init__(self):
            super().__post_init__()
            for name in ("mlm_rate", "mae_rate"):
                if not 0 < getattr(self, name) < 1:
                    raise BenchError(f"starbucks {name} must be in (0, 1); got {getattr(self, name)}")
            if not self.corpus.startswith(HUB_PREFIX):
                unknown = [s for s in self.corpus.split("+") if s not in LOCAL_SOURCES]
                if unknown:
                    raise BenchError(f"starbucks corpus source {unknown[0]!r} is unknown; join some of "
                                     f"{', '.join(LOCAL_SOURCES)} with '+', or use {HUB_PREFIX}<dataset>[:<config>]")
            if self.pretrain_steps <= 0:
                raise BenchError(f"starbucks pretrain_steps must be positive (without pre-training it is "
                                 f"starbucks-srl); got {self.pretrain_steps}")
            try:
                pretrain_budget(self)
            except BenchError as exc:
                raise BenchError(f"starbucks pretrain_* parameters: {exc}") from None

    def checkpoints(self, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
        params = self.Params(**dict(spec.params))
        targets = resolve_targets(params.targets, *backbone_shape(ctx.backbone(spec.backbone)))
        stage = pretrain(spec, ctx, params, targets)
        tuned = method_checkpoints(self, replace(spec, backbone=str(stage.encoder_dir)), ctx)
        return [replace(ck, train_log=stage.rows + ck.train_log, train_seconds=ck.train_seconds + stage.seconds)
                for ck in tuned]


def pretrain_budget(params: Starbucks.Params, like: Budget = Budget()) -> Budget:
    """The SMAE stage's budget; checkpointing and activation checkpointing (which change no number) as `like`."""
    return Budget(steps=params.pretrain_steps, batch_size=params.pretrain_batch_size, lr=params.pretrain_lr,
                  warmup_ratio=params.pretrain_warmup_ratio, schedule=params.pretrain_schedule,
                  weight_decay=params.pretrain_weight_decay, max_seq_len=params.pretrain_max_seq_len,
                  grad_accum=params.pretrain_grad_accum, checkpoint_every=like.checkpoint_every,
                  grad_checkpointing=like.grad_checkpointing)


def pretrain_spec(spec: RunSpec, params: Starbucks.Params, targets: tuple[SubModel, ...],
                  eval_sets: tuple[str, ...]) -> dict:
    """Everything that determines the pre-trained weights, and nothing else (its hash names the cache folder),
    the code that trains them included, and for a local corpus the evaluation sets whose sentences were dropped from
    it (bench/data/decontaminate.evaluation_sets; a hub corpus is not filtered)."""
    local = not params.corpus.startswith(HUB_PREFIX)
    budget = asdict(pretrain_budget(params))
    for no_effect in ("checkpoint_every", "grad_checkpointing"):
        budget.pop(no_effect)
    return {"stage": "smae", "backbone": spec.backbone, "targets": [[t.layer, t.dim] for t in targets],
            "mlm_rate": params.mlm_rate, "mae_rate": params.mae_rate, "mae": params.mae, "corpus": params.corpus,
            "budget": budget, "seed": spec.seed,
            "code": method_code(Starbucks, trains=True, backbone=spec.backbone),
            **({"decontaminated": list(eval_sets)} if local else {}),
            **({} if spec.dtype == "fp32" else {"dtype": spec.dtype})}  # fp32: the folders of before the field


@dataclass(frozen=True)
class PretrainStage:
    encoder_dir: Path
    rows: tuple[dict, ...]
    seconds: float


def pretrain(spec: RunSpec, ctx: RunContext, params: Starbucks.Params, targets: tuple[SubModel, ...]) -> PretrainStage:
    """Run (or resume, or reuse) the SMAE stage; its encoder folder, loss rows and training seconds."""
    fields = pretrain_spec(spec, params, targets, evaluation_sets(ctx.data_dir))
    out_dir = (Path(ctx.cache_dir) / "checkpoints" / f"smae-{stable_hash(fields)}").resolve()
    if not is_trained(out_dir):
        _train_smae(spec, ctx, params, targets, fields, out_dir)
    result = read_result(out_dir)
    meta = json.loads((out_dir / META_FILE).read_text())
    with safe_open(result.model_dir / "model.safetensors", "pt") as fh:
        pair_log = fh.get_tensor(LOG_KEY)
    rows = loss_rows(result.log, pair_log, targets, params.pretrain_grad_accum, params.mae)
    rows += [{"step": -1, "metric": "smae_mlm_head_pretrained", "score": float(meta["mlm_head_pretrained"])},
             {"step": -1, "metric": "smae_sentences_removed", "score": float(meta["sentences_removed"])},
             {"step": -1, "metric": "smae_train_seconds", "score": result.seconds}]
    return PretrainStage(result.model_dir / ENCODER_DIR, tuple(rows), result.seconds)


def _train_smae(spec: RunSpec, ctx: RunContext, params: Starbucks.Params, targets: tuple[SubModel, ...],
                fields: dict, out_dir: Path) -> None:
    budget = pretrain_budget(params, spec.budget)
    backbone = ctx.backbone(spec.backbone)
    encoder, tokenizer = load_model(backbone)
    torch.manual_seed(spec.seed)  # the head's initialisation, when the backbone ships none
    head, shipped = mlm_head_for(backbone, encoder)
    if not shipped:
        log.warning("backbone %s ships no MLM head: SMAE starts from a freshly initialised one", spec.backbone)
    n_texts = budget.steps * budget.batch_size * budget.grad_accum * world()[1]
    texts, removed = corpus_texts(params.corpus, ctx.data_dir, tokenizer, n_texts, budget.max_seq_len - 2, spec.seed)
    if world()[0] == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{META_FILE}.tmp{os.getpid()}"
        tmp.write_text(json.dumps({"spec": fields, "mlm_head_pretrained": shipped, "sentences_removed": removed},
                                  indent=1))
        os.replace(tmp, out_dir / META_FILE)
    model = SMAETrainee(encoder, head, tokenizer, targets, params.mae)
    objective = smae_objective(targets, params, tokenizer.mask_token_id, len(tokenizer), spec.seed)
    train(model, tokenizer, texts, partial(tokenize, tokenizer, max_length=budget.max_seq_len), objective, budget,
          spec.seed, out_dir, ctx.device, desc=f"pretrain {spec.method} (SMAE)", dtype=spec.dtype)


def smae_objective(targets: tuple[SubModel, ...], params: Starbucks.Params, mask_token_id: int, vocab_size: int,
                   seed: int):
    """The SMAE loss of a tokenized batch; its per-pair values are recorded on the model. Masks come from a
    generator of their own per micro-batch, seeded by (seed, step, place of the micro-batch in the step's global
    batch), the step counted by the model's own (checkpointed) log: a resumed run draws the same masks, and 2
    processes x 1 micro-batch draw what 1 process x 2 accumulated micro-batches do (the loop's shared generator
    would give every process the same draws)."""
    def objective(model, tokens: dict, generator: torch.Generator) -> torch.Tensor:
        trainee = inner_model(model)
        rank, size = world()
        step, micro = divmod(len(trainee.loss_log), params.pretrain_grad_accum)
        masks = torch.Generator().manual_seed(int(stable_hash([seed, step, micro * size + rank]), 16))
        batch = mask_batch(tokens, params.mlm_rate, params.mae_rate, mask_token_id, vocab_size, masks)
        losses = model(batch.to(tokens["input_ids"].device), targets, params.mae)
        trainee.record(losses)
        return losses.total

    return objective


class SMAETrainee(SMAEModel):
    """SMAEModel as the training loop drives a model: `save_pretrained` writes everything a resume needs
    (encoder, head, decoder, the per-pair loss log) to model.safetensors, plus the encoder alone with its
    tokenizer to encoder/, the folder fine-tuning starts from; `load_state_dict` reads it all back."""

    def __init__(self, encoder, head, tokenizer, targets: tuple[SubModel, ...], with_mae: bool):
        super().__init__(encoder, head)
        self.tokenizer = tokenizer
        self.width = len(targets) * (2 if with_mae else 1)
        self.loss_log: list[list[float]] = []  # one row per micro-batch: MLM per target, then MAE per target

    def record(self, losses: SMAELosses) -> None:
        parts = torch.stack([*losses.mlm.values(), *losses.mae.values()]).detach().float()
        if world()[1] > 1:
            torch.distributed.all_reduce(parts)
            parts /= world()[1]
        self.loss_log.append(parts.tolist())

    def save_pretrained(self, folder: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        state[LOG_KEY] = torch.tensor(self.loss_log, dtype=torch.float64).reshape(len(self.loss_log), self.width)
        save_file(state, str(Path(folder) / "model.safetensors"))
        self.encoder.save_pretrained(Path(folder) / ENCODER_DIR)
        self.tokenizer.save_pretrained(Path(folder) / ENCODER_DIR)

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        state = dict(state)
        self.loss_log = state.pop(LOG_KEY).tolist()
        return super().load_state_dict(state, strict=strict, assign=assign)

    def activation_checkpointing_enable(self) -> None:
        self.encoder.activation_checkpointing_enable()


def loss_rows(loop_log: tuple[dict, ...], pair_log: torch.Tensor, targets: tuple[SubModel, ...], grad_accum: int,
              with_mae: bool) -> list[dict]:
    """The loop's rows prefixed (`smae_loss` the total, `smae_lr`, `smae_grad_norm`); the per-micro-batch pair
    values averaged per optimizer step."""
    rows = [{**row, "metric": f"smae_{row['metric']}"} for row in loop_log]
    names = [("smae_mlm_loss", t) for t in targets] + ([("smae_mae_loss", t) for t in targets] if with_mae else [])
    per_step = pair_log.view(-1, grad_accum, len(names)).mean(dim=1)
    for step, values in enumerate(per_step.tolist(), 1):
        rows += [{"step": step, "metric": metric, "score": v, "layer": t.layer, "dim": t.dim}
                 for (metric, t), v in zip(names, values)]
    return rows
