"""Post-hoc heads (pca, matryoshka-adaptor, bebr): from a method's spec to its checkpoint, which is the frozen
backbone as it is plus a head file fitted on the backbone's own encodings of the fit set.

The checkpoint's model_id is the backbone's (`backbone:<name>`, as `pretrained`'s), so every task's encodings are
those `pretrained` caches, made once; evaluation applies the head to them (bench/evaluate.HeadedLayers).

The fit set: the texts of the suite's training set (`train_data`, what the trained methods train on: each SNLI
triplet's anchor, positive and negative), in file order, each distinct text once, the first `fit_sentences` of them
(a field of each head method's Params, FIT_SENTENCES by default). Never an evaluation task's texts: the training set
comes without the examples that share a text with an evaluation set (bench/data/decontaminate.py; their count is the
row `train_examples_removed`). They are encoded
once per backbone and pooling (every layer, `budget.max_seq_len` tokens, as training reads them) into the same
encoding cache, so the three methods share one encode.

A method here has `fit(params, vectors, budget, seed) -> (head, loss rows)` on the (layers, texts, width) fit
vectors. The heads that train (the adaptor, bebr) go through `train_head`: the one loop of bench/loop.py (steps,
batch size, gradient accumulation, AdamW with the same decay groups, lr, warmup and schedule, clipping, and the same
seeded data order as bench/train.train) with a recipe of its own, `HeadTraining`, over cached vectors. A head trains
in seconds, so it writes no step checkpoints: `checkpoint_every` (no resume) and `grad_checkpointing` do not apply,
and `max_seq_len` acts on the fit encodings. Heads train on the CPU, in float32, and log one loss row per step.

Head folder: cache/checkpoints/<training key>/<pooling>/head/{head.safetensors, fit_log.json}, keyed like a trained
method's (methods/_jobs.training_key): the spec's model fields, the evaluation sets kept out of the fit set and the
fingerprint of the code that fits the head.
"""

from __future__ import annotations

import json
import os
import time
from abc import abstractmethod
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch

from bench import BenchError
from bench.data.decontaminate import evaluation_sets
from bench.dist import claim, is_main_process
from bench.encoder import Encoder, Texts
from bench.evaluate import encode_cached
from bench.heads import Head, save_head
from bench.hub import Backbone, backbone_shape
from bench.loop import TrainingLoop, check_trainable, clip_only_when_on
from bench.phases import phase
from bench.serving import Serving
from bench.spec import Budget, RunSpec
from bench.storage import Plan
from bench.train import LOCK_FILE
from methods import Checkpoint, Method, RunContext
from methods._jobs import training_key

FIT_SENTENCES = 4096  # the fit set's default size: ample for a 384- or 768-dim PCA, one short encode
FIT_ENCODE_BATCH = 64  # texts per encoding batch of the fit set (a constant: the head's key does not hold it)
LOG_FILE = "fit_log.json"


