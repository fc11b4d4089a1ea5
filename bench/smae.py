"""SMAE, the pre-training stage of Starbucks, as plain torch: masking, a sliced MLM head, a one-layer MAE decoder.

At every target (layer, dim) pair of the method, from ONE encoder forward pass with all hidden states:
- masked LM: the MLM head reads only the first `dim` coordinates of layer `layer`'s token states (its input
  projection sliced to weight[:, :dim]; the decoder is tied to the word embeddings) on a whole-word-masked input;
- masked autoencoder: a one-layer transformer decoder, sharing the encoder's embeddings and the MLM head,
  reconstructs a more heavily masked copy of the input from position 0, which holds the sub-model's CLS vector
  projected to full width by the head's (sliced) transform;
- per pair (MLM + MAE) / 2, averaged over pairs; MLM only when `with_mae` is off.

Written by hand, because no library has it: transformers' MLM head reads the full width, and its whole-word
collator draws one mask per call, while SMAE needs two nested masks (the encoder's inside the decoder's, as in the
reference code ielab/Starbucks smae/data.py). Choices that follow that reference: the decoder block starts as a
copy of the encoder's first block; the CLS vector is projected by the MLM head's transform; masked tokens are
replaced 80% [MASK] / 10% random token / 10% unchanged (BERT).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask

from bench import BenchError
from bench.hub import Backbone
from bench.spec import SubModel

IGNORE = -100  # label of positions without a loss (cross_entropy's ignore_index)


@dataclass
class SMAEBatch:
    input_ids: torch.Tensor  # encoder input: lightly masked
    attention_mask: torch.Tensor
    labels: torch.Tensor  # original ids at the encoder's masked positions, IGNORE elsewhere
    decoder_input_ids: torch.Tensor  # heavily masked copy of the same texts
    decoder_labels: torch.Tensor

    def to(self, device: torch.device) -> "SMAEBatch":
        return SMAEBatch(*(t.to(device) for t in vars(self).values()))


class SMAELosses(NamedTuple):  # a tuple, so DistributedDataParallel finds the tensors in the output
    total: torch.Tensor
    mlm: dict[SubModel, torch.Tensor]
    mae: dict[SubModel, torch.Tensor]  # empty when the MAE objective is off


def word_ids_tensor(encoding, batch_size: int) -> torch.Tensor:
    """(batch, tokens) word index of every token from a fast tokenizer's word_ids(); -1 for special/padding."""
    try:
        rows = [encoding.word_ids(i) for i in range(batch_size)]
    except ValueError:
        raise BenchError("SMAE's whole-word masking needs a fast (Rust) tokenizer for word_ids(); "
                         "use a backbone that ships tokenizer.json") from None
    return torch.tensor([[-1 if w is None else w for w in row] for row in rows], dtype=torch.long)


def whole_word_masks(word_ids: torch.Tensor, rates: tuple[float, ...], generator: torch.Generator
                     ) -> list[torch.Tensor]:
    """One boolean (batch, tokens) mask per rate. Each word draws one uniform number and is masked, all its tokens
    together, wherever that number is below the rate: so a word is never split, and masks at increasing rates are
    nested. Every sequence gets at least its lowest-draw word masked, so no sequence is without a target."""
    batch = word_ids.shape[0]
    n_words = word_ids.max(dim=1).values + 1  # fast tokenizers number words 0..n-1
    draws = torch.rand(batch, max(int(n_words.max()), 1), generator=generator)
    draws = draws.masked_fill(torch.arange(draws.shape[1]) >= n_words[:, None], 2.0)
    draws[torch.arange(batch), draws.argmin(dim=1)] = 0.0
    per_token = draws.gather(1, word_ids.clamp(min=0)).masked_fill(word_ids < 0, 2.0)
    return [per_token < rate for rate in rates]


