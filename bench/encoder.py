"""The Encoder: a frozen model that encodes texts once into the served vector of EVERY layer.

It requires a `Serving` record (bench/serving.py), resolved once: nothing here looks prompts or pooling up again.
Two small backends sit behind `tokenize` and `hidden_states`:
- `SentenceTransformersBackend`: the model's own modules. Its Transformer tokenizes (prompt, max sequence length,
  padding side) and runs once with every hidden state; then for each layer l its Pooling and the modules after it
  ("the head": Dense, LayerNorm, Normalize) are applied to hidden_states[l]. Layer L is exactly what
  `SentenceTransformer.encode` returns, layer l what the model cut to l blocks returns. `head_layers="last"` keeps
  the head off the layers below the last (pooled hidden states there).
- `HuggingFaceBackend`: a plain Hugging Face model, with a sentence-transformers Pooling of the requested mode on
  every layer; last-token pooling pads on the left and appends EOS when the tokenizer does not end texts with it.
The final norm of pre-LN models reaches every layer (bench.pooling.normed_layers). `encode` returns the vectors and
the measured time of encoding them up to each layer.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm

from bench import BenchError
from bench.devices import autocast, pick_device
from bench.hub import Backbone, cannot_load, load_model
from bench.pooling import final_norm, normed_layers, pooling_module, pooling_mode, transformer_blocks
from bench.serving import Serving, resolve_eval
from bench.spec import EvalSpec, check_dtype


@dataclass(frozen=True)
class Texts:
    """Texts to encode together: `items` in their order, their role (query, document, or None: the model's default
    prompt) and the token budget `max_length` (capped by the model's own max sequence length)."""

    items: list[str]
    max_length: int
    role: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, start: int, stop: int) -> "Texts":
        return replace(self, items=self.items[start:stop])


class Encoded(NamedTuple):
    """(layers, N, width) vectors, and layer_seconds[l - 1] the time of encoding them up to layer l (None when
    the model's blocks cannot be found)."""

    vectors: np.ndarray
    layer_seconds: list[float] | None


def _layer_norm(vectors: torch.Tensor) -> torch.Tensor:
    """nomic-embed-text-v1.5's step before slicing: a layer norm without parameters over the whole vector."""
    return torch.nn.functional.layer_norm(vectors, (vectors.shape[-1],))


EXTRA_STEPS = {"layer_norm": _layer_norm}


class SentenceTransformersBackend:
    """A SentenceTransformer's Transformer module: its own preprocessing and its forward pass."""

    def __init__(self, st):
        self.st, self.model, self.tokenizer = st, st[0].auto_model, st.tokenizer

    def tokenize(self, texts: list[str], prompt: str, max_length: int) -> dict:
        # the model's own preprocessing: prompt, prompt_length, truncation, padding side
        return self.st.preprocess(texts, prompt=prompt or None, max_length=max_length)

    def hidden_states(self, features: dict) -> list[torch.Tensor]:
        out = self.st[0](dict(features))
        return list(out["all_layer_embeddings"][1:-1]) + [out["token_embeddings"]]