class HeadMethod(Method):
    """The contract of a method that fits a post-hoc head (bench/heads.py) on the frozen backbone's vectors of the
    fit set: it declares `fit`; its checkpoint is the backbone plus the head file (`head_checkpoints`). Its Params
    have `fit_sentences`."""

    trains = True  # fitted on the training set, so it depends on the training data, the budget and the seed
    needs_steps: ClassVar[bool] = True  # False: fitted in closed form (pca), so a budget without steps is fine

    @abstractmethod
    def fit(self, params, vectors: np.ndarray, budget: Budget, seed: int) -> tuple[Head, list[dict]]:
        """The head fitted on (layers, texts, width) vectors, and its loss rows."""

    def loss_dims(self, params) -> tuple[int, ...] | None:
        """The prefix dims its loss uses, checked inside the backbone before anything is encoded; None: none given
        (the method's default) or no loss over dims."""
        return None

    def checkpoints(self, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
        return head_checkpoints(self, spec, ctx)

    def check_config(self, spec: RunSpec, backbone: Backbone) -> None:
        check_head_config(self, spec, backbone)


# ---- checks ------------------------------------------------------------------------------------------------------

def check_count(method: str, name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BenchError(f"{method} {name} must be a positive integer; got {value!r}")


def check_optional_count(method: str, name: str, value) -> None:
    if value is not None:
        check_count(method, name, value)


def check_dims(method: str, dims) -> None:
    # mrl's check, written again: imported from methods/mrl.py, every head's fingerprint would include
    # starbucks_srl.py (mrl reads its target rule), and an edit there would refit the heads
    if dims is not None and (not dims or any(not isinstance(d, int) or d <= 0 for d in dims)
                             or len(set(dims)) != len(dims)):
        raise BenchError(f"{method} dims must be distinct positive integers, e.g. (64, 128, 384); got {dims!r}")


def resolve_dims(method: str, dims, width: int, default: tuple[int, ...]) -> tuple[int, ...]:
    """The prefix dims a loss uses, each inside the backbone's width."""
    dims = default if dims is None else tuple(sorted(dims))
    outside = [d for d in dims if d > width]
    if outside:
        raise BenchError(f"{method} dim {outside[0]} is outside the backbone (1..{width}); pick dims up to {width}")
    return dims


def check_head_config(method: HeadMethod, spec: RunSpec, backbone: Backbone):
    """Every bad config of a head method fails here with one line, before anything is encoded: the training data
    name (the fit set), steps for a head that trains, the hyperparameters, and loss dims outside the backbone.
    `backbone`: the spec's, with the run's remote-code permission. Returns the Params."""
    from bench.data.pairs import training_kind

    training_kind(spec.train_data)
    if method.needs_steps and spec.budget.steps <= 0:
        raise BenchError(f"method {spec.method} trains, so the budget needs steps > 0; got {spec.budget.steps}")
    params = method.Params(**dict(spec.params))
    if method.loss_dims(params) is not None:
        resolve_dims(spec.method, method.loss_dims(params), backbone_shape(backbone)[1], ())
    return params


# ---- the fit set ---------------------------------------------------------------------------------------------------

def fit_texts(examples: list[tuple[str, ...]], limit: int) -> list[str]:
    """Every text of the training examples in order, each distinct one once, the first `limit`."""
    seen: dict[str, None] = {}
    for texts in examples:
        for text in texts:
            seen.setdefault(text, None)
            if len(seen) == limit:
                return list(seen)
    return list(seen)


def fit_vectors(spec: RunSpec, ctx: RunContext, limit: int) -> tuple[np.ndarray, int]:
    """(layers, texts, width) pooled vectors of the fit set from the frozen backbone, through the encoding cache, and
    how many training examples were dropped before the fit set was taken (they share a text with an evaluation set:
    bench/data/decontaminate.py)."""
    from bench.data.pairs import load_training_set

    data = load_training_set(ctx.data_dir, spec.train_data)
    texts = fit_texts(data.texts, limit)
    backbone = ctx.backbone(spec.backbone)
    encoder = Encoder.load(backbone, Serving.of(backbone, spec.eval), ctx.device, dtype=spec.dtype)  # as evaluated
    vectors, _ = encode_cached(encoder, backbone_id(spec), f"fit/{spec.train_data}",
                               Texts(texts, spec.budget.max_seq_len), Plan(FIT_ENCODE_BATCH),
                               Path(ctx.cache_dir) / "encodings")
    return vectors, data.removed


def backbone_id(spec: RunSpec) -> str:
    """The frozen backbone's model_id: the same as `pretrained`'s, so encodings are shared."""
    return f"backbone:{spec.backbone}"


# ---- checkpoints -------------------------------------------------------------------------------------------------

def head_dir(method: HeadMethod, spec: RunSpec, ctx: RunContext) -> Path:
    key = training_key(method, spec, evaluation_sets(ctx.data_dir))
    return Path(ctx.cache_dir) / "checkpoints" / key / spec.eval.pooling / "head"


def head_checkpoints(method: HeadMethod, spec: RunSpec, ctx: RunContext) -> list[Checkpoint]:
    """The backbone with the method's head: fitted once per key, then reused (its loss rows and seconds too). One
    process fits it under a file lock (another job or terminal waits, then reuses it); under torchrun rank 0 fits
    and every rank gets the checkpoint, since evaluation encodes with all of them."""
    params = check_head_config(method, spec, ctx.backbone(spec.backbone))
    folder = head_dir(method, spec, ctx)
    path, log_path = folder / "head.safetensors", folder / LOG_FILE
    with claim(folder / LOCK_FILE):
        if is_main_process() and not log_path.exists():
            _fit_and_save(method, params, spec, ctx, path, log_path)
    with claim(folder / LOCK_FILE):  # its barrier holds the other ranks until rank 0 has written the head
        meta = json.loads(log_path.read_text())
    return [Checkpoint(model=spec.backbone, model_id=backbone_id(spec), head=str(path), train_log=tuple(meta["log"]),
                       train_seconds=meta["seconds"])]


def _fit_and_save(method: HeadMethod, params, spec: RunSpec, ctx: RunContext, path: Path, log_path: Path) -> None:
    vectors, removed = fit_vectors(spec, ctx, params.fit_sentences)  # encodes through encode_cached (phase "encode")
    t0 = time.perf_counter()
    with phase("train"):
        head, log = method.fit(params, vectors, spec.budget, spec.seed)
    log = [*log, {"step": -1, "metric": "train_examples_removed", "score": float(removed)}]
    seconds = time.perf_counter() - t0
    save_head(path, head)
    tmp = log_path.with_name(f".{LOG_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"log": log, "seconds": seconds}))
    os.replace(tmp, log_path)  # written last: a folder with a log holds a whole head




# ---- training a head -------------------------------------------------------------------------------------------------

def train_head(module: torch.nn.Module, batch_loss: Callable[[torch.Tensor], torch.Tensor], n_examples: int,
               budget: Budget, seed: int, tag: dict | None = None) -> list[dict]:
    """Train `module` for budget.steps steps; `batch_loss(indices)` is the loss of fit vectors [indices]. Returns
    one loss row per step (tagged, e.g. with the layer)."""
    check_trainable(budget, n_examples, 1)
    return HeadTraining(module, batch_loss, n_examples, budget, seed, tag).run()


class HeadTraining(TrainingLoop):
    """The loop's recipe for a head: one process, float32 on the CPU, no checkpoints, one loss row per step; the
    module leaves in eval mode.

    Why its own clipping rule (`clip_only_when_on`, not the encoder's `clip_and_measure`): the encoder measures the
    gradient norm at every step because it logs grad_norm rows; a head logs none, so it keeps the rule both loops had
    before those rows. For any max_grad_norm >= 0 the two leave the same gradients (clipping at inf scales them by
    exactly 1) except when one is not finite, where the encoder's rule turns them all NaN; the heads' fits stay as
    they were."""

    loss_name, data_name = "the head's training loss", "the fit set"

    def __init__(self, module: torch.nn.Module, batch_loss: Callable[[torch.Tensor], torch.Tensor],
                 n_examples: int, budget: Budget, seed: int, tag: dict | None):
        super().__init__(module, budget, seed, n_examples, clip_only_when_on)
        self.batch_loss, self.tag = batch_loss, tag or {}

    def set_up(self) -> None:
        self.module.train()
        super().set_up()

    def batch(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor(indices)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.batch_loss(batch)

    def record(self, step: int, loss: float, lr: float, grad_norm: float | None) -> None:
        self.log.append({"step": step, "metric": "loss", "score": loss, **self.tag})

    def finish(self) -> None:
        self.module.eval()


class ResidualMLP(torch.nn.Module):
    """x + relu(x W1 + b1) W2 + b2, the torch twin of bench.heads.residual_mlp. W2 and b2 start at zero, so an
    untrained block is the identity: a head starts from the backbone's own vectors."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.up = torch.nn.Linear(width, hidden)
        self.down = torch.nn.Linear(hidden, width)
        torch.nn.init.zeros_(self.down.weight)
        torch.nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))

    def block(self) -> dict[str, np.ndarray]:
        """The numpy tensors bench.heads.residual_mlp reads (w1 (in, hidden), w2 (hidden, in))."""
        with torch.no_grad():
            return {"w1": self.up.weight.T.numpy().copy(), "b1": self.up.bias.numpy().copy(),
                    "w2": self.down.weight.T.numpy().copy(), "b2": self.down.bias.numpy().copy()}


def unit_rows(vectors: np.ndarray) -> torch.Tensor:
    """One layer's fit vectors at unit length, as float32 torch rows."""
    x = torch.from_numpy(np.array(vectors, dtype=np.float32))
    return torch.nn.functional.normalize(x, dim=-1)
