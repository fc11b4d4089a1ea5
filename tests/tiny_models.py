"""Tiny random models the tests build (nothing committed, nothing from the hub): plain Hugging Face folders of
BERT and decoder architectures, and sentence-transformers folders laid out like public models (modules.json,
Pooling config, Dense / LayerNorm / Normalize modules, prompts), each with MiniLM's tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from bench.hub import resolve_backbone

VOCAB = 30522
HIDDEN = 64


def tokenizer(padding_side: str = "right", eos_token: str | None = None):
    tok = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    tok.padding_side = padding_side
    if eos_token is not None:
        tok.eos_token = eos_token
    return tok


def save_hf(model: torch.nn.Module, folder: Path, tok=None) -> str:
    """A plain Hugging Face folder: weights, config and a tokenizer."""
    model.save_pretrained(folder)
    (tok or tokenizer()).save_pretrained(folder)
    return str(folder)


def tiny_bert(layers: int = 3, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=4,
                                intermediate_size=128)).eval()


def tiny_decoder(kind: str = "qwen3", layers: int = 3, seed: int = 0) -> torch.nn.Module:
    """A random decoder of a real architecture; qwen3 is the config of NOTES-ecosystem.md."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, pad_token_id=0)
    configs = {"qwen3": (tf.Qwen3Config, tf.Qwen3Model, dict(head_dim=16)),
               "qwen2": (tf.Qwen2Config, tf.Qwen2Model, {}),
               "llama": (tf.LlamaConfig, tf.LlamaModel, {}),
               "mistral": (tf.MistralConfig, tf.MistralModel, {}),
               "gemma": (tf.GemmaConfig, tf.GemmaModel, dict(head_dim=16)),
               "gemma3": (tf.Gemma3TextConfig, tf.Gemma3TextModel, dict(head_dim=16, sliding_window=8,
                                                                          use_bidirectional_attention=True))}
    config_class, model_class, extra = configs[kind]
    return model_class(config_class(**common, **extra)).eval()


def tiny_modernbert(layers: int = 3, seed: int = 0) -> torch.nn.Module:
    """A random ModernBERT (a pre-LN encoder: its last block's output goes through `final_norm`), with MiniLM's
    tokenizer's special token ids."""
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(seed)
    tok = tokenizer()
    return ModernBertModel(ModernBertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=128,
        global_attn_every_n_layers=2, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
        cls_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, sep_token_id=tok.sep_token_id)).eval()


def st_folder(folder: Path, hf_dir: str, pooling: str = "mean", include_prompt: bool = True, head=(),
              prompts: dict | None = None, default_prompt_name: str | None = None, max_seq_length: int = 64,
              seed: int = 1) -> str:
    """A sentence-transformers folder: Transformer(hf_dir), Pooling, then `head` modules given as ("Dense", out,
    activation) / ("LayerNorm",) / ("Normalize",), saved with its prompts and default prompt name."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, LayerNorm, Normalize, Pooling, Transformer

    torch.manual_seed(seed)
    transformer = Transformer(hf_dir, max_seq_length=max_seq_length)
    modules, width = [transformer, Pooling(HIDDEN, pooling, include_prompt=include_prompt)], HIDDEN
    for spec in head:
        if spec[0] == "Dense":
            activation = spec[2] if len(spec) > 2 else torch.nn.Tanh()
            modules.append(Dense(width, spec[1], activation_function=activation))
            width = spec[1]
        elif spec[0] == "LayerNorm":
            layer_norm = LayerNorm(width)
            with torch.no_grad():  # not the identity at initialisation, so the test sees it
                layer_norm.norm.weight.uniform_(0.5, 1.5)
                layer_norm.norm.bias.uniform_(-0.5, 0.5)
            modules.append(layer_norm)
        else:
            modules.append(Normalize())
    model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt_name,
                                device="cpu")
    model.save(str(folder))
    return str(folder)


REMOTE_CONFIG = '''from transformers import BertConfig


class TinyRemoteConfig(BertConfig):
    model_type = "tiny_remote_bert"
'''
REMOTE_MODEL = '''from transformers import BertModel

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteModel(BertModel):
    config_class = TinyRemoteConfig
'''


def needs_remote_code(folder: str) -> str:
    """Turn a BERT folder into one whose config maps AutoConfig / AutoModel to code shipped in the folder (as
    nomic-embed-text's NomicBert does): loading it runs that code, so it needs trust_remote_code."""
    import json

    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config.update(model_type="tiny_remote_bert", architectures=["TinyRemoteModel"],
                  auto_map={"AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
                            "AutoModel": "modeling_tiny_remote.TinyRemoteModel"})
    path.write_text(json.dumps(config))
    (Path(folder) / "configuration_tiny_remote.py").write_text(REMOTE_CONFIG)
    (Path(folder) / "modeling_tiny_remote.py").write_text(REMOTE_MODEL)
    return folder
