"""How a model is served, read from its files without loading weights, and resolved once into a `Serving` record.

A sentence-transformers model (modules.json) is served through its own modules: its Transformer, its Pooling (every
mode, include_prompt) and the modules after it ("the head": Dense, LayerNorm, Normalize). A plain Hugging Face model
gets a Pooling of the requested mode (mean unless told); last-token pooling pads on the left and ends every text
with EOS (the recipe of decoder embedders such as e5-mistral and gte-Qwen2).

Prompts go by text role (bench.spec.ROLES): the model's default prompt for texts without a role (STS), its `query`
and `document` prompts for retrieval, or overrides; a registered public model (bench/models.py) brings its pinned
revision, prompts and extra steps. `resolve_eval` resolves an EvalSpec against the backbone once (pooling "auto" ->
the model's own, every role's prompt filled in), and the written spec is that resolution: `Serving.of(model, spec)`
then reads the resolved spec as it is, without looking anything up again. A written prompt that itself starts with
"@" is stored as "@@..." (a single "@" names one of the model's prompts in a request): `literal_prompt` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bench import BenchError
from bench.hub import Backbone, check_remote_code, read_json
from bench.models import PublicModel, public_model
from bench.pooling import pooling_mode
from bench.spec import ROLES, EvalSpec, default_dims


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


def served(backbone: Backbone) -> Served:
    """How the backbone is served, read from its modules.json, pooling config and config_sentence_transformers.json.
    A model needing remote code fails here (one line) unless trusted."""
    check_remote_code(backbone)
    name, entry = backbone.name, public_model(backbone.name)
    modules = read_json(name, "modules.json")
    if not modules:
        return Served(name, False, "mean", entry=entry)
    pooling_dirs = [m.get("path", "") for m in modules if m.get("type", "").split(".")[-1] == "Pooling"]
    if not pooling_dirs:
        raise BenchError(f"backbone {name!r} has no Pooling module in modules.json; elastic-bench pools every layer "
                         "with the model's own Pooling")
    pooling = pooling_mode(read_json(name, "config.json", pooling_dirs[0]) or {})
    st_config = read_json(name, "config_sentence_transformers.json") or {}
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
        prompts[role] = literal_prompt(value)
    return prompts


def written_prompt(text: str) -> str:
    """A resolved prompt as a written spec holds it: a text starting with "@" gets one more (see the docstring)."""
    return "@" + text if text.startswith("@") else text


def literal_prompt(written: str) -> str:
    """The prompt text a written "@@..." stands for; any other text as it is."""
    return written[1:] if written.startswith("@@") else written


def resolve_pooling(pooling: str, backbone: Backbone) -> str:
    """"auto" -> the backbone's own pooling mode (training pools with it too); any other mode as it is."""
    return served(backbone).pooling if pooling == "auto" else pooling


def resolve_eval(spec: EvalSpec, backbone: Backbone) -> EvalSpec:
    """The spec as this backbone serves it: pooling "auto" becomes the model's own, the prompts of all three
    roles are filled in (model, registry entry, overrides), and a registered model's default dims also hold the
    dims it was trained for (so its trained cells sit on the grid). Written specs are resolved: the run_id and the
    `eval` column name the pooling and prompts actually used."""
    model = served(backbone)
    pooling = model.pooling if spec.pooling == "auto" else spec.pooling
    prompts = role_prompts(model, dict(spec.prompts or ()))
    dims = spec.dims
    if dims is None and model.entry is not None:
        dims = tuple(sorted(set(default_dims(model.entry.width)) | {d for _, d in model.entry.cells()}))
    return replace(spec, pooling=pooling, dims=dims,
                   prompts=tuple(sorted((role, written_prompt(text)) for role, text in prompts.items())))


@dataclass(frozen=True)
class Serving:
    """Everything besides the weights that decides a model's served vectors, resolved once: the backend (the
    model's own sentence-transformers modules, or a plain Hugging Face model with a Pooling), the pooling mode, the
    prompt of each role, which layers get the head, the registry's extra steps, the pinned revision, and, once the
    model is loaded (`Encoder.load` fills them in), its max sequence length and whether every text ends with EOS."""

    sentence_transformers: bool
    pooling: str
    prompts: tuple[tuple[str, str], ...]  # (role, text) for every role of bench.spec.ROLES
    head_layers: str = "every"
    extra: tuple[str, ...] = ()
    revision: str | None = None
    max_seq_length: int | None = None
    append_eos: bool = False

    @classmethod
    def of(cls, backbone: Backbone, spec: EvalSpec) -> "Serving":
        """How `backbone` (the spec's backbone, or a checkpoint trained from it) serves an evaluation spec that
        `resolve_eval` resolved: its pooling and prompts as written (nothing is looked up again), the model's
        backend, extra steps and revision."""
        if spec.pooling == "auto" or set(dict(spec.prompts or ())) != set(ROLES):
            spec = resolve_eval(spec, backbone)  # a spec made by hand (scripts, tests); a run's is resolved already
        prompts = dict(spec.prompts)
        model = served(backbone)
        if model.sentence_transformers and model.entry is not None and model.entry.pooling != model.pooling:
            entry = model.entry
            raise BenchError(f"registry entry {entry.name!r} says {entry.pooling} pooling but {entry.hub_id} at "
                             f"{entry.revision} serves {model.pooling}; fix bench/models.py")
        return cls(model.sentence_transformers, spec.pooling,
                   tuple((role, literal_prompt(prompts[role])) for role in ROLES), spec.head_layers,
                   model.entry.extra if model.entry else (), backbone.revision)

    def prompt_for(self, role: str | None) -> str:
        """The prompt prepended to texts of `role` ("query", "document", or None / "default" for the rest)."""
        role = role or "default"
        if role not in ROLES:
            raise BenchError(f"unknown text role {role!r}; roles are {', '.join(ROLES)}")
        return dict(self.prompts)[role]
