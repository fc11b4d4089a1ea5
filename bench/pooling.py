"""From a transformer's hidden states to one vector per text and layer, as training and the encoder both do it.

The final-norm rule lives here once (`normed_layers`): a model whose last layer passes through a final norm (pre-LN
encoders, decoders) gets that norm applied to every intermediate layer too, as a model cut to l blocks applies it;
BERT-style (post-LN) models have none. `pool` and `pooled_all_layers` are differentiable (training pools with them);
the encoder (bench/encoder.py) pools through a sentence-transformers Pooling module (`pooling_module`).
"""

from __future__ import annotations

import torch

from bench import BenchError
from bench.spec import check_pooling


def is_norm(module: torch.nn.Module) -> bool:
    """A layer norm or RMS norm: torch's, or an architecture's own class (Qwen3RMSNorm, T5LayerNorm, ...)."""
    return isinstance(module, torch.nn.LayerNorm | torch.nn.RMSNorm) or \
        type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def final_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    """The norm a pre-LN encoder or decoder applies after its last block (Qwen3's `norm`, GPT-2's `ln_f`,
    ModernBERT's `final_norm`, T5's `final_layer_norm`), found by what it is and where it sits, whatever its name:
    a norm registered beside the blocks' list, after it (a norm registered before it normalizes the embeddings,
    as Bloom's `word_embeddings_layernorm`). None for BERT-style post-LN models (nothing after the blocks)."""
    blocks = transformer_blocks(model)
    if blocks is None:
        return None
    for parent in model.modules():
        siblings = list(parent.children())
        position = next((i for i, child in enumerate(siblings) if child is blocks), None)
        if position is not None:
            return next((child for child in siblings[position + 1:] if is_norm(child)), None)
    return None


def normed_layers(states: list[torch.Tensor], norm: torch.nn.Module | None) -> list[torch.Tensor]:
    """Hidden states of layers 1..L as a model cut to each layer serves them: the final norm (if any) on every
    layer but the last, which already went through it. The one place this rule is written."""
    if norm is None:
        return states
    return [norm(s) for s in states[:-1]] + states[-1:]


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's list of transformer blocks (BERT's encoder.layer, decoders' layers, GPT-2's h), or None."""
    for path in ("encoder.layer", "layers", "h", "encoder.layers", "encoder.block", "transformer.h", "model.layers"):
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, torch.nn.ModuleList) and len(module) == model.config.num_hidden_layers:
            return module
    return None


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, tokens, H) -> (batch, H): mean over real tokens, the first (CLS) token, or any other
    sentence-transformers mode through its Pooling. Differentiable (training uses it)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return pooling_module(hidden.shape[-1], pooling)({"token_embeddings": hidden,
                                                       "attention_mask": mask})["sentence_embedding"]


def pooling_module(dim: int, pooling: str, include_prompt: bool = True) -> torch.nn.Module:
    """A sentence-transformers Pooling of `pooling` ("mean", or "cls+mean" for a concatenation)."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    check_pooling(pooling)
    if pooling == "auto":
        raise BenchError("pooling 'auto' reached the encoder unresolved; resolve it with bench.serving.resolve_eval")
    modes = tuple(pooling.split("+"))
    return Pooling(dim, pooling_mode=modes[0] if len(modes) == 1 else modes, include_prompt=include_prompt)


def pooling_mode(config: dict) -> str:
    """A Pooling config's mode as one string ("mean", or "cls+mean" for a concatenation)."""
    from sentence_transformers.sentence_transformer.modules.pooling import _convert_legacy_pooling_kwargs

    config = dict(config)
    _convert_legacy_pooling_kwargs(config)  # sentence-transformers' own reading of the older boolean keys
    mode = config.get("pooling_mode", "mean")
    return mode if isinstance(mode, str) else "+".join(mode)


def pooled_all_layers(model, batch: dict, pooling: str, norm: torch.nn.Module | None = None) -> torch.Tensor:
    """One forward pass -> (L, batch, H) pooled vectors of layers 1..L. Differentiable (training uses it)."""
    out = model(**batch, output_hidden_states=True)
    states = normed_layers(list(out.hidden_states[1:]), norm)
    # pooling in float32 whatever the compute dtype (.float() is the tensor itself in float32)
    return torch.stack([pool(s.float(), batch["attention_mask"], pooling) for s in states])