def corrupt(input_ids: torch.Tensor, mask: torch.Tensor, mask_token_id: int, vocab_size: int,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's replacement at masked positions: 80% [MASK], 10% a random token, 10% unchanged. -> (inputs, labels)."""
    labels = input_ids.masked_fill(~mask, IGNORE)
    draw = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(mask & (draw < 0.8), mask_token_id)
    random_pos = mask & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    return torch.where(random_pos, random_ids, inputs), labels


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and word_ids (for whole-word masking) of a batch of texts."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "word_ids": word_ids_tensor(enc, len(texts))}


def mask_batch(tokens: dict[str, torch.Tensor], encoder_rate: float, decoder_rate: float, mask_token_id: int,
               vocab_size: int, generator: torch.Generator) -> SMAEBatch:
    """Draw the nested whole-word masks and corrupt the encoder's and the decoder's copies independently. The
    draws come from `generator` (a CPU generator: the training loop checkpoints its state, so a resumed run
    draws the same masks); the batch is built on the CPU, wherever `tokens` live, and returned there."""
    cpu = {k: v.cpu() for k, v in tokens.items()}
    enc_mask, dec_mask = whole_word_masks(cpu["word_ids"], (encoder_rate, decoder_rate), generator)
    inputs, labels = corrupt(cpu["input_ids"], enc_mask, mask_token_id, vocab_size, generator)
    dec_inputs, dec_labels = corrupt(cpu["input_ids"], dec_mask, mask_token_id, vocab_size, generator)
    return SMAEBatch(inputs, cpu["attention_mask"], labels, dec_inputs, dec_labels)


def make_batch(tokenizer, texts: list[str], max_length: int, encoder_rate: float, decoder_rate: float,
               generator: torch.Generator) -> SMAEBatch:
    """tokenize + mask_batch: a masked batch of texts, on the CPU."""
    return mask_batch(tokenize(tokenizer, texts, max_length), encoder_rate, decoder_rate, tokenizer.mask_token_id,
                      len(tokenizer), generator)


class SlicedMLMHead(nn.Module):
    """BERT's MLM head (dense -> activation -> LayerNorm -> word embeddings^T + bias) that reads the first d
    coordinates only: the dense layer's input weight is sliced to weight[:, :d], so one head serves every dim."""

    def __init__(self, hidden_size: int, vocab_size: int, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[hidden_act]
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def transform(self, states: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., hidden): the projection to full width (also how the CLS vector enters the decoder)."""
        dim = states.shape[-1]
        return self.norm(self.act(F.linear(states, self.dense.weight[:, :dim], self.dense.bias)))

    def forward(self, states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., vocab) logits; the output matrix is the (tied) input word-embedding matrix."""
        return F.linear(self.transform(states), word_embeddings, self.bias)


class SMAEModel(nn.Module):
    """The encoder being pre-trained plus what only pre-training needs (the MLM head and the MAE decoder block).
    The decoder owns one transformer block; embeddings and head are the encoder's and the MLM's, shared."""

    def __init__(self, encoder: nn.Module, head: SlicedMLMHead):
        super().__init__()
        if not (hasattr(encoder, "embeddings") and hasattr(getattr(encoder, "encoder", None), "layer")):
            raise BenchError(f"SMAE needs a BERT-style encoder (embeddings + encoder.layer blocks); "
                             f"{type(encoder).__name__} is not one: pick a BERT/RoBERTa/MiniLM-style backbone")
        self.encoder = encoder
        self.head = head
        self.decoder = copy.deepcopy(encoder.encoder.layer[0])

    def forward(self, batch: SMAEBatch, pairs: tuple[SubModel, ...], with_mae: bool = True) -> SMAELosses:
        states = self.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              output_hidden_states=True).hidden_states  # [0] embeddings, [l] after block l
        mlm = {p: self.mlm_loss(states[p.layer], batch.labels, p.dim) for p in pairs}
        mae = self.mae_losses(states, batch, pairs) if with_mae else {}
        per_pair = [(mlm[p] + mae[p]) / 2 if with_mae else mlm[p] for p in pairs]
        return SMAELosses(torch.stack(per_pair).mean(), mlm, mae)

    def mlm_loss(self, layer_states: torch.Tensor, labels: torch.Tensor, dim: int) -> torch.Tensor:
        """Cross-entropy at the masked positions only (the vocab projection of every token would be ~5x the work)."""
        picked = labels != IGNORE
        logits = self.head(layer_states[picked][:, :dim], self.word_embeddings)
        return F.cross_entropy(logits.float(), labels[picked])

    def decoder_inputs(self, states: tuple[torch.Tensor, ...], batch: SMAEBatch,
                       pairs: tuple[SubModel, ...]) -> torch.Tensor:
        """(pairs * batch, tokens, hidden): the embedded heavily-masked copy, with position 0 replaced by each
        sub-model's CLS vector (first `dim` coordinates of layer `layer`) projected to full width."""
        embedded = self.encoder.embeddings(input_ids=batch.decoder_input_ids)
        cls = torch.stack([self.head.transform(states[p.layer][:, 0, :p.dim]) for p in pairs])  # (P, B, H)
        rest = embedded[:, 1:].unsqueeze(0).expand(len(pairs), -1, -1, -1)
        return torch.cat([cls.unsqueeze(2).to(rest.dtype), rest], dim=2).flatten(0, 1)

    def mae_losses(self, states: tuple[torch.Tensor, ...], batch: SMAEBatch,
                   pairs: tuple[SubModel, ...]) -> dict[SubModel, torch.Tensor]:
        """All pairs through the decoder block in one call (stacked along the batch)."""
        inputs = self.decoder_inputs(states, batch, pairs)
        mask = batch.attention_mask.repeat(len(pairs), 1)
        attn = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=inputs, attention_mask=mask)
        hidden = self.decoder(inputs, attn).view(len(pairs), *batch.decoder_input_ids.shape, -1)
        picked = batch.decoder_labels != IGNORE
        logits = self.head(hidden[:, picked], self.word_embeddings)  # (P, n_masked, vocab)
        targets = batch.decoder_labels[picked].repeat(len(pairs))
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets, reduction="none").view(len(pairs), -1)
        return dict(zip(pairs, losses.mean(dim=1)))

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.encoder.get_input_embeddings().weight


def mlm_head_for(backbone: Backbone, encoder: nn.Module) -> tuple[SlicedMLMHead, bool]:
    """The backbone's own pre-trained MLM head when it ships one (BERT layout: cls.predictions), else a freshly
    initialised one (BERT's init: normal(0, initializer_range), zero bias). -> (head, was_pretrained)."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    cfg = encoder.config
    head = SlicedMLMHead(cfg.hidden_size, cfg.vocab_size, cfg.hidden_act, cfg.layer_norm_eps)
    nn.init.normal_(head.dense.weight, std=cfg.initializer_range)
    nn.init.zeros_(head.dense.bias)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the head as missing when there is none: expected
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(backbone.path, revision=backbone.revision,
                                                         trust_remote_code=backbone.trust_remote_code,
                                                         output_loading_info=True)
    except (OSError, ValueError):
        return head, False
    finally:
        hf_logging.set_verbosity(verbosity)
    shipped = getattr(getattr(mlm, "cls", None), "predictions", None)
    if shipped is None or any(k.startswith("cls.predictions.") for k in info["missing_keys"]):
        return head, False
    head.dense.load_state_dict(shipped.transform.dense.state_dict())
    head.norm.load_state_dict(shipped.transform.LayerNorm.state_dict())
    head.bias.data.copy_(shipped.bias.data)
    return head, True
