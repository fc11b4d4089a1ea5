"""`starbucks-srl`: Starbucks' SRL fine-tuning (Zhuang et al. 2024, ielab/Starbucks). A fixed list of (layer, dim)
targets from small to large; every step, from ONE forward pass per column, the base loss at every target plus a
KL term pulling each sub-model towards the full model.

Target rule (`default_targets`), which gives the paper's pairs on its backbone: n = min(6, L) pairs, layers
round(k * L / n) for k = 1..n, dims the full width for the last pair and, below it, halving from the largest power
of two under the width. bert-base (12 x 768): (2,32) (4,64) (6,128) (8,256) (10,512) (12,768), the paper's;
MiniLM (6 x 384): (1,16) (2,32) (3,64) (4,128) (5,256) (6,384); the tiny test BERT (2 x 64): (1,32) (2,64).

KL variants (`kl`): "embedding", the paper's STS script: softmax over the first `dim` coordinates of the
sub-model's pooled vector against the full model's, every row of every column, multiplied by 0.3 (that script's
kl_temperature x kl_div_weight = 1) with no temperature inside the softmax and the teacher kept in the graph;
"scores", the paper's retrieval code: each anchor's softmax over its in-batch candidates' cosine / temperature,
teacher detached (set kl_temperature=0.05, kl_weight=1, detach_teacher=True for that recipe: RETRIEVAL below);
"none". Defaults follow the STS script, the recipe of the suites' NLI training.

Oracle: tests/test_srl_oracle.py transcribes both formulas from ielab/Starbucks (sts/starbucks_loss.py,
retrieval/modeling.py) and matches this objective in value and gradient. One deliberate difference, in "scores":
the retrieval code (on Tevatron's defaults) scores by the raw dot product of the truncated, un-normalized vectors at
temperature 1, in its base loss and its KL alike. Here every method trains with one cosine base loss
(MultipleNegativesRankingLoss, scale 20) and is evaluated by the cosine after truncation, so the KL compares the
logits that base loss uses: cosine after truncation / 0.05. Same formula, our harness's similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench import BenchError
from bench.losses import KL_KINDS, BaseLoss, at, check_choice, check_positive, embed_columns, kl_term
from bench.spec import SubModel
from methods import METHODS
from methods._jobs import Job, TrainedMethod


def default_targets(num_layers: int, hidden_size: int) -> tuple[SubModel, ...]:
    """The documented rule above: the paper's six pairs on bert-base, the same pattern on any backbone."""
    n = min(6, num_layers)
    layers = [round(k * num_layers / n) for k in range(1, n + 1)]
    top = 1 << ((hidden_size - 1).bit_length() - 1)  # the largest power of two below the width
    dims = [max(1, top >> (n - 2 - k)) for k in range(n - 1)] + [hidden_size]
    return tuple(SubModel(layer, dim) for layer, dim in zip(layers, dims))


def target_dims(num_layers: int, hidden_size: int) -> tuple[int, ...]:
    """The dims of the target rule: the default dims list of `mrl` and `2dmse`."""
    return tuple(t.dim for t in default_targets(num_layers, hidden_size))


def check_targets(method: str, targets: tuple | None) -> None:
    """A non-empty list of (layer, dim) pairs of positive integers, from small to large, each once."""
    if targets is None:
        return
    pairs = [tuple(t) for t in targets]
    ok = pairs and all(len(t) == 2 and all(isinstance(x, int) and x > 0 for x in t) for t in pairs)
    if not ok or pairs != sorted(set(pairs)):
        raise BenchError(f"{method} targets must be distinct (layer, dim) pairs of positive integers from small to "
                         f"large, e.g. ((2, 32), (4, 64)); got {targets!r}")


def resolve_targets(targets: tuple | None, num_layers: int, hidden_size: int) -> tuple[SubModel, ...]:
    return default_targets(num_layers, hidden_size) if targets is None else tuple(SubModel(*t) for t in targets)


@METHODS.register("starbucks-srl")
class StarbucksSRL(TrainedMethod):
    @dataclass(frozen=True)
    class Params:
        targets: tuple[tuple[int, int], ...] | None = None  # None: default_targets(L, H)
        weights: tuple[float, ...] | None = None  # base-loss weight per target (None: 1 each)
        kl: str = "embedding"
        kl_weight: float = 0.3
        kl_temperature: float = 1.0
        detach_teacher: bool = False

        def __post_init__(self):
            check_targets("starbucks-srl", self.targets)
            check_choice("starbucks-srl", "kl", self.kl, KL_KINDS)
            check_positive("starbucks-srl", "kl_weight", self.kl_weight)
            check_positive("starbucks-srl", "kl_temperature", self.kl_temperature, allow_zero=False)
            if self.weights is not None and any(w < 0 for w in self.weights):
                raise BenchError(f"starbucks-srl weights must be >= 0; got {self.weights!r}")

    def objective(self, params: Params, targets: tuple[SubModel, ...], num_layers: int, hidden_size: int,
                  loss: BaseLoss, pooling: str):
        weights = params.weights or (1.0,) * len(targets)
        if len(weights) != len(targets):
            raise BenchError(f"starbucks-srl has {len(weights)} weights for {len(targets)} targets; "
                             "give one weight per target")
        full = SubModel(num_layers, hidden_size)

        def objective(model, batch, generator):
            columns = embed_columns(model, batch, pooling)
            teacher = at(columns, full.layer, full.dim)
            total = 0.0
            for target, weight in zip(targets, weights):
                student = at(columns, target.layer, target.dim)
                total = total + weight * loss(student, batch["labels"])
                if target != full and params.kl != "none":
                    # coordinates are compared dim for dim with the full model's first `dim`; score distributions
                    # with the full model's own
                    ref = [t[:, :target.dim] for t in teacher] if params.kl == "embedding" else teacher
                    kl = kl_term(params.kl, student, ref, params.kl_temperature, params.detach_teacher)
                    total = total + params.kl_weight * kl
            return total

        return objective

    def jobs(self, params: Params, num_layers: int, hidden_size: int, loss: BaseLoss, pooling: str) -> list[Job]:
        targets = resolve_targets(params.targets, num_layers, hidden_size)
        for target in targets:
            target.check_inside(num_layers, hidden_size)
        return [Job("", self.objective(params, targets, num_layers, hidden_size, loss, pooling), targets=targets)]


# The paper's retrieval recipe (KL over in-batch score distributions at the contrastive temperature, teacher detached)
RETRIEVAL = replace(StarbucksSRL.Params(), kl="scores", kl_weight=1.0, kl_temperature=0.05, detach_teacher=True)