class HuggingFaceBackend:
    """A plain Hugging Face model and its tokenizer; `append_eos` ends every text with EOS (last-token pooling)."""

    def __init__(self, model: torch.nn.Module, tokenizer, append_eos: bool = False):
        self.model, self.tokenizer, self.append_eos = model, tokenizer, append_eos

    def tokenize(self, texts: list[str], prompt: str, max_length: int) -> dict:
        if self.append_eos:
            ids = self.tokenizer([prompt + t for t in texts], truncation=True, max_length=max_length - 1)["input_ids"]
            ids = [row + [self.tokenizer.eos_token_id] for row in ids]
            return dict(self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt"))
        return dict(self.tokenizer([prompt + t for t in texts], padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt"))

    def hidden_states(self, features: dict) -> list[torch.Tensor]:
        inputs = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
        return list(self.model(**inputs, output_hidden_states=True).hidden_states[1:])


def _sentence_transformer(backbone: Backbone, serving: Serving, dev: torch.device, num_layers: int | None):
    """The backend and (pooler, head) of a sentence-transformers model; `serving.pooling` other than the model's own
    replaces its Pooling (keeping its include_prompt)."""
    from sentence_transformers import SentenceTransformer

    kwargs = {"config_kwargs": {"num_hidden_layers": num_layers}} if num_layers else {}
    if num_layers:  # the weights of the dropped blocks are expected to go unused: no load report for them
        transformers.logging.set_verbosity_error()
    try:
        st = SentenceTransformer(backbone.path, device=str(dev), revision=backbone.revision,
                                 trust_remote_code=backbone.trust_remote_code, **kwargs).eval()
    except (OSError, ValueError) as exc:
        raise cannot_load(backbone.name, exc) from None
    modules = list(st)
    kinds = [type(m).__name__ for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"]:
        raise BenchError(f"backbone {backbone.name!r} is served by {' -> '.join(kinds)}; elastic-bench cuts a "
                         "Transformer followed by a Pooling (then any head)")
    pooler, head = modules[1], modules[2:]
    if serving.pooling != pooling_mode({"pooling_mode": pooler.pooling_mode}):
        pooler = pooling_module(pooler.embedding_dimension, serving.pooling, pooler.include_prompt).to(dev)
    modules[0].auto_model.config.output_hidden_states = True  # its forward then returns every layer
    return SentenceTransformersBackend(st), pooler, head, replace(serving, max_seq_length=st.max_seq_length)


def _plain(backbone: Backbone, serving: Serving, dev: torch.device, num_layers: int | None):
    """The backend and pooler of a plain Hugging Face model."""
    model, tokenizer = load_model(backbone, num_layers)
    append_eos = False
    if serving.pooling == "lasttoken":  # the decoder-embedder recipe: left padding, every text ends with EOS
        tokenizer.padding_side = "left"
        eos = tokenizer.eos_token_id
        append_eos = eos is not None and tokenizer("a")["input_ids"][-1] != eos
    pooler = pooling_module(model.config.hidden_size, serving.pooling).to(dev)
    backend = HuggingFaceBackend(model.to(dev).eval(), tokenizer, append_eos)
    return backend, pooler, [], replace(serving, append_eos=append_eos)


class LayerClock:
    """Wall time from the start of each batch (tokenization included) to the end of each block, summed over
    batches: entry l-1 is what encoding up to layer l costs, measured inside the one all-layer pass. Forward hooks
    read the clock; on CUDA they synchronize first, or they would time the kernel launches only."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.blocks = transformer_blocks(model)
        self.cuda = device.type == "cuda"
        self.seconds = np.zeros(model.config.num_hidden_layers)
        self._start = 0.0
        self._handles = [] if self.blocks is None else [
            block.register_forward_hook(self._hook(i)) for i, block in enumerate(self.blocks)]

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _hook(self, index: int):
        def hook(module, args, output):
            self.seconds[index] += self._now() - self._start
        return hook

    def start_batch(self) -> None:
        self._start = self._now()

    def close(self) -> list[float] | None:
        """Stop timing; the per-layer seconds (None when the model's blocks cannot be found)."""
        for handle in self._handles:
            handle.remove()
        return None if self.blocks is None else self.seconds.tolist()


@dataclass
class Encoder:
    """A frozen model for evaluation, served as `serving` says: `backend` tokenizes and runs the transformer,
    `pooler` (a sentence-transformers Pooling) and `head` (the modules after it) make each layer's vector."""

    backend: SentenceTransformersBackend | HuggingFaceBackend
    pooler: torch.nn.Module
    serving: Serving
    head: list = field(default_factory=list)
    device: torch.device = torch.device("cpu")
    dtype: str = "fp32"  # the transformer's compute dtype (bench.spec.DTYPES); pooling and head stay float32

    @classmethod
    def load(cls, backbone: Backbone, serving: Serving, device: str | None = None, num_layers: int | None = None,
             dtype: str = "fp32") -> "Encoder":
        """`backbone` served as `serving` says (bench.serving.Serving.of); `num_layers` keeps only the first blocks
        (a truly truncated model); `dtype`: the forward pass's compute dtype."""
        check_dtype(dtype)
        dev = pick_device(device)
        make = _sentence_transformer if serving.sentence_transformers else _plain
        backend, pooler, head, loaded = make(backbone, serving, dev, num_layers)
        encoder = cls(backend, pooler, loaded, head, dev, dtype)
        encoder._check_head_width()
        return encoder

    @classmethod
    def named(cls, name: str, pooling: str = "auto", device: str | None = None, num_layers: int | None = None,
              trust_remote_code: bool = False, prompts: dict | tuple | None = None, head_layers: str = "every",
              dtype: str = "fp32") -> "Encoder":
        """For scripts and tests: `name` served with the model's own pooling and prompts, or these overrides
        (`prompts`: role -> text, "@name" for one of the model's), resolved once as a run resolves its spec."""
        backbone = Backbone(name, trust_remote_code)
        request = EvalSpec(pooling=pooling, prompts=tuple(dict(prompts or {}).items()) or None,
                           head_layers=head_layers)
        return cls.load(backbone, Serving.of(backbone, resolve_eval(request, backbone)), device, num_layers, dtype)

    @property
    def model(self) -> torch.nn.Module:
        """The transformer (a Hugging Face model)."""
        return self.backend.model

    @property
    def tokenizer(self):
        return self.backend.tokenizer

    @property
    def pooling(self) -> str:
        return self.serving.pooling

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.serving.prompts)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        """The transformer's hidden size (the width of its hidden states)."""
        return self.model.config.hidden_size

    @property
    def width(self) -> int:
        """The dims the model serves: the output of its last module that sets one (a 64 -> 48 Dense serves 48)."""
        sized = [m for m in (self.pooler, *self.head) if hasattr(m, "get_embedding_dimension")]
        return sized[-1].get_embedding_dimension()

    def _check_head_width(self) -> None:
        if self.serving.head_layers == "last" and self.head and self.pooler.get_embedding_dimension() != self.width:
            raise BenchError(f"the head of this model changes the width ({self.pooler.get_embedding_dimension()} -> "
                             f"{self.width}), so it must apply to every layer; use head_layers 'every'")

    def prompt_for(self, role: str | None) -> str:
        """The prompt prepended to texts of `role` ("query", "document", or None / "default" for the rest)."""
        return self.serving.prompt_for(role)

    def serving_tag(self, role: str | None = None) -> str:
        """Everything besides the weights and texts that moves this encoder's vectors of `role`: for cache keys."""
        s = self.serving
        include_prompt = getattr(self.pooler, "include_prompt", True)
        head = ",".join(type(m).__name__ for m in self.head)
        tag = [s.pooling, include_prompt, self.prompt_for(role), head, s.head_layers, s.extra, s.max_seq_length,
               s.append_eos, s.revision]
        return json.dumps(tag if self.dtype == "fp32" else [*tag, self.dtype])  # fp32: every earlier cache key

    def tokenize(self, texts: list[str], prompt: str, max_length: int) -> dict:
        """The backend's features of `prompt` + each text, on the encoder's device."""
        features = self.backend.tokenize(texts, prompt, max_length)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def hidden_states(self, features: dict) -> list[torch.Tensor]:
        """Token embeddings of layers 1..L from one forward pass in the encoder's dtype, the final norm on every
        layer, in float32 (what pooling and the head read)."""
        with autocast(self.device, self.dtype):
            states = self.backend.hidden_states(features)
        states = [s.float() for s in states]  # the tensor itself when it is float32 already
        return normed_layers(states, final_norm(self.model))

    def all_layers(self, features: dict) -> torch.Tensor:
        """(L, batch, width): the model's pooling, then its head and extra steps, on every layer's states."""
        shared = {k: v for k, v in features.items() if k not in ("token_embeddings", "all_layer_embeddings")}
        states, vectors = self.hidden_states(features), []
        for layer, tokens in enumerate(states, 1):
            out = self.pooler({**shared, "token_embeddings": tokens})
            if self.serving.head_layers == "every" or layer == len(states):
                for module in self.head:
                    out = module(out)
                embedding = out["sentence_embedding"]
                for step in self.serving.extra:
                    embedding = EXTRA_STEPS[step](embedding)
            else:
                embedding = out["sentence_embedding"]
            vectors.append(embedding)
        return torch.stack(vectors)

    def encode(self, texts: Texts, batch_size: int = 64, *, out_path: Path | None = None, desc: str = "encode",
               layers: tuple[int, ...] | None = None, max_dim: int | None = None,
               out: np.ndarray | None = None) -> Encoded:
        """(L, N, width) float32 served vectors of the texts (their role's prompt prepended), batches sorted by
        length, and the measured time of encoding them up to each layer; streamed into a memmap when out_path is
        given. Storage choices (bench/storage.py) keep only `layers` (1-based) and the first `max_dim` dims, and
        write into `out` (a slice of a shared array, of any float dtype) instead of a new float32 array."""
        keep = [layer - 1 for layer in layers] if layers else list(range(self.num_layers))
        out = _output(out, out_path, (len(keep), len(texts), max_dim or self.width))
        items = texts.items
        prompt = self.prompt_for(texts.role)
        max_length = min(texts.max_length, self.serving.max_seq_length or texts.max_length)
        order = np.argsort([-len(t) for t in items], kind="stable")  # longest first: memory peaks early
        clock = LayerClock(self.model, self.device)
        with torch.inference_mode():  # the forward pass's dtype is set in hidden_states: pooling stays float32
            for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", leave=False,
                              disable=os.environ.get("BENCH_QUIET") == "1"):
                clock.start_batch()
                idx = order[start:start + batch_size]
                batch = self.tokenize([items[i] for i in idx], prompt, max_length)
                out[:, idx] = self.all_layers(batch)[keep, :, :out.shape[2]].float().cpu().numpy()  # out's dtype
        seconds = clock.close()
        if isinstance(out, np.memmap):
            out.flush()
        return Encoded(out, seconds)

    def vectors(self, texts: list[str], max_length: int, batch_size: int = 64, role: str | None = None,
                **options) -> np.ndarray:
        """For scripts and tests: `encode(Texts(texts, max_length, role), batch_size, **options).vectors`."""
        return self.encode(Texts(texts, max_length, role), batch_size, **options).vectors


def _output(out: np.ndarray | None, out_path: Path | None, shape: tuple[int, int, int]) -> np.ndarray:
    """Where `encode` writes: the given array (checked), a new memmap at out_path, or a new float32 array."""
    if out is not None:
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, the encoding {shape}")
        return out
    if out_path is not None:
        return np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=shape)
    return np.empty(shape, dtype=np.float32)
